"""The device rule, the per-device default dtype, load_model's device options, a model whose
blocks carry accelerate's device hooks (what ``device_map`` installs), and the package-wide
rule that a tensor which may live on a GPU is moved with ``.cpu()`` before ``.numpy()``."""

import re
from pathlib import Path

import pytest
import torch
from conftest import test_device, tiny_model

from steerlab import devices
from steerlab.devices import available_devices, default_dtype, resolve_device
from steerlab.errors import DeviceError
from steerlab.models import load_model


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv("STEERLAB_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    assert resolve_device() == resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_explicit_and_env_devices(monkeypatch):
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setenv("STEERLAB_DEVICE", "cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="2 CUDA GPU"):
        resolve_device("cuda:2")


def test_absent_or_unknown_devices_are_clear_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU.*devices: cpu"):
        resolve_device("cuda:1")
    with pytest.raises(DeviceError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(DeviceError, match="Unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(DeviceError, match="Unsupported device"):
        resolve_device("meta")
    with pytest.raises(DeviceError, match="string or a torch.device"):
        resolve_device(0)  # type: ignore[arg-type]
    assert available_devices() == ["cpu"]
    with pytest.raises(DeviceError, match="no CUDA GPU"):  # before anything is loaded
        load_model("smollm2-135m-instruct", device="cuda")


def test_default_dtype_per_device(monkeypatch):
    monkeypatch.delenv("STEERLAB_DTYPE", raising=False)
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)
    assert default_dtype("cpu") == torch.float32
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)
    assert default_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(devices, "resolve_device", lambda d=None: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "device", lambda d: _Null())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert default_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert default_dtype("cuda") == torch.float16
    monkeypatch.setenv("STEERLAB_DTYPE", "fp32")  # the override wins everywhere
    assert default_dtype("cuda") == torch.float32


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_device_map_options_are_checked_first(monkeypatch):
    with pytest.raises(DeviceError, match="not both"):
        load_model("smollm2-135m-instruct", device="cpu", device_map="auto")
    with pytest.raises(DeviceError, match="dict of module"):
        load_model("smollm2-135m-instruct", device_map=3)  # type: ignore[arg-type]
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "accelerate" else real(n, *a))
    with pytest.raises(DeviceError, match="needs accelerate"):
        load_model("smollm2-135m-instruct", device_map="auto")


def test_model_lives_on_the_test_device():
    m = tiny_model("llama")
    assert m.device == test_device()
    assert m.encode(["hi"])["input_ids"].device == test_device()


def test_blocks_with_accelerate_hooks_sweep_fast_and_keep_their_wrappers():
    """What ``device_map`` does to a model spread over devices: accelerate wraps each block's
    ``forward`` per instance (moving inputs to the block's device). The fast sweep's prefix
    replay must run through them and put them back, with the same results as a plain model."""
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    from steerlab.cells import evaluate_cells
    from steerlab.tasks import get_task

    plain, hooked = tiny_model("llama"), tiny_model("llama")
    for block in hooked.layers:
        add_hook_to_module(block, AlignDevicesHook(execution_device=test_device(),
                                                   io_same_device=True))
    wrappers = [b.__dict__.get("forward") for b in hooked.layers]
    assert all(w is not None for w in wrappers)
    task = get_task("memorisation-mc")
    vecs = [torch.randn(32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    a = evaluate_cells(plain, task, 2, vecs, n=12, progress=False)
    b = evaluate_cells(hooked, task, 2, vecs, n=12, progress=False)
    assert b[0].extra["shared_prefix"]
    assert [r.predictions for r in a] == [r.predictions for r in b]
    assert [b.__dict__.get("forward") for b in hooked.layers] == wrappers


PACKAGE = Path(__file__).parents[1] / "steerlab"
#: files whose device fixes are still to come (none)
NOT_YET: set[str] = set()
#: a ``.numpy()`` / ``.tolist()`` is fine after ``.cpu()`` on the same expression, on a name
#: that holds a numpy array or a Python object (``arr``, ``*_np``, ``*_ids``), or on a line
#: that says why with a ``# cpu:`` comment
_TO_HOST = re.compile(r"\.(numpy|tolist)\(\)")
_NUMPY_NAMES = re.compile(r"\b(arr|\w+_np|\w+_ids)(\[[^\]]*\])?\.(numpy|tolist)\(\)")


def host_copies_without_cpu(text: str) -> list[int]:
    """Line numbers of ``.numpy()`` / ``.tolist()`` calls not preceded by ``.cpu()`` (nor on a
    numpy-named value, nor marked ``# cpu:``)."""
    bad = []
    for n, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        if "# cpu:" in line:
            continue
        for m in _TO_HOST.finditer(code):
            before = code[:m.start()]
            if _ends_with_cpu(before):
                continue
            if any(x.end() == m.end() for x in _NUMPY_NAMES.finditer(code)):
                continue
            bad.append(n)
    return bad


def _ends_with_cpu(before: str) -> bool:
    """True when the expression the call is made on contains ``.cpu()`` (same bracket level)."""
    depth, i = 0, len(before) - 1
    while i >= 0:
        c = before[i]
        if c in ")]":
            depth += 1
        elif c in "([":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and (c.isspace() or c in ",=+-*/:"):
            break
        i -= 1
    return ".cpu()" in before[i + 1:]


def test_the_checker_finds_what_it_should():
    assert host_copies_without_cpu("x = h.numpy()\ny = h.cpu().numpy()") == [1]
    assert host_copies_without_cpu("x = f(h[0]).tolist()") == [1]
    assert host_copies_without_cpu("x = h.detach().float().cpu().numpy()") == []
    assert host_copies_without_cpu("x = h.tolist()  # cpu: built on the CPU above") == []
    assert host_copies_without_cpu("z = (a.cpu() + b.numpy())") == [1]
    assert host_copies_without_cpu("v = arr[:5].tolist()") == []


def test_no_host_copy_without_cpu_in_the_package():
    """A ``.numpy()`` on a CUDA tensor raises and a ``.tolist()`` syncs silently: every such
    call on a tensor that may live on the model's device says ``.cpu()`` first."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in NOT_YET and path.parent == PACKAGE:
            continue
        bad = host_copies_without_cpu(path.read_text())
        if bad:
            found[str(path.relative_to(PACKAGE.parent))] = bad
    assert not found, f".numpy()/.tolist() without .cpu() (or a '# cpu:' reason): {found}"


def test_one_dtype_name_and_one_short_label():
    """Journals and keys spell a dtype one way (``bfloat16``); figure labels another
    (``bf16``), from a dtype or any of its names; anything else is shown as given."""
    from steerlab.devices import DTYPE_NAMES, dtype_label, dtype_name

    assert [dtype_name(d) for d in (torch.bfloat16, torch.float32)] == ["bfloat16", "float32"]
    assert set(DTYPE_NAMES) == {"bfloat16", "float32", "float16"}
    for given, want in ((torch.bfloat16, "bf16"), ("float32", "fp32"), ("torch.float16", "fp16"),
                        ("fp32", "fp32"), (torch.int8, "torch.int8"), ("weird", "weird")):
        assert dtype_label(given) == want
