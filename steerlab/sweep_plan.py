"""What a sweep runs, decided before any model work: the :class:`SweepConfig` (the grid, the
items, how vectors are extracted, scaled and applied; checked when made), its
:class:`SweepPlan` on a model (checked layers, items, few-shot examples, the chat rule and the
journal key) and the grid of cells the plan's table holds. :mod:`steerlab.sweeps` runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from steerlab.devices import dtype_name
from steerlab.errors import OptionError
from steerlab.options import (
    BACKENDS,
    COMPARE_SCALE,
    METHODS,
    MODES,
    REDUCTIONS,
    SCALES,
    SCOPES,
    SCORINGS,
    BackendName,
    Method,
    Mode,
    Reduction,
    Scale,
    Scope,
    Scoring,
    check,
)
from steerlab.sweep_journal import SweepKey
from steerlab.tasks import Item, Task, get_task, shots
from steerlab.validate import check_layers

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["SHOTS", "SweepConfig", "SweepPlan", "as_config", "default_shots", "grid",
           "plan_sweep"]

SHOTS = 3  # few-shot examples for base models on generative tasks (README: "get 3")


def default_shots(model: Model, task: Task, k: int = SHOTS,
                  chat: bool | None = None) -> list[tuple[str, str]]:
    """The few-shot examples an evaluation of ``task`` gives ``model``: ``k`` (question,
    answer) pairs from :func:`steerlab.tasks.shots` on a generative task read without a chat
    template (the chat rule, :meth:`~steerlab.models.Model.uses_chat` of ``chat``), none
    where the template frames the question, or on multiple choice."""
    return [] if model.uses_chat(chat) or task.kind == "mc" else shots(task, k)


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep runs: the grid (``layers`` x ``coeffs`` x ``methods``), the items and how
    vectors are extracted, scaled and applied. Checked when made, so a bad option fails before
    any model work.

    Attributes:
        task: a :class:`Task` name (``steerlab tasks`` lists them) or the task itself.
        layers: steering layers; coeffs: coefficients in ``scale`` units (see the module doc).
        methods: any of :data:`~steerlab.options.METHODS`.
        n: evaluation items (a seeded sample; None for all); seed: items, controls, bootstrap.
        scale: ``norm`` (default), ``unit`` or ``raw`` (:meth:`SteeringVector.added`).
        extract_from / extract_n: the extraction prompt source (default: the task's) and size.
        reduction: how extraction prompts are reduced (``last`` or ``mean``).
        chat: the chat rule (:meth:`~steerlab.models.Model.uses_chat`; None follows the model).
        scoring: multiple-choice scoring (default: the task's).
        backend: ``hf``, ``tlens`` or ``nnsight``; batch_size: prompts per forward.
        mode / scope: ``add``/``project``/``ablate``; ``layer`` or ``all`` (Hong et al.).
    """

    task: Task | str
    layers: Sequence[int]
    coeffs: Sequence[float]
    methods: Sequence[Method] = ("diff_means", "random", "shuffled")
    n: int | None = 200
    seed: int = 0
    scale: Scale = COMPARE_SCALE
    extract_from: str | None = None
    extract_n: int | None = None
    reduction: Reduction = "last"
    chat: bool | None = None
    scoring: Scoring | None = None
    backend: BackendName = "hf"
    batch_size: int = 16
    mode: Mode = "add"
    scope: Scope = "layer"

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise OptionError(f"Unknown method(s) {bad}: use any of {', '.join(METHODS)}.")
        if not self.methods:
            raise OptionError("methods is empty: name at least one of " + ", ".join(METHODS))
        if not list(self.coeffs):
            raise OptionError("coeffs is empty: give at least one coefficient, e.g. [0.2].")
        named: tuple[tuple[str, list[Any]], ...] = (
            ("coeffs", [float(c) for c in self.coeffs]), ("methods", list(self.methods)))
        for name, values in named:
            twice = sorted({v for v in values if values.count(v) > 1}, key=str)
            if twice:  # each would be a second row of the same cell, counted twice by Holm
                raise OptionError(f"{name} names {twice} more than once: give each once.")
        check("scale", self.scale, SCALES)
        check("mode", self.mode, MODES)
        check("scope", self.scope, SCOPES)
        check("backend", self.backend, BACKENDS)
        check("reduction", self.reduction, [r for r in REDUCTIONS if r != "none"])
        if self.scoring is not None:
            check("scoring", self.scoring, SCORINGS)


def as_config(config: SweepConfig | Task | str, layers: Sequence[int] | None = None,
              coeffs: Sequence[float] | None = None, methods: Sequence[Method] | None = None,
              **options: Any) -> SweepConfig:
    """``config`` itself, or the :class:`SweepConfig` of :func:`sweep`'s shorthand (a task
    with ``layers``, ``coeffs``, ``methods`` and other fields as keywords)."""
    if isinstance(config, SweepConfig):
        if layers is not None or coeffs is not None or methods is not None or options:
            raise OptionError("Pass either a SweepConfig or a task with its options, not both.")
        return config
    if layers is None or coeffs is None:
        raise OptionError("sweep(model, task, layers, coeffs, ...) needs layers and coeffs "
                          "(or pass a SweepConfig).")
    unknown = sorted(set(options) - set(SweepConfig.__dataclass_fields__))
    if unknown:
        raise OptionError(f"Unknown sweep option(s) {unknown}: SweepConfig has "
                          f"{', '.join(SweepConfig.__dataclass_fields__)}.")
    if methods is not None:
        options["methods"] = methods
    return SweepConfig(config, layers, coeffs, **options)


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep of ``config`` on a model evaluates: the task, the checked layers, the
    coefficients (``[1.0]`` for ablation), the items, the few-shot examples, the chat rule and
    the journal key (which holds the model's dtype)."""

    config: SweepConfig
    task: Task
    layers: list[int]
    coeffs: list[float]
    items: list[Item]
    shots: list[tuple[str, str]]
    chat: bool
    key: SweepKey


def plan_sweep(model: Model, config: SweepConfig) -> SweepPlan:
    """The :class:`SweepPlan` of ``config`` on ``model`` (no model work)."""
    task = get_task(config.task) if isinstance(config.task, str) else config.task
    layers = check_layers(model, list(config.layers))
    coeffs = [1.0] if config.mode == "ablate" else list(config.coeffs)  # ablation: no strength
    chat = model.uses_chat(config.chat)
    items = task.items(config.n, config.seed)
    few = default_shots(model, task, chat=chat)
    key = SweepKey(model.hf_id, dtype_name(model.dtype), task.name,
                   len(items), config.seed, config.scale,
                   config.extract_from or task.extract_from, config.extract_n,
                   config.reduction, chat, config.scoring, config.backend,
                   tuple(layers), len(few), config.mode, config.scope)
    return SweepPlan(config, task, layers, coeffs, list(items), list(few), chat, key)


def grid(plan: SweepPlan) -> set[tuple[str, int, float]]:
    """Every (method, layer, coeff) the plan's table holds, the baseline included."""
    return {("baseline", -1, 0.0)} | {(m, l, float(c)) for m in plan.config.methods
                                      for l in plan.layers for c in plan.coeffs}
