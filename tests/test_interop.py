"""GGUF control vectors and the peers' vectors, checked against the peers themselves: the files
as llama.cpp's own reader (``gguf.GGUFReader``) sees them, repeng's ``export_gguf`` /
``import_gguf`` on the same vectors, and steering with an imported vector against repeng's
``ControlModel`` and steering-vectors' ``apply`` (tiny Llama; one SmolLM2 check, slow)."""

import json

import numpy as np

if not hasattr(np, "float_"):  # repeng 0.4.0 names np.float_ at import (gone in numpy 2)
    np.float_ = np.float64

import gguf  # noqa: E402
import pytest  # noqa: E402
import repeng  # noqa: E402
import steering_vectors  # noqa: E402
import torch  # noqa: E402
from conftest import PROMPTS, no_hooks, write_gguf  # noqa: E402

from steerlab.cache import cache_activations  # noqa: E402
from steerlab.errors import (  # noqa: E402
    InvalidVectorError,
    LayerError,
    OptionError,
    VectorMismatchError,
)
from steerlab.interop import from_gguf, llama_cpp_command, to_gguf  # noqa: E402
from steerlab.peers import (  # noqa: E402
    from_easysteer,
    from_repeng,
    from_steering_vectors,
    from_svec,
    to_easysteer,
    to_repeng,
    to_steering_vectors,
    to_svec,
)
from steerlab.steering import steer  # noqa: E402
from steerlab.vectors import SteeringVector, diff_of_means  # noqa: E402

FIELDS = ("model_id", "d_model", "site", "method", "prompt_hash", "seed", "meta", "version",
          "ref_norms")
PAIRS = [("I love this, it is great", "I hate this, it is awful"),
         ("What a wonderful day", "What a terrible day"),
         ("Yes, gladly", "No, never"), ("Happy and calm", "Sad and angry")]


def _vector(layers=(1, 2, 3), d_model=32, model_id="tiny-llama", draw=0, **kw):
    gen = torch.Generator().manual_seed(draw)
    return SteeringVector({l: torch.randn(d_model, generator=gen) for l in layers}, model_id,
                          d_model, **kw)


@pytest.fixture
def vec():
    return _vector(method="diff_means", prompt_hash="abc123", seed=7,
                   meta={"n_pos": 4, "chat": False, "notes": ["a", "b"]},
                   ref_norms={1: 2.5, 2: 3.25, 3: 4.0})


def _same(a: SteeringVector, b: SteeringVector, exact: bool = True) -> None:
    assert a.layers == b.layers
    for l in a.layers:
        if exact:
            assert torch.equal(a[l], b[l]), l
        else:
            torch.testing.assert_close(a[l], b[l], rtol=0, atol=4 * float(a[l].abs().max())
                                       * torch.finfo(torch.float32).eps)
    for f in FIELDS:
        assert getattr(a, f) == getattr(b, f), f


def _fields(path):
    reader = gguf.GGUFReader(path)
    return reader, {k: f.contents() for k, f in reader.fields.items()}


# --- steerlab -> GGUF -> steerlab -------------------------------------------------------------

@pytest.mark.parametrize("coeff", [1.0, -2.0, 0.5])
def test_gguf_round_trip_is_exact(vec, tmp_path, tiny_llama, coeff):
    """Tensors, layers and every provenance field come back as they were (the coefficient is
    baked in and divided back out: exact for powers of two)."""
    path = to_gguf(vec, tmp_path / "v.gguf", coeff=coeff)
    _same(vec, from_gguf(path))
    _same(vec, SteeringVector.from_gguf(path, tiny_llama))


def test_gguf_round_trip_any_coeff_and_scale(vec, tmp_path):
    """Other coefficients and scales come back within float32 rounding; unscale=False gives
    what llama.cpp adds, exactly what steer adds at that coefficient and scale."""
    for coeff, scale in ((0.3, "raw"), (2.7, "unit"), (-0.2, "norm")):
        path = to_gguf(vec, tmp_path / f"{scale}.gguf", coeff=coeff, scale=scale)
        _same(vec, from_gguf(path), exact=False)
        baked = from_gguf(path, unscale=False)
        for l in vec.layers:
            assert torch.equal(baked[l], vec.added(l, coeff, scale)[0])
        assert baked.meta == {**vec.meta, "coeff": coeff, "scale": scale}


