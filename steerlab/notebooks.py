"""What the numbered notebooks share: the smoke switch and its sizes, the recorded layers,
where results, runs and summaries live, and how a run's summary is compared with the
recorded one. Running them is :mod:`steerlab.notebook_runner`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab import _io
from steerlab.console import say
from steerlab.embedded import EMBEDDED
from steerlab.figures import figures_dir
from steerlab.options import Scoring, env_flag
from steerlab.spotcheck import shown

__all__ = ["figures_dir", "recompute", "results_root", "settings", "smoke", "write_summary"]


def smoke() -> bool:
    """True when ``STEERLAB_SMOKE=1``: smaller data and sweeps, same code paths."""
    return env_flag("STEERLAB_SMOKE")


@dataclass(frozen=True)
class Settings:
    """What the notebooks run on; every size shrinks under the smoke switch."""

    models: list[str] = field(default_factory=lambda: list(EMBEDDED))
    n_extract: int = 200  # prompts per set for vectors and PCA
    n_eval: int = 200  # evaluation items per sweep cell
    n_sweep_extract: int | None = None  # prompts per set for sweep vectors (None: all)
    n_layers: int = 6  # steering layers per model in sweeps
    coeffs: tuple[float, ...] = (-0.4, -0.2, 0.2, 0.4)
    max_new_tokens: int = 40
    n_gen: int = 100  # items per generative sweep cell
    gen_coeffs: tuple[float, ...] = (-0.1, 0.1)  # generative sweeps: smaller pushes than recall's
    smoke: bool = False


def settings() -> Settings:
    models = os.environ.get("STEERLAB_MODELS")
    names = [m.strip() for m in models.split(",")] if models else list(EMBEDDED)
    if smoke():
        return Settings(names, n_extract=24, n_eval=24, n_sweep_extract=24, n_layers=2,
                        coeffs=(-0.3, 0.3), max_new_tokens=12, n_gen=8,
                        gen_coeffs=(0.1,), smoke=True)
    return Settings(names)


# the grids of the sweeps recorded in results/ (README): the notebooks reuse those cells
RECORDED_LAYERS = {"smollm2-135m-instruct": [3, 8, 12, 16, 20, 25],
                   "gemma-3-270m": [2, 5, 8, 11, 14, 16]}


def sweep_layers(model: str, n_layers: int, k: int) -> list[int]:
    """Steering layers for a sweep: the recorded grid for the embedded models in a full run,
    else ``k`` layers spread over the depth."""
    if not smoke() and model in RECORDED_LAYERS:
        return RECORDED_LAYERS[model]
    return spread_layers(n_layers, k)


def spread_layers(n_layers: int, k: int) -> list[int]:
    """``k`` layers spread over the depth (skipping the first and last)."""
    if k >= n_layers:
        return list(range(n_layers))
    step = (n_layers - 1) / (k + 1)
    return sorted({round(step * (i + 1)) for i in range(k)})


SHORT_NAMES = {"smollm2-135m-instruct": "smollm2", "gemma-3-270m": "gemma3"}


def recompute() -> bool:
    """True when ``STEERLAB_RECOMPUTE=1`` (``make run-all``): the notebooks reuse no recording
    (:mod:`steerlab.recordings`) and write new ones under :func:`results_root`."""
    return env_flag("STEERLAB_RECOMPUTE")


def results_root() -> Path:
    """Where notebooks keep recordings and summaries: ``$STEERLAB_RESULTS``, else
    ``runs/recomputed/`` under :func:`recompute` (so ``results/`` keeps the recorded ones),
    else ``results/``."""
    repo = Path(__file__).resolve().parent.parent
    if os.environ.get("STEERLAB_RESULTS"):
        return Path(os.environ["STEERLAB_RESULTS"])
    return repo / "runs" / "recomputed" if recompute() else repo / "results"


def results_path(model: str, task: str) -> Path:
    """Where notebooks keep sweep results: ``results/sweep_<model>_<task>.parquet`` (the same
    files the CLI commands in the README write, so a finished sweep is reused), or
    ``results/smoke/`` under the smoke switch; :func:`results_root` names the root."""
    short = SHORT_NAMES.get(model, model.replace("/", "--"))
    root = results_root()
    return (root / "smoke" if smoke() else root) / f"sweep_{short}_{task}.parquet"


def summary_path(model: str, what: str) -> Path:
    """Where a notebook's summary the docs quote is recorded: ``results/<what>_<model>.json``
    (``results/smoke/`` under the smoke switch, like :func:`results_path`); its journals sit
    beside it (``.jsonl``). :func:`write_summary` writes it."""
    short = SHORT_NAMES.get(model, model.replace("/", "--"))
    return results_path(model, what).with_name(f"{what}_{short}.json")


#: how close a recomputed summary's numbers must be to the recorded ones to "match" (either)
SUMMARY_RTOL, SUMMARY_ATOL = 0.02, 0.01


def _leaves(doc: Any, at: str = "") -> dict[str, Any]:
    if isinstance(doc, dict):
        return {k: v for key, val in doc.items() for k, v in _leaves(val, f"{at}.{key}").items()}
    if isinstance(doc, list):
        return {k: v for i, val in enumerate(doc) for k, v in _leaves(val, f"{at}[{i}]").items()}
    return {at.lstrip("."): doc}


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def compare_summaries(recorded: Any, new: Any) -> tuple[int, list[str]]:
    """(values compared, one line per value that differs): numbers within
    :data:`SUMMARY_RTOL` relative or :data:`SUMMARY_ATOL` absolute match, anything else
    must be equal. Wall times (a key ending in ``seconds``) are this machine's, not compared."""
    old, now = _leaves(recorded), _leaves(new)
    keys = sorted(k for k in set(old) | set(now) if not k.endswith("seconds"))
    differ = []
    for key in keys:
        a: Any = old.get(key)
        b: Any = now.get(key)
        if _number(a) and _number(b):
            if abs(float(a) - float(b)) <= max(SUMMARY_ATOL, SUMMARY_RTOL * abs(float(a))):
                continue
        elif a == b:
            continue
        differ.append(f"{key}: recorded {a!r}, now {b!r}")
    return len(keys), differ


