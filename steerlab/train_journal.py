"""A training run's directory: the per-step journal, the checkpoint of the adapter and the Adam
state (replaced together after every step, :func:`steerlab._io.commit`), resuming from them, and
reading a run back (:func:`history`, :func:`training_summary`, :func:`run_dtype`).
:func:`steerlab.train.train_rloo` writes it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from steerlab import _io
from steerlab.adapters import ADAPTER_CLASSES, Adapter
from steerlab.devices import dtype_name
from steerlab.errors import SteerlabError

if TYPE_CHECKING:
    from steerlab.models import Model
    from steerlab.train import TrainConfig

__all__ = ["JOURNAL", "OPTIMIZER", "checkpoint_meta", "checkpoint_step", "history",
           "load_checkpoint", "resume_journal", "run_dtype", "save_checkpoint",
           "training_summary"]


JOURNAL = "journal.jsonl"
OPTIMIZER = "optimizer.safetensors"


def save_checkpoint(out: Path, adapter: Adapter, opt: torch.optim.Optimizer,
                     model: Model, cfg: TrainConfig, step: int) -> None:
    """Replace the adapter and Adam-state files of ``out`` with ``step``'s, in one commit."""
    meta = {"config": asdict(cfg), "config_key": cfg.key(), "step": step,
            "task": cfg.task, "trainer": "rloo", "dtype": dtype_name(model.dtype)}

    def write_adapter(path: Path) -> None:
        adapter.save_checkpoint(path, model, meta, seed=cfg.seed)

    state: dict[str, torch.Tensor] = {}
    for pid, s in opt.state_dict()["state"].items():  # pid: the parameter's index
        for k, v in s.items():
            state[f"{pid}.{k}"] = torch.as_tensor(v)

    def write_optimizer(path: Path) -> None:
        _io.save_tensors(path, state, {"kind": "adam_state", "step": step,
                                       "config_key": cfg.key()})

    _io.commit(out, {adapter.file_name: write_adapter, OPTIMIZER: write_optimizer})


def checkpoint_meta(out: Path) -> dict[str, Any] | None:
    """The metadata of the checkpoint in ``out`` (config, step, dtype, ...; None when there is
    none); reads only."""
    for cls in ADAPTER_CLASSES:
        if (out / cls.file_name).is_file():
            return cls.stored_meta(out / cls.file_name)
    return None


def checkpoint_step(out: Path) -> int | None:
    """The step of the checkpoint in ``out`` (None when there is none); reads only."""
    meta = checkpoint_meta(out)
    return None if meta is None else int(meta.get("step", 0))


def load_checkpoint(out: Path, adapter: Adapter, opt: torch.optim.Optimizer,
                     model: Model, cfg: TrainConfig) -> int:
    """The step of a matching checkpoint in ``out`` (its state loaded), or 0 for none.

    Finishes or discards a commit a kill interrupted, then refuses a directory whose files do
    not belong together (another configuration, or vectors and Adam state of different steps).
    """
    _io.recover(out)
    ckpt = out / adapter.file_name
    if not ckpt.is_file():
        return 0
    if not (out / OPTIMIZER).is_file():
        raise SteerlabError(f"{out} has {ckpt.name} but no {OPTIMIZER}: the checkpoint is "
                            "incomplete; delete the directory to start the run again.")
    tensors_o, ometa = _io.load_tensors(out / OPTIMIZER, "adam_state")
    stored = adapter.read_checkpoint(ckpt, model)
    key, step = stored.config_key, stored.step
    if key != cfg.key() or ometa.get("config_key") != key:
        raise SteerlabError(f"{out} holds a run with another configuration (key {key}, this "
                            f"run {cfg.key()}); use another out_dir or delete it.")
    if int(ometa.get("step", -1)) != step:
        raise SteerlabError(f"{out} is inconsistent: {ckpt.name} is of step {step} but "
                            f"{OPTIMIZER} of step {ometa.get('step')} (a run killed between "
                            "the two writes by a steerlab that did not commit them together). "
                            "Resuming would continue with the wrong Adam state: delete the "
                            "directory and train again.")
    stored.restore()
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors_o.items():
        i, k = name.split(".", 1)
        state.setdefault(int(i), {})[k] = t
    sd["state"] = state
    opt.load_state_dict(sd)
    return step


def resume_journal(out: Path, step: int) -> list[dict]:
    """The journal rows up to the checkpoint's ``step``; later rows (appended before a kill
    stopped their checkpoint) are dropped from the file too, as those steps are redone."""
    rows = _io.read_jsonl(out / JOURNAL)
    kept = [r for r in rows if r["step"] <= step]
    if step and not any(r["step"] == step and "reward" in r for r in kept):
        raise SteerlabError(f"{out}: the checkpoint is of step {step} but {JOURNAL} has no row "
                            "for it; the directory was not written by one run of this code. "
                            "Delete it and train again.")
    if len(kept) != len(rows):
        _io.write_jsonl(out / JOURNAL, kept)
    return kept


def run_dtype(out_dir: str | Path) -> str | None:
    """The dtype the run in ``out_dir`` was trained in (its checkpoint's ``dtype``), or None
    when there is no checkpoint or it was written before runs recorded their dtype."""
    meta = checkpoint_meta(Path(out_dir))
    return None if meta is None else meta.get("dtype")


def history(out_dir: str | Path) -> pd.DataFrame:
    """The per-step journal of a run directory as a DataFrame (step, reward, loss, ...), up to
    its checkpoint's step."""
    out = Path(out_dir)
    rows = _io.read_jsonl(out / JOURNAL)
    step = checkpoint_step(out)
    return pd.DataFrame([r for r in rows if step is None or r["step"] <= step])


def training_summary(hist: pd.DataFrame, window: int = 10) -> dict[str, Any]:
    """What the README's training table quotes, from a run's journal (:func:`history`): the
    mean rollout reward and completion length of the first and last ``window`` steps, the
    greedy dev accuracy at each evaluation step, and the wall time."""
    steps = hist.dropna(subset=["reward"]) if "reward" in hist else hist.iloc[:0]
    first, last = steps.head(window), steps.tail(window)
    dev = hist.dropna(subset=["dev_acc"]) if "dev_acc" in hist else hist.iloc[:0]
    out: dict[str, Any] = {"steps": int(len(steps)), "window": window,
                           "dev_acc": {int(r.step): float(r.dev_acc) for r in dev.itertuples()}}
    for name, col in (("reward", "reward"), ("mean_tokens", "mean_tokens"),
                      ("seconds", "seconds"), ("gen_seconds", "gen_seconds")):
        if col in steps:
            out[name] = {"first": float(first[col].mean()), "last": float(last[col].mean()),
                         "median": float(steps[col].median()), "total": float(steps[col].sum())}
    return out
