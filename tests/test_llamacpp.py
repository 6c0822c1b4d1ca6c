"""llama.cpp conformance: steerlab's GGUF control vectors, its learned vectors and its baked
checkpoints, run in real llama.cpp (llama-cpp-python, pinned and built by `make llama-cpp`),
agree with steerlab's own steering."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_gguf

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: `make llama-cpp` builds the pinned "
    "release (make test does)")

from steerlab.bake import bake  # noqa: E402
from steerlab.embedded import EMBEDDED  # noqa: E402
from steerlab.errors import InvalidVectorError, OptionError  # noqa: E402
from steerlab.extraction import extract_vector  # noqa: E402
from steerlab.interop import llama_cpp_command, to_gguf  # noqa: E402
from steerlab.llamacpp import (  # noqa: E402
    LLAMA_CPP_PYTHON,
    LlamaCpp,
    convert_to_gguf,
    evaluate_llama_cpp,
    read_control_vector,
    source_dir,
)
from steerlab.steering import steer  # noqa: E402
from steerlab.tasks import arithmetic_items, get_task  # noqa: E402
from steerlab.vectors import SteeringVector  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["The capital of France is", "Tom has 3 apples and buys 5 more, so he has",
           "Write a short poem about the sea.", "What is 17 times 3?"]
POS = ["I love this, it is great", "What a wonderful day", "Yes, gladly", "Happy and calm"]
NEG = ["I hate this, it is awful", "What a terrible day", "No, never", "Sad and angry"]
LAYERS = (5, 12, 20)
COEFF = 0.5  # in units of the layer's mean residual norm


def test_the_pinned_release_is_installed():
    from importlib.metadata import version

    assert version("llama-cpp-python") == LLAMA_CPP_PYTHON


@pytest.fixture(scope="module")
def cpp():
    with LlamaCpp(EMBEDDED["smollm2-135m-instruct"].locate()) as runner:
        yield runner


@pytest.fixture(scope="module")
def vec(smollm):
    return extract_vector(smollm, (POS, NEG), layers=list(LAYERS), chat=False)


def _ids(model, prompt):
    return model.encode([prompt], chat=False)["input_ids"][0].tolist()


def _hf_last(model, prompts):
    """(n_prompts, n_vocab) next-token logits of steerlab's model (with any active steering),
    one unpadded prompt at a time."""
    rows = []
    for p in prompts:
        enc = model.encode([p], chat=False)
        with torch.no_grad():
            rows.append(model.backend("hf").forward(enc)[0, -1].double().numpy())
    return np.stack(rows)


def _cpp_last(cpp, model, prompts):
    return np.stack([cpp.next_logits(_ids(model, p)).astype(np.float64) for p in prompts])


def _corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _shifted(vec, layer, by):
    """The layer's direction filed under another block (a wrong layer mapping)."""
    return SteeringVector({layer + by: vec[layer]}, vec.model_id, vec.d_model,
                          ref_norms={layer + by: vec.ref_norms[layer]})


def test_exported_vector_steers_llama_cpp_at_the_right_block(smollm, cpp, vec, tmp_path):
    """A vector exported at block L changes llama.cpp's next-token logits (Q4_1 weights) the
    way steer(positions="all") changes the fp32 HF model's; the same direction filed one block
    early or late does so visibly less, so the check tells layers apart."""
    hf_plain = _hf_last(smollm, PROMPTS)
    cpp.clear()
    cpp_plain = _cpp_last(cpp, smollm, PROMPTS)
    for layer in LAYERS:
        with steer(smollm, vec.only(layer), coeff=COEFF, scale="norm"):
            d_hf = _hf_last(smollm, PROMPTS) - hf_plain
        cpp.set_vector(to_gguf(vec.only(layer), tmp_path / f"v{layer}.gguf", COEFF, "norm"))
        right = _corr(_cpp_last(cpp, smollm, PROMPTS) - cpp_plain, d_hf)
        wrong = []
        for by in (-1, 1):
            off = _shifted(vec, layer, by)
            cpp.set_vector(to_gguf(off, tmp_path / f"v{layer}{by:+d}.gguf", COEFF, "norm"))
            wrong.append(_corr(_cpp_last(cpp, smollm, PROMPTS) - cpp_plain, d_hf))
        assert right > 0.95, (layer, right)
        assert right > max(wrong) + 0.03, (layer, right, wrong)
    cpp.clear()


def test_changing_vectors_in_one_context_leaves_nothing_behind(smollm, cpp, vec, tmp_path):
    """The two traps: after a 3-layer vector, a 1-layer vector steers exactly as it does in a
    fresh context (no upper layers left over, no prompt prefix reused from the old vector)."""
    ids = _ids(smollm, PROMPTS[1])
    three = to_gguf(vec, tmp_path / "three.gguf", COEFF, "norm")
    one = to_gguf(vec.only(5), tmp_path / "one.gguf", COEFF, "norm")
    cpp.set_vector(three)
    cpp.next_logits(ids)
    cpp.set_vector(one)
    after = cpp.next_logits(ids)
    with LlamaCpp(cpp.path) as fresh:
        fresh.set_vector(one)
        np.testing.assert_array_equal(after, fresh.next_logits(ids))
        cpp.clear()
        fresh.clear()
        np.testing.assert_array_equal(cpp.next_logits(ids), fresh.next_logits(ids))


