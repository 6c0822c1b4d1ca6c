"""The token view: projections equal a hand computation from cached activations, steering at
the read layer shifts every token by exactly coeff x |v|, the HTML escapes tokens, the figure
has one cell per token and row, and no hook is left behind."""

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from conftest import no_hooks

from steerlab.cache import cache_activations
from steerlab.errors import LayerError
from steerlab.steering import steer
from steerlab.tokenview import token_projection_figure, token_projections, token_view_html
from steerlab.vectors import SteeringVector

PROMPT = "2 < 3 & 'x' > \"y\""


@pytest.fixture(scope="module")
def vec(tiny_llama):
    gen = torch.Generator().manual_seed(0)
    return SteeringVector({l: torch.randn(32, generator=gen) for l in (1, 2)},
                          tiny_llama.hf_id, 32)


def _col(frame, name):
    return torch.tensor(frame[name].to_numpy())  # (T,) float64


def _by_hand(model, vector, layer, **steering):
    """(T,) projections from cache_activations and the vector, optionally under steer()."""
    unit = vector[layer].double() / vector[layer].double().norm()
    if steering:
        with steer(model, vector, **steering):
            acts = cache_activations(model, [PROMPT], [layer], reduction="none")
    else:
        acts = cache_activations(model, [PROMPT], [layer], reduction="none")
    return acts.at(layer)[0].double() @ unit


def test_projections_equal_a_hand_computation(tiny_llama, vec):
    frame = token_projections(tiny_llama, PROMPT, vec, layer=2, coeff=3.0, steer_layer=1)
    ids = tiny_llama.encode([PROMPT], padding_side="right")["input_ids"][0].tolist()
    assert list(frame.columns) == ["position", "token_id", "token", "unsteered", "steered"]
    assert frame["token_id"].tolist() == ids and frame["position"].tolist() == list(range(len(ids)))
    assert "".join(frame["token"]) == PROMPT  # a character tokenizer: the prompt itself
    torch.testing.assert_close(_col(frame, "unsteered"),
                               _by_hand(tiny_llama, vec, 2))
    torch.testing.assert_close(_col(frame, "steered"),
                               _by_hand(tiny_llama, vec, 2, layers=1, coeff=3.0))
    assert (frame["steered"] - frame["unsteered"]).abs().max() > 1e-2  # steering at 1 shows at 2
    assert frame.attrs == {"model": "tiny-llama", "layer": 2, "steer_layer": 1, "coeff": 3.0,
                           "scale": "raw", "site": "resid_post"}
    assert no_hooks(tiny_llama)


@pytest.mark.parametrize("coeff", [2.5, -4.0])
def test_steering_at_the_read_layer_shifts_by_coeff_norm(tiny_llama, vec, coeff):
    """(h + c v) . v/|v| = h . v/|v| + c |v| at every token (fp32 model, projection in fp64)."""
    frame = token_projections(tiny_llama, PROMPT, vec, layer=2, coeff=coeff)
    shift = _col(frame, "steered") - _col(frame, "unsteered")
    torch.testing.assert_close(shift, torch.full_like(shift, coeff * float(vec[2].double().norm())),
                               rtol=1e-6, atol=1e-5)


def test_raw_tensor_and_unit_scale(tiny_llama, vec):
    """A (d_model,) tensor works as the vector; scale='unit' shifts by coeff itself."""
    frame = token_projections(tiny_llama, PROMPT, vec[2], layer=2, coeff=1.5, scale="unit")
    shift = _col(frame, "steered") - _col(frame, "unsteered")
    torch.testing.assert_close(shift, torch.full_like(shift, 1.5), rtol=1e-6, atol=1e-5)


def test_html_escapes_tokens_and_names_model_and_layer(tiny_llama, vec):
    frame = token_projections(tiny_llama, PROMPT, vec, layer=2, coeff=3.0, steer_layer=1)
    page = token_view_html(frame)
    assert "&lt;" in page and "&gt;" in page and "&amp;" in page
    body = page.split("<table>", 1)[1]
    assert "< 3" not in body and "<span" in body  # no raw '<' from a token
    assert page.count("<span title=") == 2 * len(frame)  # both rows, every token
    assert "unsteered" in page and "steered" in page
    assert "tiny-llama" in page and "layer 2" in page and "steered at layer 1" in page
    value = f"{frame['steered'].iloc[0]:+.4g}"
    assert value in page  # the hover title holds the value
    assert "<b>" not in token_view_html(frame, title="<b>mine</b>")


def test_figure_is_a_two_row_heat_strip(tiny_llama, vec):
    frame = token_projections(tiny_llama, PROMPT, vec, layer=2, coeff=3.0, steer_layer=1)
    fig = token_projection_figure(frame)
    assert isinstance(fig, go.Figure) and len(fig.data) == 1
    heat = fig.data[0]
    assert isinstance(heat, go.Heatmap)
    assert len(heat.z) == 2 and all(len(row) == len(frame) for row in heat.z)
    assert list(heat.y) == ["unsteered", "steered"]
    assert list(heat.z[1]) == frame["steered"].tolist()
    assert heat.zmid == 0
    assert list(fig.layout.xaxis.ticktext)[2] == "&lt;"  # escaped for plotly's HTML labels
    assert "tiny-llama" in fig.layout.title.text and "layer 2" in fig.layout.title.text


def test_no_hooks_left_after_a_bad_argument(tiny_llama, vec):
    with pytest.raises(LayerError, match="steer_layer=2 comes after layer=1"):
        token_projections(tiny_llama, PROMPT, vec, layer=1, steer_layer=2)
    with pytest.raises(LayerError):
        token_projections(tiny_llama, PROMPT, vec, layer=2, steer_layer=0)  # not in the vector
    assert no_hooks(tiny_llama)


def test_one_huge_token_does_not_wash_out_the_rest():
    """The colour scale clips at the 95th percentile of |projection|: an attention-sink token
    200x larger than the rest leaves the others coloured; its hover keeps the real value."""
    frame = pd.DataFrame({"position": range(40), "token_id": range(40),
                          "token": [f"t{i}" for i in range(40)],
                          "unsteered": [200.0] + [-1.0] * 39, "steered": [200.0] + [1.0] * 39})
    page = token_view_html(frame)
    assert "+200" in page
    assert "rgb(247, 247, 247)" not in page  # no token left at the scale's white midpoint
    fig = token_projection_figure(frame)
    assert fig.data[0].zmax == pytest.approx(1.0) and fig.data[0].zmin == pytest.approx(-1.0)
