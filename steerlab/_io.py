"""Files written so a kill never leaves a half-state: safetensors with JSON metadata (never
pickle), JSON-lines journals, and multi-file commits."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import InvalidVectorError, SteerlabError

META_KEY = "steerlab"
PENDING = ".pending"  # staging folder of an unfinished :func:`commit`
COMMITTED = "COMMITTED"  # its marker: present = the commit happened, finish moving the files


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; what is written there replaces ``path`` in one
    rename when the block exits normally, and is removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> Path:
    """Replace the file at ``path`` with ``text``, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` + ``meta`` to ``path`` via a temporary file and an atomic rename, so an
    interrupted save never leaves a half-written file behind."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata={META_KEY: json.dumps(meta)})
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


# --- JSON-lines journals: a record counts once its newline is on disk -----------------------

def append_jsonl(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append ``row`` as one JSON line and fsync it. A final line without its newline (a write
    cut short by a kill, which :func:`read_jsonl` never counted) is cut off first, so the new
    record starts on a line of its own instead of being glued onto the fragment."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(row) + "\n").encode()
    with path.open("a+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(end - 1)
            if f.read(1) != b"\n":  # a torn tail: keep everything up to the last newline
                f.seek(0)
                data = f.read()
                f.truncate(data.rfind(b"\n") + 1)
        f.write(line)  # "a" mode: always at the (new) end
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a journal written by :func:`append_jsonl` ([] when there is none).

    A final line without its newline is a write cut short by a kill and is skipped (that record
    is redone); any other line that is not JSON means the file is damaged, and is an error.
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    rows = []
    for i, line in enumerate(lines[:-1], start=1):  # lines[-1]: b"" or a torn tail
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise SteerlabError(
                f"{path}, line {i}, is not a JSON record ({err}): the journal is damaged (an "
                "older steerlab glued a record onto a line cut short by a kill). Delete that "
                "line; its cell or step is then simply redone.") from err
    return rows


def write_jsonl(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Replace the journal at ``path`` with ``rows``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))


# --- several files of one folder as one commit ---------------------------------------------

def commit(directory: str | Path, writers: Mapping[str, Callable[[Path], Any]]) -> None:
    """Replace the files ``writers`` names in ``directory`` all together or not at all.

    Each ``writers[name](path)`` writes its file into a staging folder; a marker file, written
    atomically, is the commit; the files are then moved into place. A kill before the marker
    leaves the old files; after it, :func:`recover` (run at the next commit or read) finishes
    the moves. Either way the files in ``directory`` are always from the same commit.
    """
    directory = Path(directory)
    recover(directory)
    stage = directory / PENDING
    stage.mkdir(parents=True)
    for name, write in writers.items():
        write(stage / name)
        _fsync(stage / name)
    with atomic_path(stage / COMMITTED) as tmp:
        tmp.write_text(json.dumps(list(writers)))
    recover(directory)


def recover(directory: str | Path) -> None:
    """Finish or discard a :func:`commit` that a kill interrupted (nothing to do otherwise)."""
    stage = Path(directory) / PENDING
    if not stage.is_dir():
        return
    marker = stage / COMMITTED
    if marker.is_file():  # committed: move what is not moved yet
        for name in json.loads(marker.read_text()):
            if (stage / name).is_file():
                os.replace(stage / name, Path(directory) / name)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)  # the renames are on disk before the marker goes
        finally:
            os.close(fd)
    shutil.rmtree(stage)
