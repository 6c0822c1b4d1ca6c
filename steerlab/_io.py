"""Safetensors files with JSON metadata, written atomically; never pickle."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import InvalidVectorError

META_KEY = "steerlab"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` + ``meta`` to ``path`` via a temporary file and an atomic rename, so an
    interrupted save never leaves a half-written file behind."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata={META_KEY: json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_tensors(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_tensors`; ``kind`` must match ``meta["kind"]``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No {kind} file at {path}.")
    how_to_fix = (f"Re-create it (e.g. `steerlab extract ... --out {path.name}`) or check that "
                  "the download/copy finished.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta_json = (f.metadata() or {}).get(META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as err:  # noqa: BLE001 - safetensors raises several kinds
        raise InvalidVectorError(f"{path} is not a readable safetensors file (truncated or "
                                 f"corrupt: {err}). {how_to_fix}") from err
    if meta_json is None:
        raise InvalidVectorError(f"{path} has no steerlab metadata: it was not written by "
                                 f"steerlab. {how_to_fix}")
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as err:
        raise InvalidVectorError(f"{path} has corrupt steerlab metadata. {how_to_fix}") from err
    if meta.get("kind") != kind:
        raise InvalidVectorError(f"{path} holds a {meta.get('kind')!r}, not a {kind!r}.")
    return tensors, meta
