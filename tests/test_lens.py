"""Logit lens of vectors, token clustering, layer cosines and foreign vector files."""

from __future__ import annotations

import pytest
import torch

from steerlab.errors import InvalidVectorError, LayerError, OptionError, VectorMismatchError
from steerlab.lens import (
    cluster_table,
    cluster_tokens,
    from_state_dict,
    layer_cosines,
    logit_lens,
    token_cosines,
    unembedding,
)
from steerlab.vectors import SteeringVector
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama")


def _vec(model, vectors):
    return SteeringVector(vectors, model.hf_id, model.d_model)


def test_lens_finds_the_token_whose_row_the_vector_is(tiny):
    w = unembedding(tiny)
    a = tiny.tokenizer.convert_tokens_to_ids("a")
    z = tiny.tokenizer.convert_tokens_to_ids("z")
    vec = _vec(tiny, {0: w[a] * 3.0, 2: -w[z]})
    lens = logit_lens(vec, tiny, k=5)
    top0 = lens[(lens.layer == 0) & (lens.side == "top")]
    assert top0.iloc[0].token == "a" and top0.iloc[0].cosine == pytest.approx(1.0, abs=1e-5)
    assert list(top0["rank"]) == [1, 2, 3, 4, 5]
    assert top0.cosine.is_monotonic_decreasing
    bottom2 = lens[(lens.layer == 2) & (lens.side == "bottom")]
    assert bottom2.iloc[0].token == "z" and bottom2.iloc[0].cosine == pytest.approx(-1.0, abs=1e-5)
    # cosines agree with a direct computation
    cos = token_cosines(tiny, w[a])
    ref = torch.nn.functional.cosine_similarity(w, w[a].unsqueeze(0), dim=1)
    torch.testing.assert_close(cos, ref, atol=1e-5, rtol=1e-5)


def test_lens_skips_special_tokens(tiny):
    w = unembedding(tiny)
    eos = tiny.tokenizer.eos_token_id
    lens = logit_lens(torch.tensor(w[eos].tolist()), tiny, k=3)
    assert eos not in set(lens.token_id)
    assert eos in set(logit_lens(w[eos].clone(), tiny, k=3, skip_special=False).token_id)


def test_lens_skips_added_special_tokens_missing_from_all_special_ids():
    """Tokens added as special (SmolLM2's ``<repo_name>``, Gemma's ``<start_of_turn>``) are not
    all in ``all_special_ids``; the lens skips them anyway, but keeps non-special added tokens
    (Gemma's newline runs and HTML tags are ordinary text)."""
    from tokenizers import AddedToken

    from steerlab.lens import _excluded

    model = tiny_model("llama")  # its own copy: the tokenizer is changed below
    tok = model.tokenizer
    tok.add_tokens([AddedToken("<repo_name>", special=True),
                    AddedToken("<jupyter_code>", special=True),
                    AddedToken("\n\n", special=False)])
    repo, code, nl = tok.convert_tokens_to_ids(["<repo_name>", "<jupyter_code>", "\n\n"])
    assert repo not in tok.all_special_ids and code not in tok.all_special_ids
    bad = _excluded(model)
    assert bad[repo] and bad[code] and not bad[nl]
    assert bad[tok.eos_token_id] and not bad[tok.convert_tokens_to_ids("a")]
    w = unembedding(model)
    assert repo not in set(logit_lens(w[repo].clone(), model, k=3).token_id)


@pytest.mark.slow
def test_lens_skips_every_smollm2_added_token(smollm):
    from steerlab.lens import _excluded

    tok = smollm.tokenizer
    added = {i for i, t in tok.added_tokens_decoder.items() if t.special}
    ids = tok.convert_tokens_to_ids(["<repo_name>", "<jupyter_code>", "<jupyter_start>",
                                     "<file_sep>", "<empty_output>"])
    assert set(ids) <= added and not set(ids) & set(tok.all_special_ids)
    bad = _excluded(smollm)
    assert all(bad[i] for i in added | set(tok.all_special_ids))
    assert int(bad.sum()) == len(added)  # the 17 added tokens (ids 0-16), nothing else
    assert not bad[tok.convert_tokens_to_ids("the")]


