"""steerlab: a Jupyter-first workbench for activation steering of language models.

The public API (imported lazily, so ``import steerlab`` stays cheap; no module shares its
name with a public function, so ``steerlab.sweep`` is the function, ``steerlab.sweeps`` its
module)::

    from steerlab import load_model, cache_activations, diff_of_means, steer, generate
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_model": "steerlab.models",
    "Model": "steerlab.models",
    "cache_activations": "steerlab.cache",
    "cache_sites": "steerlab.cache",
    "Activations": "steerlab.activations",
    "SteeringVector": "steerlab.vectors",
    "diff_of_means": "steerlab.vectors",
    "random_like": "steerlab.vectors",
    "shuffled_diff_of_means": "steerlab.vectors",
    "steer": "steerlab.steering",
    "add_steering": "steerlab.steering",
    "hong_projection": "steerlab.steering",
    "match_norms": "steerlab.vectors",
    "extract_vector": "steerlab.extraction",
    "reference_norms": "steerlab.extraction",
    "SweepConfig": "steerlab.sweep_plan",
    "to_gguf": "steerlab.interop",
    "from_gguf": "steerlab.interop",
    "from_repeng": "steerlab.peers",
    "from_steering_vectors": "steerlab.peers",
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
    "evaluate": "steerlab.evaluation",
    "get_task": "steerlab.tasks",
    "sweep": "steerlab.sweeps",
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


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'steerlab' has no attribute {name!r}")