def _plain(x: Any) -> Any:
    """What JSON cannot hold as it is: numbers (numpy's) as floats, the rest as text."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def write_summary(model: str, what: str, doc: dict[str, Any], measured: bool = False) -> Path:
    """Write a notebook's summary (:func:`summary_path`), JSON without pickle. The first run
    records it in ``results/``; once one is recorded there it is kept (``make run`` leaves
    ``results/`` as recorded: delete the file to record anew), this run's goes to
    ``runs/latest/`` (``$STEERLAB_LATEST``) and a line says how it compares
    (:func:`compare_summaries`; for a ``measured`` summary, this machine's wall times, no
    comparison). Returns the path written."""
    path = summary_path(model, what)
    text = json.dumps(doc, indent=1, default=_plain)
    if not path.is_file():
        return _io.write_text(path, text)
    latest = Path(os.environ.get("STEERLAB_LATEST") or Path(__file__).resolve().parent.parent
                  / "runs" / "latest") / path.name
    _io.write_text(latest, text)
    if measured:
        say(f"{shown(path)} is recorded; this run's wall times are in {shown(latest)}")
        return latest
    n, differ = compare_summaries(json.loads(path.read_text()), json.loads(text))
    if differ:
        say(f"{shown(path)} is recorded; this run's summary ({shown(latest)}) differs in "
            f"{len(differ)} of {n} values beyond {SUMMARY_RTOL:.0%} / {SUMMARY_ATOL}: "
            + "; ".join(differ[:4]) + (" ..." if len(differ) > 4 else ""))
    else:
        say(f"{shown(path)} is recorded; this run's summary ({shown(latest)}) matches it: "
            f"{n} values, numbers within {SUMMARY_RTOL:.0%} or {SUMMARY_ATOL}")
    return latest


def replication_dir(model: str, scoring: Scoring = "letter") -> Path:
    """Where the seed-protocol replication of ``model`` is kept (``steerlab replicate --out``
    in the README): ``results/replication_<model>/`` for letter scoring,
    ``results/replication_<model>_<scoring>/`` for another (``results/smoke/...`` under the
    smoke switch)."""
    short = SHORT_NAMES.get(model, model.replace("/", "--"))
    return results_path(model, "x").with_name(
        f"replication_{short}" + ("" if scoring == "letter" else f"_{scoring}"))


def run_dir(model: str, task: str) -> Path:
    """Where notebooks keep a learned-vector training run (checkpoints + journal):
    ``results/train_<model>_<task>/`` (``results/smoke/...`` under the smoke switch)."""
    return results_path(model, task).with_name(
        f"train_{SHORT_NAMES.get(model, model.replace('/', '--'))}_{task}")


def recorded_run(model: str, task: str) -> Path:
    """The training run recorded in the repository (``results/train_<model>_<task>/``),
    whatever ``$STEERLAB_RESULTS`` and the smoke switch say: notebooks that only read a
    learned vector use it when it is there. Under :func:`recompute`: the run trained anew
    (:func:`run_dir`)."""
    if recompute():
        return run_dir(model, task)
    short = SHORT_NAMES.get(model, model.replace("/", "--"))
    return Path(__file__).resolve().parent.parent / "results" / f"train_{short}_{task}"
