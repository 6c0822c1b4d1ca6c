"""Model names -> loaded models (an embedded name, a local directory or a hub id), placed
with the device and dtype rules of :mod:`steerlab.devices`; the embedded models' registry and
GGUF conversion are :mod:`steerlab.embedded`. Everything else receives
a :class:`Model` and speaks to it through its facts (``n_layers``, ``d_model``) and its
``layers`` (the decoder blocks whose outputs are the residual stream).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from steerlab.devices import default_dtype, parse_dtype, resolve_device
from steerlab.embedded import (
    DEFAULT_MODEL,
    EMBEDDED,
    convert_embedded,
    hub_reachable,
    load_converted_tokenizer,
)
from steerlab.errors import DeviceError, OptionError, UnknownModelError
from steerlab.validate import check_prompts

if TYPE_CHECKING:
    from steerlab.backends.base import Backend


def find_layers(hf: Any) -> nn.ModuleList:
    """The decoder blocks of any HF causal LM (Llama/Gemma/Qwen2 ``model.layers``, GPT-2 ``h``,
    RWKV ``blocks``...): the ModuleList whose length is the config's layer count."""
    n = hf.config.num_hidden_layers
    candidates = [(name, m) for name, m in hf.named_modules()
                  if isinstance(m, nn.ModuleList) and len(m) == n]
    if not candidates:
        raise TypeError(f"Could not find the {n} decoder blocks of {type(hf).__name__}.")
    preferred = [c for c in candidates if c[0].split(".")[-1] in ("layers", "h", "blocks")]
    return (preferred or candidates)[0][1]