def test_file_as_llama_cpp_reads_it(vec, tmp_path):
    """What llama.cpp's loader checks: only direction.<k> tensors, k >= 1, F32, 1-D of n_embd;
    direction.k holds coeff x layer k (block k's output); the conventional metadata."""
    vec.to_gguf(tmp_path / "v.gguf", coeff=1.5)
    reader, fields = _fields(tmp_path / "v.gguf")
    assert [t.name for t in reader.tensors] == ["direction.1", "direction.2", "direction.3"]
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(t.shape) == [32] and t.n_elements == 32
        k = int(t.name.split(".")[1])
        np.testing.assert_array_equal(t.data, (vec[k] * 1.5).numpy())
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "tiny-llama"
    assert fields["controlvector.layer_count"] == 3
    assert fields["steerlab.coeff"] == 1.5 and fields["steerlab.scale"] == "raw"
    assert fields["steerlab.method"] == "diff_means" and fields["steerlab.seed"] == 7


def test_write_is_atomic(vec, tmp_path):
    """A failed write leaves the old file whole and no temporary file behind."""
    path = to_gguf(vec, tmp_path / "v.gguf")
    before = path.read_bytes()
    with pytest.raises(InvalidVectorError, match="overflows"):
        to_gguf(vec, path, coeff=1e38)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.gguf"]


def test_layers_leave_layer_0_out_on_purpose(tmp_path, tiny_llama):
    """Layer 0 (which llama.cpp cannot steer) travels only when left out explicitly; the file
    then holds the other layers unchanged and says which were left out."""
    full = _vector(layers=(0, 1, 2, 3), meta={"step": 3})
    with pytest.raises(LayerError, match=r"direction.0.*layers=\[1, 2, 3\]"):
        to_gguf(full, tmp_path / "refused.gguf")
    path = full.to_gguf(tmp_path / "v.gguf", layers=[3, 1, 2])
    reader, fields = _fields(path)
    assert [t.name for t in reader.tensors] == ["direction.1", "direction.2", "direction.3"]
    assert fields["controlvector.layer_count"] == 3
    back = from_gguf(path, tiny_llama)
    assert back.layers == [1, 2, 3] and back.meta == {"step": 3, "dropped_layers": [0]}
    for l in back.layers:
        assert torch.equal(back[l], full[l])
    assert from_gguf(to_gguf(full, tmp_path / "two.gguf", layers=[2])).meta["dropped_layers"] \
        == [0, 1, 3]
    _same(full.only([1, 2, 3]), from_gguf(to_gguf(full.only([1, 2, 3]), tmp_path / "all.gguf",
                                                  layers=[1, 2, 3])))  # nothing left out
    for bad, message in (([0, 1], "includes 0"), ([1, 5], r"\[5\] are not in the vector"),
                         ([], "non-empty"), ([1, 1], "twice"), ("12", "non-empty"),
                         ([1.0], "ints")):
        with pytest.raises(LayerError, match=message):
            to_gguf(full, tmp_path / "bad.gguf", layers=bad)
    assert not (tmp_path / "bad.gguf").exists() and not (tmp_path / "refused.gguf").exists()


def test_llama_cpp_command():
    assert llama_cpp_command("v.gguf", "m.gguf") == "llama-cli -m m.gguf --control-vector v.gguf"
    assert llama_cpp_command("my v.gguf", scale=0.5) == \
        "llama-cli -m MODEL.gguf --control-vector-scaled 'my v.gguf:0.5'"
    assert llama_cpp_command("v.gguf", scale=2) == \
        "llama-cli -m MODEL.gguf --control-vector-scaled v.gguf:2"


