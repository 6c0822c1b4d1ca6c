"""steerlab: a Jupyter-first workbench for activation steering of language models.

The public API (imported lazily, so ``import steerlab`` stays cheap)::

    from steerlab import load_model, cache_activations, diff_of_means, steer, generate
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_model": "steerlab.models",
    "Model": "steerlab.models",
    "cache_activations": "steerlab.cache",
    "cache_sites": "steerlab.cache",
    "Activations": "steerlab.cache",
    "SteeringVector": "steerlab.vectors",
    "diff_of_means": "steerlab.vectors",
    "random_like": "steerlab.vectors",
    "shuffled_diff_of_means": "steerlab.vectors",
    "steer": "steerlab.steering",
    "add_steering": "steerlab.steering",
    "hong_projection": "steerlab.steering",
    "match_norms": "steerlab.vectors",
    "extract_vector": "steerlab.vectors",
    "reference_norms": "steerlab.vectors",
    "SweepConfig": "steerlab.sweep",
    "to_gguf": "steerlab.interop",
    "from_gguf": "steerlab.interop",
    "from_repeng": "steerlab.interop",
    "from_steering_vectors": "steerlab.interop",
    "token_projections": "steerlab.tokenview",
    "token_view_html": "steerlab.tokenview",
    "token_projection_figure": "steerlab.tokenview",
    "activation_patching": "steerlab.patching",
    "attribution_patching": "steerlab.attribution",
    "screen_and_verify": "steerlab.attribution",
    "logit_diff": "steerlab.metrics",
    "answer_logprob": "steerlab.metrics",
    "answer_prob": "steerlab.metrics",
    "PatchResult": "steerlab.patching",
    "generate": "steerlab.inference",
    "forward_logits": "steerlab.inference",
    "evaluate": "steerlab.evaluate",
    "get_task": "steerlab.tasks",
    "sweep": "steerlab.sweep",
    "questions": "steerlab.data",
    "train_rloo": "steerlab.train",
    "TrainConfig": "steerlab.train",
    "logit_lens": "steerlab.lens",
    "cluster_tokens": "steerlab.lens",
    "cluster_table": "steerlab.lens",
    "layer_cosines": "steerlab.lens",
    "from_state_dict": "steerlab.lens",
}

__all__ = ["__version__", *_API]


class _Package(types.ModuleType):
    """``steerlab`` itself: importing a submodule binds it on the package (``steerlab.sweep``
    the module), which would shadow the public function of the same name (``sweep``,
    ``evaluate``). Public names win: the submodule stays in ``sys.modules`` and
    ``from steerlab.sweep import ...`` works as usual, while ``steerlab.sweep`` stays the
    documented function whatever was imported before (to get a module object, use
    ``importlib.import_module("steerlab.sweep")``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType) \
                and value.__name__ == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'steerlab' has no attribute {name!r}")
