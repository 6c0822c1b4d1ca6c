"""Bootcamp teaching material: lessons with exercises, and checks that grade them.

Each lesson in ``lessons/`` is one jupytext percent script; :mod:`steerlab.teach.build` makes
``<name>_exercises.ipynb`` (solution bodies replaced by a stub that raises :class:`NotDoneYet`,
plus a hint) and ``<name>_solutions.ipynb`` from it (``steerlab teach build``).

Checks take the participant's function, run it on a tiny random model and on the embedded
model, print one specific message and return a :class:`CheckResult`::

    from steerlab.teach import check_mean_difference
    check_mean_difference(my_mean_difference)
"""

from steerlab.teach._harness import CheckResult, NotDoneYet, count_hooks, remove_hooks
from steerlab.teach.caching import check_last_token_residual, check_mean_difference
from steerlab.teach.measuring import check_paired_bootstrap, check_wilson_interval
from steerlab.teach.patching import (
    check_normalised_logit_diff,
    check_patch_residual,
    check_patching_map,
)
from steerlab.teach.reading import check_top_tokens, check_unembedding_cosines
from steerlab.teach.steering import (
    check_add_vector_hook,
    check_generated_only_hook,
    check_steered_where,
    check_steering_context,
)

__all__ = [
    "CheckResult",
    "NotDoneYet",
    "check_add_vector_hook",
    "check_generated_only_hook",
    "check_last_token_residual",
    "check_mean_difference",
    "check_normalised_logit_diff",
    "check_paired_bootstrap",
    "check_patch_residual",
    "check_patching_map",
    "check_steered_where",
    "check_steering_context",
    "check_top_tokens",
    "check_unembedding_cosines",
    "check_wilson_interval",
    "count_hooks",
    "remove_hooks",
]