@dataclass
class Model:
    """A loaded causal LM plus the facts steerlab needs.

    Attributes:
        name: the name it was loaded by (embedded name, hub id or directory).
        hf: the transformers ``PreTrainedModel`` (eval mode, weights frozen by the caller).
        tokenizer: its tokenizer, left-padding, with a pad token.
        is_chat: True when the model is instruction-tuned and has a chat template.
        hf_id: hub id recorded as provenance (equals ``name`` for hub models).
    """

    name: str
    hf: Any
    tokenizer: Any
    is_chat: bool
    hf_id: str
    _backends: dict[str, Backend] = field(default_factory=dict, repr=False)
    #: live edits (steering, captures) per backend name: a call on another backend is refused
    _live_edits: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def layers(self) -> nn.ModuleList:
        return find_layers(self.hf)

    @property
    def n_layers(self) -> int:
        return int(self.hf.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.hf.config.hidden_size)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Where the model's inputs go: the device of its input embeddings (with a
        ``device_map`` spread over several devices, the first of them)."""
        emb = self.hf.get_input_embeddings()
        weight = getattr(emb, "weight", None) if emb is not None else None
        return weight.device if weight is not None else next(self.hf.parameters()).device

    def uses_chat(self, chat: bool | None = None) -> bool:
        """The one chat rule, used by every function that takes ``chat=``: ``None`` (the
        default everywhere) follows the model, so extraction, evaluation, steering and training
        of an instruct model all see its template; ``True``/``False`` force it on or off. A
        model without a chat template never gets one."""
        return self.is_chat if chat is None else bool(chat) and self.is_chat

    def format(self, prompts: Sequence[str], chat: bool | None = False) -> list[str]:
        """Prompts as the model should see them: with the chat template (and generation prompt)
        when :meth:`uses_chat` says so. Like a tokenizer, this primitive (and :meth:`encode`)
        takes the text as it is unless asked (``chat=None`` or ``True``); the library's
        functions default to ``chat=None``, following the model."""
        prompts = check_prompts(prompts)
        if not self.uses_chat(chat):
            return list(prompts)
        return [self.tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                                   tokenize=False, add_generation_prompt=True)
                for p in prompts]

    def encode(self, prompts: Sequence[str], chat: bool | None = False,
               padding_side: str = "left") -> dict[str, torch.Tensor]:
        """Padded ``input_ids`` and ``attention_mask``, both (B, T).

        Left padding (the default) suits generation and next-token scoring; right padding
        suits caching, where pad tokens after the prompt cannot touch its residuals.
        """
        texts = self.format(prompts, chat)
        templated = self.uses_chat(chat)  # the template already holds the special tokens
        enc = self.tokenizer(texts, return_tensors="pt", padding=True,
                             add_special_tokens=not templated, padding_side=padding_side)
        return {"input_ids": enc["input_ids"].to(self.device),
                "attention_mask": enc["attention_mask"].to(self.device)}

    def backend(self, name: str = "hf") -> Backend:
        """The backend object (``hf``, ``tlens`` or ``nnsight``), created once and kept."""
        from steerlab.backends import make_backend

        if name not in self._backends:
            self._backends[name] = make_backend(name, self)
        return self._backends[name]

    @property
    def sites(self) -> tuple[str, ...]:
        """The hook sites this model has (:data:`steerlab.backends.base.SITES`)."""
        return self.backend("hf").sites

    @property
    def eos_ids(self) -> list[int]:
        """Every token id that ends a generation (generation config and tokenizer)."""
        ids = self.hf.generation_config.eos_token_id
        ids = list(ids) if isinstance(ids, list | tuple) else [ids]  # a copy: never edit it
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted({int(i) for i in ids if i is not None})

    def unembedding(self) -> torch.Tensor:
        """The unembedding matrix W_U as (vocab, d_model) float32, detached."""
        return self.hf.get_output_embeddings().weight.detach().float()

    def embedding(self) -> torch.Tensor:
        """The token embedding matrix W_E as (vocab, d_model) float32, detached."""
        return self.hf.get_input_embeddings().weight.detach().float()

    def parameters(self) -> list[nn.Parameter]:
        """The model's weights (for counting, freezing and memory accounting)."""
        return list(self.hf.parameters())

    def freeze(self) -> None:
        """Every weight to ``requires_grad=False`` (steering vectors train alone)."""
        for p in self.hf.parameters():
            p.requires_grad_(False)

    def train_mode(self, on: bool = True) -> None:
        self.hf.train(on)

    def trainable_copy(self) -> Model:
        """A private copy whose every weight trains (full fine-tuning), in train mode."""
        import copy
        from dataclasses import replace

        hf = copy.deepcopy(self.hf).train()
        for p in hf.parameters():
            p.requires_grad_(True)
        return replace(self, hf=hf, _backends={}, _live_edits={})

    def lora_copy(self, rank: int) -> tuple[Model, nn.Module]:
        """A private copy of the model with rank-``rank`` LoRA (``peft``) on every MLP
        down-projection (the learned-vector paper's comparison); the caller's model is never
        rewritten. Returns the copy (a :class:`Model`) and the peft module."""
        import copy
        from dataclasses import replace

        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as err:
            raise OptionError("adapter='lora' needs peft (pip install peft).") from err
        targets = sorted({n.split(".")[-1] for n, _ in self.hf.named_modules()
                          if n.endswith(("down_proj", "c_proj", "fc2", "dense_4h_to_h"))})
        if not targets:
            raise OptionError(f"No MLP down-projection found in {self.name} for LoRA.")
        cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets,
                         lora_dropout=0.0)
        peft = get_peft_model(copy.deepcopy(self.hf), cfg)
        return replace(self, hf=peft, _backends={}, _live_edits={}), peft


def _unknown(name: str, why: str) -> UnknownModelError:
    return UnknownModelError(
        f"Cannot load model {name!r}: {why}\n"
        f"Embedded models (work offline): {', '.join(EMBEDDED)}.\n"
        "Or pass a local directory holding a transformers causal LM "
        "(config.json + weights + tokenizer), e.g. load_model('/path/to/model')."
    )


