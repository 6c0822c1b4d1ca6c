"""Where a model runs and in which dtype: the one device rule and the one default-dtype rule.

``resolve_device`` turns what a user wrote (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``,
``"mps"``, a ``torch.device``, or nothing: ``$STEERLAB_DEVICE``, else ``auto``) into a
``torch.device`` that exists on this machine; ``default_dtype`` picks the dtype that is fast
there. :func:`steerlab.models.load_model`, the CLI's ``--device`` and the test suite's
``--device`` all go through these two functions.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from steerlab.errors import DeviceError

#: what ``device=`` accepts besides an explicit ``cuda:N``
DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """The devices torch can use here, e.g. ``["cpu"]`` or ``["cpu", "cuda:0", "cuda:1"]``."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        found.append("mps")
    return found


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The ``torch.device`` to run on.

    Args:
        device: ``"auto"`` (CUDA when present, then MPS, then the CPU), ``"cpu"``, ``"cuda"``
            (the current CUDA device), ``"cuda:N"``, ``"mps"`` or a ``torch.device``;
            ``None`` reads ``$STEERLAB_DEVICE`` (default ``auto``).

    Raises:
        DeviceError: the name is not a device, or that device is not on this machine (the
            message lists the devices that are).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None:
        device = os.environ.get("STEERLAB_DEVICE") or "auto"
    if isinstance(device, str):
        name = device.strip().lower()
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", torch.cuda.current_device())
            return torch.device("mps") if _mps_available() else torch.device("cpu")
        try:
            dev = torch.device(name)
        except (RuntimeError, ValueError):
            raise DeviceError(f"Unknown device {device!r}: use one of "
                              f"{', '.join(DEVICE_NAMES)} or cuda:N (this machine has "
                              f"{', '.join(available_devices())}).") from None
    elif isinstance(device, torch.device):
        dev = device
    else:
        raise DeviceError(f"device must be a string or a torch.device, got {device!r}.")
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"Device {device!r} asked for, but this machine has no CUDA GPU "
                              f"(torch {torch.__version__}, devices: "
                              f"{', '.join(available_devices())}). Use device='auto' or 'cpu'.")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise DeviceError(f"Device {device!r} asked for, but this machine has "
                              f"{torch.cuda.device_count()} CUDA GPU(s): "
                              f"{', '.join(available_devices())}.")
        return torch.device("cuda", index)
    if dev.type == "mps":
        if not _mps_available():
            raise DeviceError(f"Device {device!r} asked for, but MPS is not available here "
                              f"(devices: {', '.join(available_devices())}).")
        return torch.device("mps")
    raise DeviceError(f"Unsupported device {device!r}: use one of {', '.join(DEVICE_NAMES)} "
                      f"or cuda:N (this machine has {', '.join(available_devices())}).")


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "flags:")
    return frozenset(line.split(":", 1)[1].split())


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bf16 matrix instructions (AMX or AVX512-BF16).

    On such CPUs a bf16 forward runs several times faster than fp32 (see bench/hardware.py);
    elsewhere bf16 is emulated and crawls.
    """
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def default_dtype(device: str | torch.device | None = "cpu") -> torch.dtype:
    """The fast dtype on ``device``; ``$STEERLAB_DTYPE`` overrides.

    CUDA: bf16 where the GPU supports it (Ampere and later), fp16 otherwise. MPS: fp16. CPU:
    bf16 where the CPU runs it fast (:func:`cpu_has_fast_bf16`), fp32 otherwise.
    """
    env = os.environ.get("STEERLAB_DTYPE")
    if env:
        return parse_dtype(env)
    dev = resolve_device(device)
    if dev.type == "cuda":
        with torch.cuda.device(dev):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dev.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32,
           "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16}


def dtype_name(dtype: torch.dtype) -> str:
    """The one name of a dtype in journals, keys and summaries: ``bfloat16``, ``float32``..."""
    return str(dtype).removeprefix("torch.")


def dtype_label(dtype: object) -> str:
    """The short name a figure or table label shows (``bf16``, ``fp32``, ``fp16``), for a
    dtype or any of its names (``torch.`` or not); anything else as ``str`` gives it."""
    given = dtype if isinstance(dtype, torch.dtype) else str(dtype).removeprefix("torch.")
    try:
        want = parse_dtype(given)
    except ValueError:  # not a dtype steerlab loads models in: shown as given
        return str(dtype)
    return next((k for k, d in _DTYPES.items() if d == want and len(k) == 4), str(dtype))


#: the dtypes steerlab loads models in, by :func:`dtype_name`
DTYPE_NAMES = tuple(dict.fromkeys(dtype_name(d) for d in _DTYPES.values()))


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}.") from None


def peak_gpu_bytes(device: torch.device | None) -> int | None:
    """Peak memory torch allocated on a CUDA ``device`` since the last reset
    (``torch.cuda.max_memory_allocated``); None on other devices."""
    if device is None or device.type != "cuda":
        return None
    return int(torch.cuda.max_memory_allocated(device))


def reset_peak_gpu(device: torch.device | None) -> None:
    """Start a new peak for :func:`peak_gpu_bytes` (nothing on other devices)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def synchronize(device: torch.device | None) -> None:
    """Wait for queued kernels on ``device`` (timings on a GPU need it; a no-op on the CPU)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device is not None and device.type == "mps":
        torch.mps.synchronize()