# --- against repeng's own GGUF export and import --------------------------------------------

def test_same_file_as_repeng(vec, tmp_path):
    """steerlab's file and repeng's export of the same vector hold the same tensors under the
    same names, types and shapes, and the same conventional metadata."""
    vec.to_gguf(tmp_path / "ours.gguf")
    to_repeng(vec).export_gguf(tmp_path / "theirs.gguf")
    ours, our_fields = _fields(tmp_path / "ours.gguf")
    theirs, their_fields = _fields(tmp_path / "theirs.gguf")
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for a, b in zip(ours.tensors, theirs.tensors, strict=True):
        assert a.tensor_type == b.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(a.shape) == list(b.shape)
        np.testing.assert_array_equal(a.data, b.data)
    for key in ("general.architecture", "controlvector.model_hint",
                "controlvector.layer_count"):
        assert our_fields[key] == their_fields[key], key


def test_each_imports_the_others_file(vec, tmp_path, tiny_llama):
    vec.to_gguf(tmp_path / "ours.gguf")
    back = repeng.ControlVector.import_gguf(tmp_path / "ours.gguf")
    assert back.model_type == vec.model_id and sorted(back.directions) == vec.layers
    for l in vec.layers:
        np.testing.assert_array_equal(back.directions[l], vec[l].numpy())

    cv = repeng.ControlVector("llama", {l: vec[l].numpy() for l in vec.layers})
    cv.export_gguf(tmp_path / "theirs.gguf")
    got = from_gguf(tmp_path / "theirs.gguf", tiny_llama)
    assert got.method == "imported" and got.model_id == tiny_llama.hf_id
    assert got.meta["model_hint"] == "llama" and got.meta["file"] == str(tmp_path / "theirs.gguf")
    assert got.layers == vec.layers and all(torch.equal(got[l], vec[l]) for l in vec.layers)
    assert from_gguf(tmp_path / "theirs.gguf").model_id == "llama"  # no model: the hint


# --- repeng and steering-vectors objects ------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tiny_llama):
    """A repeng vector trained on the tiny Llama (PCA of paired differences)."""
    data = [repeng.DatasetEntry(positive=p, negative=n) for p, n in PAIRS]
    return repeng.ControlVector.train(tiny_llama.hf, tiny_llama.tokenizer, data,
                                      hidden_layers=[1, 2], batch_size=8)


def test_repeng_round_trip_is_exact(trained, tiny_llama):
    vec = from_repeng(trained, tiny_llama)
    assert vec.layers == [1, 2] and vec.site == "resid_post" and vec.method == "imported"
    assert vec.meta["model_type"] == "llama"
    back = to_repeng(vec)
    assert back == trained  # repeng's own equality: same model_type, keys and every value
    assert all(back.directions[l].dtype == np.float32 for l in back.directions)


def test_steering_vectors_round_trip_and_negative_layers(tiny_llama):
    sv = steering_vectors.SteeringVector({1: torch.randn(32), -1: torch.randn(32)})
    vec = from_steering_vectors(sv, tiny_llama)
    assert vec.layers == [1, 3]  # -1: the last block, as its hook list is indexed
    assert torch.equal(vec[3], sv.layer_activations[-1])
    back = to_steering_vectors(vec)
    assert back.layer_type == "decoder_block"
    assert torch.equal(back.layer_activations[1], sv.layer_activations[1])


def _logits(model):
    enc = model.encode(PROMPTS)
    with torch.no_grad():
        return model.backend("hf").forward(enc)[enc["attention_mask"].bool()]  # real tokens


def _check_repeng_equality(model, cv, coeff):
    plain = _logits(model)
    ctrl = repeng.ControlModel(model.hf, list(cv.directions))
    try:
        ctrl.set_control(cv, coeff)
        theirs = _logits(model)
    finally:
        ctrl.unwrap()
    with steer(model, from_repeng(cv, model), coeff=coeff):
        ours = _logits(model)
    assert (theirs - plain).abs().max() > 1e-2  # the steering does something
    torch.testing.assert_close(ours, theirs)
    assert no_hooks(model)


