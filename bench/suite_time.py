"""The whole test suite's wall time on this machine, with the CPU it ran on.

Runs ``python -m pytest`` (extra arguments go to pytest) as the README's test command does,
streams its output, and appends one row to ``bench/results.jsonl``: wall seconds, the
passed / failed / skipped counts pytest reported, the CPU model, its bf16-relevant flags and
the dtype the default-dtype rule picks here (fp32 where bf16 would be emulated).

The row also records the Python and the versions of the packages that matter (``VERSIONED``)
and a label (``$STEERLAB_SUITE_LABEL``: ``locked`` by default; ``make test-oldest`` and
``make test-latest`` say ``oldest`` and ``latest``), so the docs can say which sets passed.

Usage: python bench/suite_time.py [pytest args]
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, record  # noqa: E402

#: the flags that decide how fast bf16 (and fp32) matmuls run on a CPU
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
#: the packages whose installed versions each row records (which set passed)
VERSIONED = ("torch", "transformers", "transformer-lens", "nnsight", "accelerate", "peft",
             "numpy", "pandas", "scipy", "scikit-learn", "datasets", "plotly", "kaleido",
             "ipywidgets", "ipykernel", "nbclient", "jupyterlab", "gguf", "safetensors")
SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected)")


def cpu_flags() -> list[str]:
    from steerlab.devices import cpu_flags as flags

    return [f for f in FLAGS if f in flags()]


def versions() -> dict[str, str]:
    """The installed versions of the packages whose ranges matter most (the set that ran)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def main(argv: list[str]) -> int:
    from steerlab.devices import default_dtype

    root = Path(__file__).resolve().parent.parent
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *argv], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        if SUMMARY.search(line) and " in " in line:
            last = line
    rc = proc.wait()
    seconds = time.perf_counter() - t0
    counts = {kind.rstrip("s") if kind.startswith("error") else kind: int(n)
              for n, kind in SUMMARY.findall(last)}
    row = record("suite_time", seconds=round(seconds, 1), exit_code=rc, args=argv,
                 flags=cpu_flags(), default_dtype=str(default_dtype("cpu")).split(".")[-1],
                 setup=machine(), python=platform.python_version(), versions=versions(),
                 label=os.environ.get("STEERLAB_SUITE_LABEL", "locked"), **counts)
    print(f"\nsuite: {seconds / 60:.1f} min, exit {rc}, {counts}, "
          f"flags {row['flags']}, default dtype {row['default_dtype']}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
