"""``make run`` from a fresh clone, timed: the whole run, each notebook, every spot check.

Clones this repository's committed HEAD into a new directory (``--clone DIR``; default a new
folder beside this checkout, so that ``../shared/data`` resolves there as it does here, removed
afterwards unless ``--keep``), runs ``make run`` there with nothing
set (every ``STEERLAB_*`` variable removed from the environment), streams its output, and
appends one row to ``bench/results.jsonl``:

* ``seconds``: the wall time of ``make run`` (set-up, the browser, the demo, the notebooks);
* ``notebooks``: the seconds of each notebook that finished, from the runner's ``done in N s``
  lines, and ``before_notebooks``: the seconds until the first one started (set-up, the
  browser, the demo);
* ``spot_checks_passed`` and ``spot_checks_failed``: how many spot checks of reused recordings
  passed, and the recordings whose check failed (a failure stops the run);
* ``clean``: whether ``git status`` afterwards shows nothing but ``figures/`` (``results/``
  as recorded), with the paths that changed otherwise;
* the CPU, its bf16-relevant flags and the dtype the default-dtype rule picks there.

Usage: python bench/run_time.py [--clone DIR] [--keep] [make target, default run]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, record  # noqa: E402
from suite_time import cpu_flags  # noqa: E402

DONE = re.compile(r"^\[\d+/\d+\] (\S+) done in (\d+) s$")
#: the runner's lines (``[3/9] 02 | spot check passed: ...``), not a traceback's echo of them
CHECK = re.compile(r"^\[\d+/\d+\] \S+ \| spot check (passed|FAILED): (\S+)")


def main(argv: list[str]) -> int:
    from steerlab.devices import default_dtype

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clone", type=Path, help="clone into this (new) directory")
    ap.add_argument("--keep", action="store_true", help="keep the clone afterwards")
    ap.add_argument("target", nargs="?", default="run", help="make target (default run)")
    args = ap.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    clone = args.clone or Path(tempfile.mkdtemp(prefix="steerlab-run-", dir=root.parent))
    if clone.exists() and any(clone.iterdir()):
        ap.error(f"--clone {clone} exists and is not empty: name a new directory.")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERLAB_")}
    notebooks: dict[str, int] = {}
    checks: dict[str, list[str]] = {"passed": [], "FAILED": []}
    t0 = time.perf_counter()
    first: float | None = None  # when the first notebook started
    proc = subprocess.Popen(["make", args.target], cwd=clone, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        if first is None and line.startswith("[1/"):
            first = time.perf_counter() - t0
        if m := DONE.match(line.strip()):
            notebooks[m.group(1)] = int(m.group(2))
        if m := CHECK.match(line.strip()):
            checks[m.group(1)].append(m.group(2))
    rc = proc.wait()
    seconds = time.perf_counter() - t0
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    changed = [s[3:] for s in status if not s[3:].startswith("figures/")]
    row = record("run_time", target=args.target, commit=head, seconds=round(seconds, 1),
                 exit_code=rc, notebooks=notebooks,
                 before_notebooks=None if first is None else round(first, 1),
                 spot_checks_passed=len(checks["passed"]), spot_checks_failed=checks["FAILED"],
                 clean=not changed,
                 changed=changed, flags=cpu_flags(),
                 default_dtype=str(default_dtype("cpu")).split(".")[-1], setup=machine())
    print(f"\nmake {args.target}: {seconds / 60:.1f} min, exit {rc}; notebooks "
          f"{sum(notebooks.values())} s; spot checks: {len(checks['passed'])} passed, "
          f"failed {checks['FAILED'] or 'none'}; git status "
          f"{'clean but figures/' if not changed else 'changed: ' + ', '.join(changed)}; "
          f"flags {row['flags']}, default dtype {row['default_dtype']}")
    if not (args.keep or args.clone):
        shutil.rmtree(clone, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
