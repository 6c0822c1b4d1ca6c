"""Every closed set of options, written once as a ``Literal`` alias and its tuple of values.

Functions type their parameters with the alias, validate with :func:`check`, and the CLI takes
its ``choices`` from the tuples, so a new option is added in one place.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal, get_args

from steerlab.errors import OptionError

Site = Literal["resid_pre", "z", "attn_out", "resid_mid", "mlp_out", "resid_post"]
#: every site, in the order a block computes them
SITES: tuple[Site, ...] = get_args(Site)
#: where an edit applies during generation: every forward, only the forward that reads the
#: prompt (prefill), or only the decoding steps after it
When = Literal["all", "prompt", "generated"]
WHEN: tuple[When, ...] = get_args(When)

BackendName = Literal["hf", "tlens", "nnsight"]
#: ``raw`` coeff x the vector; ``unit`` coeff x its unit direction; ``norm`` coeff x the unit
#: direction x the layer's typical residual norm (the vector's reference norms)
Scale = Literal["raw", "unit", "norm"]
Mode = Literal["add", "project", "ablate"]
Scope = Literal["layer", "all"]
Reduction = Literal["last", "mean", "none"]
Direction = Literal["denoise", "noise"]
Scoring = Literal["letter", "text", "cloze", "generate"]
Method = Literal["diff_means", "random", "shuffled", "memorisation"]

BACKENDS: tuple[BackendName, ...] = get_args(BackendName)
SCALES: tuple[Scale, ...] = get_args(Scale)
MODES: tuple[Mode, ...] = get_args(Mode)
#: the sweep's control directions: the difference of means' norm, no reasoning signal
CONTROLS: tuple[Method, ...] = ("random", "shuffled")
SCOPES: tuple[Scope, ...] = get_args(Scope)
REDUCTIONS: tuple[Reduction, ...] = get_args(Reduction)
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)
SCORINGS: tuple[Scoring, ...] = get_args(Scoring)
METHODS: tuple[Method, ...] = get_args(Method)

#: The two default coefficient scales, each for one use. Applying one vector (``steer``,
#: ``add_steering``, ``SteeringVector.added``, GGUF export, the token view) multiplies the
#: vector as given, ``raw``: what steering-vectors, repeng and llama.cpp do with theirs, so a
#: vector moves between them unchanged. Comparing layers (sweeps, sliders,
#: ``SteeringVector.at_scale``) uses ``norm``, fractions of each layer's typical residual norm,
#: so one coefficient is the same push at every layer of every model.
APPLY_SCALE: Scale = "raw"
COMPARE_SCALE: Scale = "norm"

__all__ = ["APPLY_SCALE", "BACKENDS", "COMPARE_SCALE", "DIRECTIONS", "METHODS", "MODES",
           "REDUCTIONS", "SCALES",
           "SCOPES", "SCORINGS", "SITES", "WHEN", "BackendName", "Direction", "Method",
           "Mode", "Reduction", "Scale", "Scope", "Scoring", "Site", "When", "check",
           "env_flag"]


def check(name: str, value: object, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else an :class:`OptionError` naming the option,
    the bad value and the good ones."""
    if not isinstance(value, str) or value not in allowed:
        raise OptionError(f"Unknown {name} {value!r}: use one of {', '.join(allowed)}.")
    return value


def env_flag(name: str) -> bool:
    """True when the environment variable ``name`` is set to anything but empty, ``0`` or
    ``false`` (the on/off switches: ``STEERLAB_SMOKE``, ``STEERLAB_REQUIRE_PNG``)."""
    return os.environ.get(name, "0") not in ("", "0", "false", "False")