def _check_steering_vectors_equality(model, sv, multiplier):
    plain = _logits(model)
    with sv.apply(model.hf, multiplier=multiplier):
        theirs = _logits(model)
    with steer(model, from_steering_vectors(sv, model), coeff=multiplier):
        ours = _logits(model)
    assert (theirs - plain).abs().max() > 1e-2
    torch.testing.assert_close(ours, theirs)
    assert no_hooks(model)


def test_steering_equals_repeng_control_model(trained, tiny_llama):
    """steer() with the imported vector = repeng's ControlModel at the same coefficient (and
    sign): both add directions[k] to block k's output."""
    cv = repeng.ControlVector("llama", {l: 3.0 * d for l, d in trained.directions.items()})
    _check_repeng_equality(tiny_llama, cv, -2.0)


def test_steering_equals_steering_vectors_apply(tiny_llama):
    gen = torch.Generator().manual_seed(3)
    sv = steering_vectors.SteeringVector({1: torch.randn(32, generator=gen),
                                          -2: torch.randn(32, generator=gen)})
    _check_steering_vectors_equality(tiny_llama, sv, 1.5)


def test_peers_read_the_block_outputs_steerlab_caches(tiny_llama):
    """The peers' own extraction reads steerlab's resid_post k for their layer k: repeng's
    hidden_states[k + 1] and steering-vectors' decoder_block k (mean of differences)."""
    pos, neg = [p for p, _ in PAIRS], [n for _, n in PAIRS]
    ours = diff_of_means(cache_activations(tiny_llama, pos, layers=[1, 2], chat=False),
                         cache_activations(tiny_llama, neg, layers=[1, 2], chat=False))
    hiddens = repeng.extract.batched_get_hiddens(tiny_llama.hf, tiny_llama.tokenizer, pos,
                                                 [1, 2], batch_size=1)
    sv = steering_vectors.train_steering_vector(tiny_llama.hf, tiny_llama.tokenizer, PAIRS,
                                                layers=[1, 2], batch_size=1,
                                                show_progress=False)
    pos_acts = cache_activations(tiny_llama, pos, layers=[1, 2], chat=False)
    for l in (1, 2):
        torch.testing.assert_close(torch.from_numpy(hiddens[l]), pos_acts.at(l))
        torch.testing.assert_close(sv.layer_activations[l], ours[l])
    assert no_hooks(tiny_llama)


@pytest.mark.slow
def test_peers_equal_steer_on_smollm2(smollm):
    """The same two equalities on the real SmolLM2 (30 blocks, d_model 576)."""
    gen = torch.Generator().manual_seed(0)
    dirs = {8: 4.0 * torch.randn(576, generator=gen), 20: 4.0 * torch.randn(576, generator=gen)}
    _check_repeng_equality(smollm, repeng.ControlVector("llama", {
        l: d.numpy() for l, d in dirs.items()}), 1.5)
    _check_steering_vectors_equality(smollm, steering_vectors.SteeringVector(dirs), -1.5)


# --- clear errors -----------------------------------------------------------------------------

def test_export_errors(vec, tmp_path):
    with pytest.raises(LayerError, match="direction.0"):
        to_gguf(_vector(layers=(0, 1)), tmp_path / "a.gguf")
    other_site = _vector(site="resid_pre")
    with pytest.raises(VectorMismatchError, match="resid_pre"):
        to_gguf(other_site, tmp_path / "b.gguf")
    with pytest.raises(VectorMismatchError, match="resid_pre"):
        to_repeng(other_site)
    with pytest.raises(VectorMismatchError, match="resid_pre"):
        to_steering_vectors(other_site)
    for bad in (0.0, float("nan"), float("inf")):
        with pytest.raises(OptionError, match="coeff"):
            to_gguf(vec, tmp_path / "c.gguf", coeff=bad)
    with pytest.raises(OptionError, match="scale"):
        to_gguf(vec, tmp_path / "d.gguf", scale="huge")
    assert not list(tmp_path.iterdir())  # nothing written by a refused export