def test_decode_refuses_what_does_not_fit(cpp):
    with pytest.raises(OptionError, match="context of 1024"):
        cpp.decode(list(range(1000)), 32, set())
    with pytest.raises(OptionError, match="max_new_tokens"):
        cpp.decode([1, 2], 0, set())
    with pytest.raises(OptionError, match="1 to 1024"):
        cpp.next_logits([])


def test_read_control_vector_refuses_what_llama_cpp_refuses(tmp_path):
    def write(name, tensors):
        return write_gguf(tmp_path / name, "controlvector", tensors)

    one = np.ones(4, dtype=np.float32)
    n, buf = read_control_vector(write("ok.gguf", {"direction.2": one, "direction.3": 2 * one}),
                                 strength=0.5)
    assert n == 4 and buf.tolist() == [0.0] * 4 + [0.5] * 4 + [1.0] * 4
    for bad, tensors in [("zero", {"direction.0": one}), ("name", {"bias.1": one}),
                         ("f16", {"direction.1": one.astype(np.float16)})]:
        with pytest.raises(InvalidVectorError):
            read_control_vector(write(f"{bad}.gguf", tensors))


def test_printed_command_parses_in_the_pinned_llama_cpp():
    """The command steerlab prints uses the flags and the FILE:SCALE form that the pinned
    llama.cpp's argument parser (common/arg.cpp) defines."""
    arg = (source_dir() / "common" / "arg.cpp").read_text()
    assert re.search(r'\{"--control-vector"\},\s*"FNAME"', arg)
    scaled = re.search(r'\{"--control-vector-scaled"\},\s*"([^"]+)"', arg)
    assert scaled and scaled.group(1).startswith("FNAME:SCALE")
    assert 'string_split<std::string>(item, \':\')' in arg
    assert llama_cpp_command("v.gguf", "m.gguf") == "llama-cli -m m.gguf --control-vector v.gguf"
    assert llama_cpp_command("v.gguf", "m.gguf", scale=0.5).endswith(
        "--control-vector-scaled v.gguf:0.5")


def test_learned_vectors_carry_to_llama_cpp(smollm, cpp):
    """The recorded learned vectors (layers 1-29, the exported file) on the first 40 arithmetic
    test items in llama.cpp: the gain over llama.cpp's own base carries, and the per-item
    verdicts agree with steerlab's recorded evaluation of the same file (bf16) on most items."""
    run = REPO / "results" / "train_smollm2_arithmetic"
    rows = {r["condition"]: r for r in map(json.loads, (run / "evaluations.jsonl").open())}
    recorded = np.array([c == "1" for c in rows["layers 1-29 (GGUF file)"]["correct"]])[:40]
    items, task = arithmetic_items("test")[:40], get_task("arithmetic")
    cpp.clear()
    base, _, _ = evaluate_llama_cpp(cpp, smollm, task, items, progress=False)
    cpp.set_vector(run / "learned_vectors.gguf")
    steered, _, _ = evaluate_llama_cpp(cpp, smollm, task, items, progress=False)
    cpp.clear()
    assert steered.mean() - base.mean() >= 0.15, (base.mean(), steered.mean())
    assert (steered == recorded).mean() >= 0.85, (steered.mean(), recorded.mean())


def test_baked_checkpoint_converted_by_llama_cpp_steers_like_steer(smollm, vec, tmp_path,
                                                                  request):
    """A checkpoint with the vector baked in as MLP output biases, converted to GGUF (f32) by
    the pinned llama.cpp's own convert_hf_to_gguf.py, gives llama.cpp (no control vector) the
    next-token logits and greedy tokens of steer() on the fp32 HF model."""
    baked = bake(smollm, vec, tmp_path / "baked", coeff=COEFF, scale="norm")
    model_file = convert_to_gguf(baked, tmp_path / "baked.gguf", "f32")
    cpp = LlamaCpp(model_file)
    request.addfinalizer(cpp.close)
    with steer(smollm, vec, coeff=COEFF, scale="norm"):
        ours = _hf_last(smollm, PROMPTS)
        tokens = [smollm.hf.generate(**smollm.encode([p], chat=False), max_new_tokens=12,
                                     do_sample=False)[0, len(_ids(smollm, p)):].tolist()
                  for p in PROMPTS]
    theirs = _cpp_last(cpp, smollm, PROMPTS)
    plain = _hf_last(smollm, PROMPTS)
    assert np.abs(ours - plain).max() > 1.0  # the vector does change the logits
    np.testing.assert_allclose(theirs, ours, atol=2e-2, rtol=0)
    stop = set(smollm.eos_ids)
    cut = [ts[:next((i for i, t in enumerate(ts) if t in stop), len(ts))] for ts in tokens]
    assert [cpp.decode(_ids(smollm, p), 12, stop) for p in PROMPTS] == cut