def load_model(name: str = DEFAULT_MODEL, dtype: str | torch.dtype | None = None,
               chat: bool | None = None, device: str | torch.device | None = None,
               device_map: str | dict[str, Any] | None = None) -> Model:
    """Load a model by embedded name, local directory or hub id, on a device.

    Args:
        name: ``smollm2-135m-instruct`` / ``gemma-3-270m`` (embedded, converted once from GGUF
            into ``$STEERLAB_CACHE``), a directory with a transformers model, or a hub id.
        dtype: ``"bf16"``/``"fp16"``/``"fp32"``/a torch dtype; default: the fast one on the
            device (:func:`steerlab.devices.default_dtype`: bf16 on GPUs that support it,
            fp16 on other GPUs, bf16 on CPUs with fast bf16, fp32 on other CPUs).
        chat: override whether the model is treated as a chat model.
        device: ``"auto"`` (CUDA, then MPS, then the CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:1"``, ``"mps"``; default ``$STEERLAB_DEVICE`` or ``auto``. A device that
            is not on this machine is an error that lists those that are.
        device_map: ``"auto"`` (or an accelerate device map) to spread a model too large for
            one GPU over several (needs ``accelerate``); not together with ``device``.

    Example:
        >>> model = load_model("smollm2-135m-instruct", device="cpu")
        >>> model.n_layers, model.d_model, model.device
        (30, 576, device(type='cpu'))
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    placement = _placement(device, device_map)
    first = resolve_device(device) if device_map is None else resolve_device("auto")
    torch_dtype = parse_dtype(dtype) if dtype is not None else default_dtype(first)
    if not isinstance(name, str) or not name.strip():
        raise _unknown(str(name), "the name is empty.")
    hf_id = name
    recorded: dict[str, Any] = {}
    if name in EMBEDDED:
        path: str = str(convert_embedded(name))
        is_chat = EMBEDDED[name].chat
        hf_id = EMBEDDED[name].hf_id
        local_only = True
    elif Path(name).expanduser().is_dir():
        path = str(Path(name).expanduser())
        meta = Path(path) / "steerlab.json"
        recorded = json.loads(meta.read_text()) if meta.is_file() else {}
        hf_id = recorded.get("hf_id", name)
        is_chat = False
        local_only = True
    else:
        path, is_chat, local_only = name, False, False
        if Path(name).suffix or name.startswith((".", "/", "~")):
            raise _unknown(name, "no such directory.")
    try:  # the local HF cache first: it needs no network
        if name in EMBEDDED:
            tok = load_converted_tokenizer(Path(path))
        else:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - transformers raises many kinds here
        if local_only:
            raise _unknown(name, f"the directory has no loadable tokenizer ({err}).") from err
        if not hub_reachable():
            raise _unknown(name, "it is not an embedded name, not a local directory, and the "
                           "Hugging Face hub is not reachable from this machine.") from err
        try:
            tok = AutoTokenizer.from_pretrained(path)
        except Exception as err2:  # noqa: BLE001
            raise _unknown(name, f"the hub has no such model ({type(err2).__name__}).") from err2
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, attn_implementation="sdpa",
                                              **placement)
    hf.eval()
    if name not in EMBEDDED:
        is_chat = getattr(tok, "chat_template", None) is not None and (
            "instruct" in name.lower() or "chat" in name.lower() or "-it" in name.lower()
            or "distill" in name.lower())
        if Path(path).is_dir() and isinstance(recorded.get("chat"), bool):
            is_chat = recorded["chat"]  # a directory steerlab wrote says what it is
    if chat is not None:
        is_chat = chat
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return Model(name=name, hf=hf, tokenizer=tok, is_chat=is_chat, hf_id=hf_id)


def _placement(device: str | torch.device | None, device_map: str | dict[str, Any] | None
               ) -> dict[str, Any]:
    """The ``from_pretrained`` keywords that put the model where asked (checked first)."""
    if device_map is None:
        dev = resolve_device(device)  # the CPU: today's plain load; a GPU: straight onto it
        return {} if dev.type == "cpu" else {"device_map": dev}
    if device is not None:
        raise DeviceError(f"Pass device= or device_map=, not both (got device={device!r}, "
                          f"device_map={device_map!r}).")
    if importlib.util.find_spec("accelerate") is None:
        raise DeviceError("device_map= needs accelerate: pip install accelerate.")
    if not isinstance(device_map, str | dict):
        raise DeviceError(f"device_map must be 'auto' (or another accelerate strategy) or a "
                          f"dict of module -> device, got {device_map!r}.")
    return {"device_map": device_map}


def model_from_hf(hf: Any, tokenizer: Any, name: str = "custom", is_chat: bool = False,
                  device: str | torch.device | None = None) -> Model:
    """Wrap an already-built transformers model (tests use tiny random models this way);
    ``device`` moves it there first (default: leave it where it is)."""
    if device is not None:
        hf = hf.to(resolve_device(device))
    hf.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Model(name=name, hf=hf, tokenizer=tokenizer, is_chat=is_chat, hf_id=name)