def test_import_errors(tmp_path, tiny_llama):
    _vector(d_model=16, model_id="narrow").to_gguf(tmp_path / "narrow.gguf")
    with pytest.raises(VectorMismatchError, match="width 16.*d_model 32"):
        from_gguf(tmp_path / "narrow.gguf", tiny_llama)
    _vector(layers=(2, 7)).to_gguf(tmp_path / "deep.gguf")
    with pytest.raises(LayerError, match=r"\[7\].*4 blocks"):
        from_gguf(tmp_path / "deep.gguf", tiny_llama)
    with pytest.raises(LayerError, match=r"\[7\]"):
        from_repeng(repeng.ControlVector("llama", {7: np.zeros(32, np.float32)}), tiny_llama)
    with pytest.raises(VectorMismatchError, match="width 16"):
        from_steering_vectors(steering_vectors.SteeringVector({1: torch.ones(16)}), tiny_llama)
    with pytest.raises(VectorMismatchError, match="layer_type 'mlp'"):
        from_steering_vectors(steering_vectors.SteeringVector({1: torch.ones(32)}, "mlp"),
                              tiny_llama)
    with pytest.raises(InvalidVectorError, match="NaN"):
        from_repeng(repeng.ControlVector("llama", {1: np.full(32, np.nan, np.float32)}),
                    tiny_llama)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(InvalidVectorError, match="not a readable GGUF"):
        from_gguf(tmp_path / "junk.gguf")
    with pytest.raises(FileNotFoundError):
        from_gguf(tmp_path / "missing.gguf")


def test_files_llama_cpp_would_refuse_are_refused(tmp_path):
    ones = np.ones(8, np.float32)
    cases = {"model.gguf": ("llama", {"direction.1": ones}, "not a control vector"),
             "name.gguf": ("controlvector", {"blk.1.attn": ones}, "direction.<k>"),
             "f16.gguf": ("controlvector", {"direction.1": ones.astype(np.float16)}, "F16"),
             "2d.gguf": ("controlvector", {"direction.1": np.ones((2, 4), np.float32)}, "1-D"),
             "widths.gguf": ("controlvector", {"direction.1": ones,
                                               "direction.2": np.ones(4, np.float32)},
                             "different lengths")}
    for name, (arch, tensors, message) in cases.items():
        write_gguf(tmp_path / name, arch, tensors)
        with pytest.raises(InvalidVectorError, match=message):
            from_gguf(tmp_path / name)
    write_gguf(tmp_path / "zero.gguf", "controlvector", {"direction.0": ones})
    with pytest.warns(UserWarning, match="direction.0"):
        assert from_gguf(tmp_path / "zero.gguf").layers == [0]


def test_export_command_leaves_out_layers(tmp_path, capsys):
    """The CLI exports a vector of every layer (a learned checkpoint's) with --layers, a
    range leaving out layer 0, which llama.cpp refuses; it prints today's llama.cpp syntax."""
    from steerlab.cli import main

    path = _vector(layers=(0, 1, 2, 3)).save(tmp_path / "v.safetensors")
    assert main(["export", "--vector", str(path), "--gguf", str(tmp_path / "v.gguf")]) == 2
    assert main(["export", "--vector", str(path), "--gguf", str(tmp_path / "v.gguf"),
                 "--layers", "1-3"]) == 0
    out = capsys.readouterr().out
    assert "layers [1, 2, 3]" in out and f"--control-vector-scaled {tmp_path}/v.gguf:2" in out
    back = from_gguf(tmp_path / "v.gguf")
    assert back.layers == [1, 2, 3] and back.meta["dropped_layers"] == [0]


def _logits_under(model, enc, handles):
    """The plain HF model's logits for ``enc`` with the peer's edit as ``handles`` (hooks
    registered by the caller), which are removed whatever happens."""
    try:
        with torch.no_grad():
            return model.hf(**enc).logits
    finally:
        for h in handles:
            h.remove()


