"""Loading: first load of each embedded model (GGUF conversion into an empty temporary
``$STEERLAB_CACHE``, then load) and cached load (model + tokenizer, best of 3), each in a
fresh process; the one-time import of transformers' loading machinery is timed apart.

Usage: python bench/loading.py [--quick] [--models a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _common import env_setup, machine, record, table
from foundation import _LOAD_SNIPPET as _SNIPPET  # same timing snippet as the foundation bench

PART = "loading"



def timed_load(name: str, cache: str | None) -> dict:
    env = dict(os.environ)
    if cache is not None:
        env["STEERLAB_CACHE"] = cache
    out = subprocess.run([sys.executable, "-c", _SNIPPET.format(name=name)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", default=None,
                   help="default: smollm2-135m-instruct,gemma-3-270m (SmolLM2 only with --quick)")
    args = p.parse_args()
    env_setup()
    names = (args.models or ("smollm2-135m-instruct" if args.quick else
                             "smollm2-135m-instruct,gemma-3-270m")).split(",")
    print(f"== loading ({machine()})")
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix="steerlab-bench-cache-") as tmp:
            first = timed_load(name, tmp)
            cached = min((timed_load(name, tmp) for _ in range(3)), key=lambda r: r["load_s"])
        record(PART, figure="first_load_s", model=name, value=first["load_s"],
               import_s=first["import_s"])
        record(PART, figure="cached_load_s", model=name, value=cached["load_s"],
               import_s=cached["import_s"])
        rows.append([name, first["load_s"], cached["load_s"], cached["import_s"]])
    print(table(["model", "first load s (GGUF conversion)", "cached load s (best of 3)",
                 "imports s (not counted)"], rows))


if __name__ == "__main__":
    main()
