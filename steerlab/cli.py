"""The ``steerlab`` command: thin wrappers over the library functions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from steerlab.commands import (
    DEMO_COEFFS,
    DEMO_PROMPTS,
    SCALE_WORDS,
    cmd_bake,
    cmd_demo,
    cmd_eval,
    cmd_export,
    cmd_extract,
    cmd_import,
    cmd_models,
    cmd_notebooks,
    cmd_reliability,
    cmd_replicate,
    cmd_report,
    cmd_sweep,
    cmd_tasks,
    cmd_teach,
    cmd_train,
)
from steerlab.errors import SteerlabError
from steerlab.options import BACKENDS, METHODS, MODES, REDUCTIONS, SCALES, SCOPES, SCORINGS


def _ints(text: str) -> list[int]:
    """``3,6,9`` or ranges ``1-29`` (both ends included), or both: ``0,5-7``."""
    out: list[int] = []
    try:
        for part in (x.strip() for x in text.split(",")):
            if not part:
                continue
            lo, dash, hi = part.partition("-")
            out += list(range(int(lo), int(hi) + 1)) if dash and lo else [int(part)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 3,6,9 or a range like 1-29, "
                                         f"got {text!r}") from None
    return out


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0,4, got {text!r}") from None


def _model_parent(backend: bool = True) -> argparse.ArgumentParser:
    """The options every command that loads a model shares."""
    from steerlab.embedded import DEFAULT_MODEL

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--model", default=DEFAULT_MODEL, help="embedded name, hub id or directory")
    p.add_argument("--dtype", default=None, help="bf16, fp16 or fp32 (default: the device's fast "
                   "one: bf16 on GPUs and fast-bf16 CPUs)")
    p.add_argument("--device", default=None, help="auto (CUDA, then MPS, then CPU), cpu, cuda, "
                   "cuda:1 or mps (default: $STEERLAB_DEVICE or auto)")
    if backend:
        p.add_argument("--backend", default="hf", choices=BACKENDS,
                       help="which library's hooks (same numbers; hf is the fastest)")
    return p


def _scale_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--scale", default=default, choices=SCALES,
                   help="coeff units: " + "; ".join(f"{k}: {v}" for k, v in SCALE_WORDS.items()))


def _add_extract_args(p: argparse.ArgumentParser, default_n: int | None) -> None:
    p.add_argument("--positive", default="reasoning", help="set the vector points towards")
    p.add_argument("--negative", default="memorisation", help="set it points away from")
    p.add_argument("--n", type=int, default=default_n, help="prompts per set (default: all)")
    p.add_argument("--reduction", default="last", choices=[r for r in REDUCTIONS if r != "none"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--method", default="diff_means", choices=METHODS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--normalize", action="store_true", help="unit-normalise each layer")
    p.add_argument("--no-chat", dest="chat", action="store_false", default=None,
                   help="do not apply the chat template (default: chat models get theirs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steerlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    with_model, model_only = _model_parent(), _model_parent(backend=False)

    p = sub.add_parser("models", help="list the embedded models and whether each is converted")
    p.set_defaults(fn=cmd_models)

    p = sub.add_parser("extract", help="build a difference-of-means vector and save it",
                       parents=[with_model])
    _add_extract_args(p, default_n=None)
    p.add_argument("--layers", type=_ints, default=None, help="e.g. 3,6,9 (default: all)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.set_defaults(fn=cmd_extract)

    p = sub.add_parser("export", help="write a saved vector as a llama.cpp GGUF control vector")
    p.add_argument("--vector", required=True, help="a steerlab .safetensors vector")
    p.add_argument("--gguf", required=True, help="output .gguf file")
    p.add_argument("--coeff", type=float, default=1.0, help="strength baked into the file")
    p.add_argument("--layers", type=_ints, default=None,
                   help="e.g. 1-29 or 5,12 (default: all the vector's; llama.cpp refuses "
                        "layer 0, so a learned vector of every layer needs --layers 1-N)")
    _scale_arg(p, "raw")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("bake", help="write a model with a saved vector baked in as the bias "
                       "after each block: a plain checkpoint any server loads",
                       parents=[model_only])
    p.add_argument("--vector", required=True, help="a steerlab .safetensors vector")
    p.add_argument("--out", required=True, help="new checkpoint directory")
    p.add_argument("--coeff", type=float, default=1.0, help="strength baked in")
    p.add_argument("--layers", type=_ints, default=None,
                   help="e.g. 10,12 (default: the vector's layers)")
    _scale_arg(p, "raw")
    p.set_defaults(fn=cmd_bake)

    p = sub.add_parser("reliability", help="per-item steerability of a saved vector: steerable "
                       "and anti-steerable fractions per layer next to norm-matched random "
                       "directions, with the vector's predictors", parents=[with_model])
    p.add_argument("--vector", required=True, help="a steerlab .safetensors vector or a .gguf "
                   "control vector (llama.cpp's, repeng's, steerlab's)")
    p.add_argument("--task", default="memorisation-mc", help="a task (`steerlab tasks`): "
                   "multiple choice reads the gold option, free answer the gold answer")
    p.add_argument("--layers", type=_ints, default=None, help="default: the vector's layers")
    p.add_argument("--coeffs", type=_floats, default=None,
                   help="the grid around zero, written --coeffs=-0.1,0,0.1 (default: -0.15 "
                        "to 0.15 in steps of 0.05)")
    p.add_argument("--n", type=int, default=100, help="items")
    p.add_argument("--controls", type=int, default=1, help="random directions per layer")
    p.add_argument("--out", default=None, help="write the table as CSV")
    p.add_argument("--figure", default=None, help="write the report's figure (.html)")
    _scale_arg(p, "norm")
    p.set_defaults(fn=cmd_reliability)

    p = sub.add_parser("import", help="read a GGUF control vector (steerlab's, repeng's, "
                       "llama.cpp's) into a steerlab vector file")
    p.add_argument("file", help="a .gguf control vector")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.set_defaults(fn=cmd_import)

    p = sub.add_parser("tasks", help="list the evaluation tasks and where their data comes from")
    p.set_defaults(fn=cmd_tasks)

    p = sub.add_parser("eval", help="unsteered accuracy with a 95%% interval on task(s)",
                       parents=[model_only])
    p.add_argument("--task", type=lambda t: t.split(","), default=["memorisation-mc"])
    p.add_argument("--n", type=int, default=200, help="items (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shots", type=int, default=3, help="few-shot examples for base models")
    p.add_argument("--scoring", default=None, choices=SCORINGS)
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("sweep", help="accuracy over layers x coefficients x vector methods",
                       parents=[with_model])
    p.add_argument("--task", default="memorisation-mc")
    p.add_argument("--layers", type=_ints, required=True, help="e.g. 3,6,9")
    p.add_argument("--coeffs", type=_floats, required=True, help="e.g. -0.2,0.1,0.2")
    p.add_argument("--methods", type=lambda t: t.split(","), default=["diff_means", "random",
                                                                        "shuffled"],
                   help="any of " + ",".join(METHODS))
    p.add_argument("--n", type=int, default=200, help="evaluation items (0: all)")
    p.add_argument("--seed", type=int, default=0)
    _scale_arg(p, "norm")
    p.add_argument("--extract-from", default=None, help="shipped, mmlu-pro or gsm8k-popqa")
    p.add_argument("--extract-n", type=int, default=None)
    p.add_argument("--scoring", default=None, choices=SCORINGS)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--mode", default="add", choices=MODES,
                   help="add (coeff in --scale units), project (Hong et al.'s h + a(h.v)v, "
                        "coeff = a) or ablate (coeffs ignored)")
    p.add_argument("--scope", default="layer", choices=SCOPES,
                   help="layer: steer each swept layer; all: the direction of each swept layer "
                        "at every layer's block input, attention and MLP outputs (Hong et al.)")
    p.add_argument("--out", default=None, help="results .jsonl or .parquet (resumable)")
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("replicate", help="the seed's protocol (best layer picked on the "
                       "evaluation items) with random and shuffled directions over several "
                       "draws, and optionally the honest protocol (dev pick, test once)",
                       parents=[model_only])
    p.add_argument("--draws", type=int, default=3, help="seeded item samples / control seeds")
    p.add_argument("--task", default="mmlu-pro-reasoning",
                   help="a multiple-choice task (the seed's: mmlu-pro-reasoning)")
    p.add_argument("--n", type=int, default=100, help="items per draw (the seed used ~100)")
    p.add_argument("--layers", type=_ints, default=None, help="default: every layer >= 3")
    p.add_argument("--every", type=int, default=1, help="every k-th layer >= 3 (reduced scale)")
    p.add_argument("--coeffs", type=_floats, default=[0.1], help="Hong et al.'s a, e.g. 0.1")
    p.add_argument("--scoring", default="letter", choices=("letter", "generate"),
                   help="letter: log-prob of each option letter (one forward per item); "
                        "generate: the seed's 200 greedy tokens, letter extracted")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--extract-n", type=int, default=300,
                   help="extraction prompts per set (0: all; MMLU-Pro's are 2,578 long ones)")
    p.add_argument("--honest", action="store_true", help="also run the dev/test protocol")
    p.add_argument("--n-dev", type=int, default=100)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--out", default=None, help="directory: resumable sweeps + replication.json")
    p.set_defaults(fn=cmd_replicate)

    p = sub.add_parser("report", help="a recorded sweep's table (raw and Holm-adjusted p) and "
                       "verdict, from its results file")
    p.add_argument("results", help="a sweep's --out file (.parquet or .journal.jsonl)")
    p.add_argument("--out", default=None, help="write the report to this text file")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("train", help="learn one steering vector per layer with RLOO (model "
                       "frozen); resumes a run in --out", parents=[model_only])
    p.add_argument("--task", default="arithmetic", choices=["arithmetic", "gsm8k"])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--samples", type=int, default=8, help="completions per prompt (RLOO's N)")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=_ints, default=None, help="e.g. 3,6,9 (default: all)")
    p.add_argument("--eval-every", type=int, default=10, help="dev accuracy every N steps")
    p.add_argument("--eval-n", type=int, default=100)
    p.add_argument("--adapter", default="vectors", choices=["vectors", "lora"])
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--out", required=True, help="run directory (checkpoints + journal)")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("notebooks", help="run the numbered notebooks in order (writes figures/)")
    p.add_argument("names", nargs="*", help="e.g. 00 02 (default: all)")
    p.add_argument("--smoke", action="store_true", help="small data and sweeps (same code)")
    p.add_argument("--sync", action="store_true", help="rewrite .ipynb files from the .py sources")
    p.add_argument("--check", action="store_true", help="fail if an .ipynb is out of date")
    p.set_defaults(fn=cmd_notebooks)

    p = sub.add_parser("teach", help="bootcamp lessons: build exercise + solution notebooks, run")
    p.add_argument("action", choices=["build", "run"])
    p.add_argument("names", nargs="*", help="run: lessons by number or name (default: all)")
    p.add_argument("--check", action="store_true", help="build: fail if a notebook is stale")
    p.add_argument("--out", default=None, help="build: write the notebooks into this folder")
    p.add_argument("--smoke", action="store_true", help="run: small data (same code)")
    p.add_argument("--exercises", action="store_true", help="run: the exercise notebooks")
    p.set_defaults(fn=cmd_teach)

    p = sub.add_parser("demo", help="cache, extract and print steered vs unsteered generations",
                       parents=[with_model])
    _add_extract_args(p, default_n=100)
    p.add_argument("--layer", type=int, default=None, help="default: 40%% of the depth")
    p.add_argument("--coeffs", type=_floats, default=DEMO_COEFFS,
                   help="in --scale units (default: fractions of the residual norm)")
    _scale_arg(p, "norm")
    p.add_argument("--prompt", action="append", default=None)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--out", default=None, help="also save the vector here")
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "prompt", "absent") is None:
        args.prompt = DEMO_PROMPTS
    try:
        return int(args.fn(args))
    except (SteerlabError, FileNotFoundError) as err:
        print(f"steerlab: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