def test_lens_rejects_bad_vectors(tiny):
    with pytest.raises(VectorMismatchError, match="width"):
        logit_lens(torch.ones(7), tiny)
    with pytest.raises(InvalidVectorError, match="zero or holds NaN"):
        logit_lens(torch.zeros(tiny.d_model), tiny)
    with pytest.raises(OptionError, match="k must be"):
        logit_lens(torch.ones(tiny.d_model), tiny, k=0)
    with pytest.raises(OptionError, match="has 128 tokens"):
        logit_lens(torch.ones(tiny.d_model), tiny, k=500)


def _two_theme_model():
    """A tiny model whose unembedding rows for digits and for letters a-e form two clear
    groups (each: a shared direction plus small noise)."""
    model = tiny_model("llama", seed=1)
    tok = model.tokenizer
    g = torch.Generator().manual_seed(0)
    base = torch.randn(2, model.d_model, generator=g)
    w = model.hf.get_output_embeddings().weight
    groups = {0: list("0123456789"), 1: list("abcde")}
    with torch.no_grad():
        for gi, chars in groups.items():
            for c in chars:
                w[tok.convert_tokens_to_ids(c)] = base[gi] + 0.1 * torch.randn(
                    model.d_model, generator=g)
    return model, groups


def test_clusters_recover_planted_themes():
    model, groups = _two_theme_model()
    ids = [model.tokenizer.convert_tokens_to_ids(c) for c in groups[0] + groups[1]]
    table = cluster_tokens(model, ids)  # k chosen by silhouette
    assert len(table) == 2
    found = sorted(sorted(t) for t in table.tokens)
    assert found == sorted(sorted(g) for g in groups.values())
    assert table.iloc[0]["size"] == 10 and table.iloc[0].cohesion > 0.9
    assert table.iloc[0].representative.count("|") == 4  # five central tokens name it


def test_cluster_table_has_one_row_per_layer_and_cluster():
    model, groups = _two_theme_model()
    w = unembedding(model)
    digit = w[model.tokenizer.convert_tokens_to_ids("5")]
    vec = _vec(model, {1: digit, 3: digit})
    table = cluster_table(vec, model, k=12, n_clusters=3)
    assert set(table.layer) == {1, 3}
    assert (table.groupby("layer").size() == 3).all()
    assert set(table.columns) >= {"layer", "cluster", "size", "representative", "tokens"}
    with pytest.raises(OptionError, match="at least 2"):
        cluster_tokens(model, [5])


def test_layer_cosines(tiny):
    v = torch.randn(tiny.d_model)
    a = _vec(tiny, {0: v, 1: v})
    b = _vec(tiny, {0: 2 * v, 1: -v, 3: v})
    table = layer_cosines(a, b)
    assert list(table.layer) == [0, 1]
    assert table.cosine.tolist() == pytest.approx([1.0, -1.0], abs=1e-6)
    with pytest.raises(VectorMismatchError, match="No layer in common"):
        layer_cosines(a, _vec(tiny, {2: v}))


def test_state_dict_import_maps_layers_by_name(tiny, tmp_path):
    d = tiny.d_model
    sd = {"model.layers.0.steering_vector": torch.ones(d),
          "base_model.model.layers.3.mlp.steering_vector": torch.full((d,), 2.0),
          "model.embed_tokens.weight": torch.zeros(3, 3)}
    vec = from_state_dict(sd, tiny)
    assert vec.layers == [0, 3] and vec.method == "learned"
    assert torch.equal(vec[3], torch.full((d,), 2.0))
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "v.safetensors"))
    assert from_state_dict(tmp_path / "v.safetensors", tiny).layers == [0, 3]
    torch.save(sd, tmp_path / "v.pt")
    assert from_state_dict(tmp_path / "v.pt", tiny).layers == [0, 3]


def test_state_dict_import_errors(tiny, tmp_path):
    d = tiny.d_model
    with pytest.raises(VectorMismatchError, match="width 7"):
        from_state_dict({"model.layers.0.steering_vector": torch.ones(7)}, tiny)
    with pytest.raises(LayerError, match="out of range"):
        from_state_dict({"model.layers.40.steering_vector": torch.ones(d)}, tiny)
    with pytest.raises(InvalidVectorError, match="No key ends in"):
        from_state_dict({"model.layers.0.bias": torch.ones(d)}, tiny)
    with pytest.raises(InvalidVectorError, match="names no layer"):
        from_state_dict({"steering_vector": torch.ones(d)}, tiny)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a tensor file")
    with pytest.raises(InvalidVectorError, match="corrupt"):
        from_state_dict(bad, tiny)
    with pytest.raises(FileNotFoundError):
        from_state_dict(tmp_path / "missing.pt", tiny)