# --- EasySteer's GGUF vectors -----------------------------------------------------------------

def _easysteer_file(path, dirs, component="hidden_states", method="diffmean"):
    """A GGUF as EasySteer's StatisticalControlVector.export_gguf writes it: the repeng keys
    plus controlvector.method and controlvector.easysteer (JSON; dict metadata encoded as
    {"mapping": [[k, v], ...]} so int keys survive)."""
    native = json.dumps({"version": 1, "component": component,
                         "metadata": {"mapping": [[k, 0.25 * k] for k in dirs]}},
                        separators=(",", ":"))
    writer = gguf.GGUFWriter(path, "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_string("controlvector.method", method)
    writer.add_uint32("controlvector.layer_count", len(dirs))
    writer.add_string("controlvector.easysteer", native)
    for layer, d in dirs.items():
        writer.add_tensor(f"direction.{layer}", d.numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, native


def test_easysteer_import_steers_like_its_direct_algorithm(tiny_llama, tmp_path):
    """direction.k is added to decoder layer k's complete output (EasySteer's direct algorithm,
    block 0 included): steer() with the imported vector equals that edit as a plain forward
    hook, row by row on a padded batch of prompts that decode differently."""
    gen = torch.Generator().manual_seed(11)
    dirs = {0: torch.randn(32, generator=gen), 2: torch.randn(32, generator=gen)}
    path, native = _easysteer_file(tmp_path / "v.gguf", dirs)
    vec = from_easysteer(path, tiny_llama)
    assert vec.site == "resid_post" and vec.layers == [0, 2] and vec.method == "imported"
    assert vec.meta["easysteer_method"] == "diffmean" and vec.meta["easysteer"] == native
    for k in dirs:
        assert torch.equal(vec[k], dirs[k])
    enc = tiny_llama.encode(PROMPTS[:3])

    def direct(k, scale):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            new = h + scale * dirs[k].to(h.dtype)
            return (new, *output[1:]) if isinstance(output, tuple) else new
        return hook

    with torch.no_grad():
        plain = tiny_llama.hf(**enc).logits
    theirs = _logits_under(tiny_llama, enc, [
        tiny_llama.layers[k].register_forward_hook(direct(k, -1.5)) for k in dirs])
    with torch.no_grad(), steer(tiny_llama, vec, coeff=-1.5):
        ours = tiny_llama.backend("hf").forward(enc)
    real = enc["attention_mask"].bool()
    assert (theirs - plain)[real].abs().max() > 1e-2
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)
    assert no_hooks(tiny_llama)


def test_easysteer_round_trip_keeps_their_metadata(tiny_llama, tmp_path):
    """to_easysteer writes what EasySteer's import_gguf reads (model hint, method, version-1
    JSON with component hidden_states, direction.k as F32); an imported file comes back with
    the same tensors and the same JSON; a steerlab vector gets component hidden_states."""
    gen = torch.Generator().manual_seed(12)
    dirs = {1: torch.randn(32, generator=gen), 3: torch.randn(32, generator=gen)}
    path, native = _easysteer_file(tmp_path / "v.gguf", dirs, method="pca")
    back = to_easysteer(from_easysteer(path, tiny_llama), tmp_path / "back.gguf")
    reader, fields = _fields(back)
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "llama"
    assert fields["controlvector.method"] == "pca"
    assert fields["controlvector.easysteer"] == native
    got = {int(t.name.split(".")[1]): np.array(t.data) for t in reader.tensors}
    assert got.keys() == dirs.keys()
    for k in dirs:
        assert np.array_equal(got[k], dirs[k].numpy())
    ours = to_easysteer(_vector(layers=(0, 2)), tmp_path / "ours.gguf")
    _, fields = _fields(ours)
    native = json.loads(fields["controlvector.easysteer"])
    assert native["version"] == 1 and native["component"] == "hidden_states"
    assert from_easysteer(ours, tiny_llama).layers == [0, 2]


def test_easysteer_errors(tiny_llama, tmp_path):
    heads = {1: torch.ones(32)}
    with pytest.raises(VectorMismatchError, match="attention_heads"):
        from_easysteer(_easysteer_file(tmp_path / "a.gguf", heads, "attention_heads")[0],
                       tiny_llama)
    with pytest.raises(VectorMismatchError, match="width 16"):
        from_easysteer(_easysteer_file(tmp_path / "w.gguf", {1: torch.ones(16)})[0],
                       tiny_llama)
    with pytest.raises(LayerError, match="block"):
        from_easysteer(_easysteer_file(tmp_path / "d.gguf", {9: torch.ones(32)})[0],
                       tiny_llama)
    with pytest.raises(VectorMismatchError, match="resid_post"):
        to_easysteer(_vector(site="resid_pre"), tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


# --- IBM activation-steering's .svec files -----------------------------------------------------

def _svec_file(path, dirs, model_type="llama"):
    """A .svec as activation-steering's SteeringVector.save writes it (JSON; keys are the
    layer ids, which json turns into strings)."""
    path.write_text(json.dumps({"model_type": model_type,
                                "directions": {k: v.tolist() for k, v in dirs.items()},
                                "explained_variances": {k: 0.5 for k in dirs}}))
    return path


def test_svec_round_trip_and_steering_at_the_block_input(tiny_llama, tmp_path):
    """directions[k] is added to block k's input (LeashLayer edits the hidden states before
    calling the layer): steer() with the imported vector equals that edit, written as a plain
    pre-hook, for one prompt; writing it back gives the same file content."""
    gen = torch.Generator().manual_seed(4)
    dirs = {1: torch.randn(32, generator=gen), 3: torch.randn(32, generator=gen)}
    vec = from_svec(_svec_file(tmp_path / "v.svec", dirs), tiny_llama)
    assert vec.site == "resid_pre" and vec.layers == [1, 3] and vec.method == "imported"
    assert vec.meta["source"] == "activation-steering"
    for k in dirs:
        torch.testing.assert_close(vec[k], dirs[k])
    enc = tiny_llama.encode(["What is 2 + 3?"])

    def leash(k, strength):
        def pre(module, args, kwargs):
            h = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            new = h + strength * dirs[k].to(h.dtype)
            if "hidden_states" in kwargs:
                return args, {**kwargs, "hidden_states": new}
            return (new, *args[1:]), kwargs
        return pre

    theirs = _logits_under(tiny_llama, enc, [
        tiny_llama.layers[k].register_forward_pre_hook(leash(k, 1.5), with_kwargs=True)
        for k in dirs])
    with torch.no_grad(), steer(tiny_llama, vec, coeff=1.5):
        ours = tiny_llama.backend("hf").forward(enc)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    back = json.loads(to_svec(vec, tmp_path / "back.svec").read_text())
    assert back["model_type"] == "llama"
    assert {int(k): v for k, v in back["directions"].items()} == {
        k: v.tolist() for k, v in dirs.items()}
    assert back["explained_variances"] == {"1": 0.5, "3": 0.5}


def test_svec_errors(tiny_llama, tmp_path):
    (tmp_path / "bad.svec").write_text("{not json")
    with pytest.raises(InvalidVectorError, match="not an activation-steering"):
        from_svec(tmp_path / "bad.svec", tiny_llama)
    with pytest.raises(VectorMismatchError, match="width 16"):
        from_svec(_svec_file(tmp_path / "n.svec", {1: torch.ones(16)}), tiny_llama)
    with pytest.raises(LayerError, match="block"):
        from_svec(_svec_file(tmp_path / "d.svec", {9: torch.ones(32)}), tiny_llama)
    with pytest.raises(VectorMismatchError, match="resid_pre"):
        to_svec(_vector(), tmp_path / "x.svec")
    assert not (tmp_path / "x.svec").exists()
