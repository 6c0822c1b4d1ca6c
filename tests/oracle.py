"""An independent reference for steerlab's fast paths: plain transformers and torch hooks, one
unpadded prompt at a time, no KV cache, no steerlab code.

Steering is a vector added to a decoder block's output (``resid_post``) at the positions its
phase admits: ``all``, the prompt's tokens (``prompt``) or the generated ones (``generated``).
Without a cache every greedy step recomputes the whole sequence, so "the prompt's tokens" are
simply the first ``len(prompt)`` positions: nothing here knows about prefills, stages, lead rows,
replays or rows leaving a batch, the machinery under test.

Also here: tiny models whose outputs depend on their prompt (a larger init, untied embeddings)
and whose end-of-text some rows reach early and others late, so that a row mix-up, a lost edit
or a row retired at the wrong step changes what a test sees.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    Qwen2Config,
    RwkvConfig,
)

EOS = 2
VOCAB = 128
#: the sliding window of the oracle's Gemma 3 (its layers alternate sliding and full)
WINDOW = 8


def _configs() -> dict[str, object]:
    common = {"vocab_size": VOCAB, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": EOS,
              "tie_word_embeddings": False, "initializer_range": 0.3}
    return {
        "llama": LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, **common),
        "qwen2": Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, **common),
        "gpt2": GPT2Config(n_embd=32, n_layer=4, n_head=4, n_positions=512, **common),
        "gemma3": Gemma3TextConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, sliding_window=WINDOW,
            layer_types=["sliding_attention", "full_attention"] * 2, **common),
        "rwkv": RwkvConfig(hidden_size=32, num_hidden_layers=4, attention_hidden_size=32,
                           intermediate_size=64, context_length=512, **common),
    }


ARCHS = list(_configs())


def lively_hf(arch: str, seed: int = 0) -> torch.nn.Module:
    """A tiny fp32 causal LM of ``arch`` whose greedy text depends on its prompt."""
    torch.manual_seed(seed)
    kwargs = {} if arch == "rwkv" else {"attn_implementation": "sdpa"}
    hf = AutoModelForCausalLM.from_config(_configs()[arch], dtype=torch.float32, **kwargs)
    return hf.eval()


def blocks(hf: torch.nn.Module) -> Sequence[torch.nn.Module]:
    """The decoder blocks, found by architecture (written here, not taken from steerlab)."""
    for path in ("model.layers", "transformer.h", "rwkv.blocks"):
        obj: object = hf
        try:
            for name in path.split("."):
                obj = getattr(obj, name)
        except AttributeError:
            continue
        return obj  # type: ignore[return-value]
    raise AssertionError(f"no decoder blocks found in {type(hf).__name__}")


Edit = tuple[int, torch.Tensor]  # (layer, vector added to that block's output)


def _logits(hf: torch.nn.Module, ids: list[int], edits: Sequence[Edit],
            steered: torch.Tensor) -> torch.Tensor:
    """Logits (T, vocab) of one unpadded sequence, each edit's vector added to its block's
    output where ``steered`` (T,) is true."""
    handles = []

    def hook_for(vec: torch.Tensor):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            new = hidden + steered[None, :, None].to(hidden.dtype) * vec.to(hidden)
            return (new, *output[1:]) if isinstance(output, tuple) else new
        return hook

    layers = blocks(hf)
    try:
        for layer, vec in edits:
            handles.append(layers[layer].register_forward_hook(hook_for(vec)))
        with torch.no_grad():
            x = torch.tensor([ids], device=hf.device)
            return hf(input_ids=x, use_cache=False).logits[0]
    finally:
        for h in handles:
            h.remove()


def _mask(n: int, prompt: int, positions: str) -> torch.Tensor:
    at = torch.arange(n)
    return {"all": at >= 0, "prompt": at < prompt, "generated": at >= prompt}[positions]


def last_logits(hf: torch.nn.Module, ids: list[int], edits: Sequence[Edit] = (),
                positions: str = "all") -> torch.Tensor:
    """The next-token logits after ``ids`` read as a prompt (one forward: only ``generated``
    edits stay off)."""
    return _logits(hf, ids, edits, _mask(len(ids), len(ids), positions))[-1]


def greedy(hf: torch.nn.Module, ids: list[int], max_new: int, edits: Sequence[Edit] = (),
           positions: str = "all", stop: int = EOS) -> list[int]:
    """Greedy new tokens after the prompt ``ids``, each step a full forward of the sequence so
    far (no cache); ends at ``stop`` (left out) or after ``max_new`` tokens."""
    seq, out = list(ids), []
    for _ in range(max_new):
        tok = int(_logits(hf, seq, edits, _mask(len(seq), len(ids), positions))[-1].argmax())
        if tok == stop:
            break
        out.append(tok)
        seq.append(tok)
    return out


def end_early_and_late(hf: torch.nn.Module, prompts: Sequence[list[int]], steps: int) -> int:
    """Make end-of-text the model's greedy choice wherever it would pick one common token, so
    that rows end at different steps (some not at all): that token's output row is copied,
    slightly enlarged, to end-of-text's (the embeddings are untied, so inputs do not change).
    Returns the token chosen."""
    news = [greedy(hf, ids, steps, stop=-1) for ids in prompts]
    candidates = sorted({t for new in news for t in new if t > 3})

    def firsts(t: int) -> set[int]:  # the step each prompt first picks t at (steps: never)
        return {new.index(t) if t in new else steps for new in news}

    tok = max(candidates, key=lambda t: len(firsts(t)))
    head = hf.get_output_embeddings().weight
    with torch.no_grad():
        head[EOS] = head[tok] * 1.05
    return tok


def block_output(hf: torch.nn.Module, ids: list[int], layer: int) -> torch.Tensor:
    """(T, d_model) output of block ``layer`` for one unpadded sequence (a forward hook)."""
    seen: list[torch.Tensor] = []

    def hook(module, args, output):
        seen.append((output[0] if isinstance(output, tuple) else output)[0].detach().clone())

    handle = blocks(hf)[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            hf(input_ids=torch.tensor([ids], device=hf.device), use_cache=False)
    finally:
        handle.remove()
    return seen[0]


def greedy_at(hf: torch.nn.Module, ids: list[int], max_new: int, layer: int,
              value: torch.Tensor, replace: bool, stop: int = EOS) -> list[int]:
    """Greedy new tokens after the prompt ``ids`` with block ``layer``'s output at the
    prompt's last position written over by ``value`` (``replace``) or moved by it; each step a
    full forward of the sequence so far (no cache), so the edit is made at every step."""
    at = len(ids) - 1

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        v = value.to(hidden)
        hidden[0, at] = v if replace else hidden[0, at] + v
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    seq, out = list(ids), []
    handle = blocks(hf)[layer].register_forward_hook(hook)
    try:
        for _ in range(max_new):
            with torch.no_grad():
                logits = hf(input_ids=torch.tensor([seq], device=hf.device),
                            use_cache=False).logits[0]
            tok = int(logits[-1].argmax())
            if tok == stop:
                break
            out.append(tok)
            seq.append(tok)
    finally:
        handle.remove()
    return out
