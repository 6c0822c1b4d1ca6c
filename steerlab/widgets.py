"""Sliders over plain functions: each widget wraps one function that tests call directly."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from steerlab.inference import generate
from steerlab.options import Scale
from steerlab.steering import steer

if TYPE_CHECKING:
    from steerlab.models import Model
    from steerlab.vectors import SteeringVector


def steered_text(model: Model, vector: SteeringVector, prompt: str, layer: int, coeff: float,
                 max_new_tokens: int = 40, chat: bool | None = None,
                 scale: Scale = "norm") -> str:
    """Greedy completion of ``prompt`` with the vector added after ``layer`` at ``coeff`` in
    ``scale`` units (default: fractions of the layer's typical residual norm, as in sweeps;
    coeff 0: the unsteered completion)."""
    with steer(model, vector, layers=layer, coeff=coeff, scale=scale):
        return generate(model, [prompt], max_new_tokens, chat=chat)[0].strip()


def steering_explorer(model: Model, vector: SteeringVector, prompt: str,
                      layer: int | None = None, coeff: float = 0.25,
                      coeff_range: tuple[float, float] = (-1.0, 1.0),
                      max_new_tokens: int = 40, chat: bool | None = None,
                      scale: Scale = "norm", step: float = 0.05) -> Any:
    """Layer and coefficient sliders that re-run :func:`steered_text` in place, showing
    "computing..." while they work; ``coeff`` in ``scale`` units (default: fractions of the
    layer's residual norm). Returns an ``ipywidgets.VBox``."""
    import ipywidgets as W

    layers = vector.layers
    layer_slider = W.SelectionSlider(options=layers, value=layer if layer in layers else
                                     layers[len(layers) // 2], description="layer",
                                     continuous_update=False)
    coeff_slider = W.FloatSlider(value=coeff, min=coeff_range[0], max=coeff_range[1],
                                 step=step, description="coeff",
                                 continuous_update=False)
    status = W.Label("")
    output = W.HTML("")
    output.add_class("steerlab-output")
    status.add_class("steerlab-status")

    def update(_: Any = None) -> None:
        status.value = "computing..."
        text = steered_text(model, vector, prompt, layer_slider.value, coeff_slider.value,
                            max_new_tokens, chat, scale)
        output.value = f"<pre style='white-space: pre-wrap'>{html.escape(text)}</pre>"
        status.value = (f"{model.name} | layer {layer_slider.value} | coeff "
                        f"{coeff_slider.value:+g} | scale {scale} | prompt: {prompt}")

    layer_slider.observe(update, names="value")
    coeff_slider.observe(update, names="value")
    update()
    return W.VBox([W.HBox([layer_slider, coeff_slider]), status, output])


def slider_figure(make_figure: Callable[..., Any], **sliders: Any) -> Any:
    """``ipywidgets.interactive`` over a function that returns a plotly figure (the same
    function the notebook and the tests call without a UI)."""
    import ipywidgets as W
    from IPython.display import display

    def show(**kwargs: Any) -> None:
        display(make_figure(**kwargs))

    return W.interactive(show, **sliders)
