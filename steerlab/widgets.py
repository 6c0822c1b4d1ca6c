"""Sliders over plain functions: each widget wraps one function that tests call directly."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from steerlab.inference import generate
from steerlab.options import COMPARE_SCALE, Scale
from steerlab.steering import steer

if TYPE_CHECKING:
    from steerlab.models import Model
    from steerlab.vectors import SteeringVector


def steered_text(model: Model, vector: SteeringVector, prompt: str, layer: int, coeff: float,
                 max_new_tokens: int = 40, chat: bool | None = None,
                 scale: Scale = COMPARE_SCALE) -> str:
    """Greedy completion of ``prompt`` with the vector added after ``layer`` at ``coeff`` in
    ``scale`` units (default: fractions of the layer's typical residual norm, as in sweeps;
    coeff 0: the unsteered completion)."""
    with steer(model, vector, layers=layer, coeff=coeff, scale=scale):
        return generate(model, [prompt], max_new_tokens, chat=chat)[0].strip()


def steering_explorer(model: Model, vector: SteeringVector, prompt: str,
                      layer: int | None = None, coeff: float = 0.25,
                      coeff_range: tuple[float, float] = (-1.0, 1.0),
                      max_new_tokens: int = 40, chat: bool | None = None,
                      scale: Scale = COMPARE_SCALE, step: float = 0.05) -> Any:
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


class SliderFigure:
    """Controls over a plotly figure, shown as the controls' widget and the figure as a plain
    output beneath it; moving a control redraws the figure in place (an IPython display
    handle's ``update_display_data``).

    Unlike ``ipywidgets.interactive`` there is no ``Output`` widget: a headless runner
    (``jupyter nbconvert --execute``, papermill, nbclient) mimics an ``Output`` widget by
    sending its outputs back to the kernel on the shell channel while it waits there for the
    cell's reply, and that send can hide the reply until the cell timeout runs out
    (``bench/nbclient_stall_repro.py``). The figure is also an ordinary output of the cell, so
    an executed notebook shows it without the widget state.
    """

    def __init__(self, make_figure: Callable[..., Any], **sliders: Any) -> None:
        import ipywidgets as W

        self.make_figure = make_figure
        self.controls: dict[str, Any] = {}
        for name, abbrev in sliders.items():
            control = W.interactive.widget_from_abbrev(abbrev)
            if control is None:
                raise ValueError(f"slider_figure: {name}={abbrev!r} cannot be turned into a "
                                 "control (give an ipywidgets control, a tuple or a list)")
            if isinstance(control, W.Widget) and not getattr(control, "description", "x"):
                control.description = name
            self.controls[name] = control
        self.box = W.VBox([c for c in self.controls.values() if isinstance(c, W.DOMWidget)],
                          _dom_classes=["widget-interact"])
        self.handles: list[Any] = []
        self.shown = _mimebundle(self.figure())  # made here: an error fails the cell
        for control in self.controls.values():
            if isinstance(control, W.Widget):
                control.observe(self._redraw, names="value")

    def values(self) -> dict[str, Any]:
        """The controls' current values, by argument name."""
        return {name: getattr(c, "get_interact_value", lambda c=c: c.value)()
                for name, c in self.controls.items()}

    def figure(self) -> Any:
        """The figure for the controls' current values."""
        return self.make_figure(**self.values())

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)
        data, metadata = self.shown
        self.handles.append(display(data, raw=True, metadata=metadata, display_id=True))

    def _redraw(self, _: Any = None) -> None:
        # "computing..." first: besides saying so, it makes JupyterLab replace the figure's
        # renderer, and jupyterlab-plotly's renderer ignores a new figure once it has drawn one
        for handle in self.handles:
            handle.update({"text/plain": "computing..."}, raw=True)
        try:
            data, metadata = _mimebundle(self.figure())
        except Exception:  # noqa: BLE001 - shown where the figure was, as interactive does
            import traceback

            data, metadata = {"text/plain": traceback.format_exc()}, {}
        self.shown = data, metadata
        for handle in self.handles:
            handle.update(data, raw=True, metadata=metadata)


def _mimebundle(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data, metadata)`` of ``obj`` for a raw display: a plotly figure's own
    ``_ipython_display_`` would show it without the display id that later redraws need."""
    if hasattr(obj, "_repr_mimebundle_"):
        got = obj._repr_mimebundle_()
        return got if isinstance(got, tuple) else (got, {})
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return {"text/plain": repr(obj)}, {}
    data, metadata = shell.display_formatter.format(obj)
    return data, metadata


def slider_figure(make_figure: Callable[..., Any], **sliders: Any) -> SliderFigure:
    """Controls (ipywidgets, or ``interactive``'s abbreviations) over a function that returns a
    plotly figure (the same function the notebook and the tests call without a UI); see
    :class:`SliderFigure`."""
    return SliderFigure(make_figure, **sliders)
