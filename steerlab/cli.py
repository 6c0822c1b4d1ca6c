"""The ``steerlab`` command: thin wrappers over the library functions."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from steerlab.errors import SteerlabError
from steerlab.options import BACKENDS, METHODS, MODES, REDUCTIONS, SCALES, SCOPES, SCORINGS


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 3,6,9, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0,4, got {text!r}") from None


def cmd_models(args: argparse.Namespace) -> int:
    from steerlab.devices import available_devices, resolve_device
    from steerlab.models import EMBEDDED, cache_root, converted_dir, default_dtype, is_converted

    print(f"model cache: {cache_root()}  (set STEERLAB_CACHE to move it)")
    auto = resolve_device()
    print(f"devices: {', '.join(available_devices())}; models load on {auto} (--device or "
          f"STEERLAB_DEVICE to change), default dtype there: "
          f"{str(default_dtype(auto)).removeprefix('torch.')}")
    print(f"{'name':24} {'converted':10} {'chat':5} description")
    for name, spec in EMBEDDED.items():
        conv = "yes" if is_converted(name) else "no"
        print(f"{name:24} {conv:10} {'yes' if spec.chat else 'no':5} {spec.description}")
        if is_converted(name):
            print(f"{'':24} -> {converted_dir(name)}")
    print("Any Hugging Face causal-LM id or local directory also works where the hub is "
          "reachable (e.g. meta-llama/Llama-3.2-1B-Instruct).")
    return 0


def _extract(model, args: argparse.Namespace):
    from steerlab.data import questions
    from steerlab.vectors import extract_vector

    source = (questions(args.positive, "extract", args.n),
              questions(args.negative, "extract", args.n))
    vec = extract_vector(model, source, args.layers, method=args.method, seed=args.seed,
                         reduction=args.reduction, chat=args.chat, batch_size=args.batch_size,
                         backend=args.backend)
    return vec.normalized() if args.normalize else vec


def cmd_extract(args: argparse.Namespace) -> int:
    from steerlab.models import load_model

    t0 = time.perf_counter()
    model = load_model(args.model, dtype=args.dtype, device=args.device)
    vec = _extract(model, args)
    path = vec.save(args.out)
    norms = vec.norms()
    print(f"{vec.method} vector for {vec.model_id}: {len(norms)} layers, d_model={vec.d_model}, "
          f"{vec.meta.get('n_pos')} {args.positive} vs {vec.meta.get('n_neg')} {args.negative} "
          f"prompts, {time.perf_counter() - t0:.1f} s")
    print("norm per layer: " + ", ".join(f"{l}:{n:.1f}" for l, n in norms.items()))
    print(f"saved {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded defaults: cache, extract, steer one prompt."""
    from steerlab.inference import generate
    from steerlab.models import load_model
    from steerlab.steering import steer

    t0 = time.perf_counter()
    model = load_model(args.model, dtype=args.dtype, device=args.device)
    print(f"loaded {model.name} ({model.hf_id}): {model.n_layers} layers, d_model "
          f"{model.d_model}, {str(model.dtype).removeprefix('torch.')}, "
          f"{time.perf_counter() - t0:.1f} s")
    layer = args.layer if args.layer is not None else round(0.4 * model.n_layers)
    args.layers = None
    t1 = time.perf_counter()
    vec = _extract(model, args)
    print(f"cached {vec.meta['n_pos']} {args.positive} + {vec.meta['n_neg']} {args.negative} "
          f"prompts at all layers and took the difference of means in "
          f"{time.perf_counter() - t1:.1f} s; at layer {layer} |v| = {vec[layer].norm():.1f}, "
          f"typical residual norm {vec.ref_norms[layer]:.1f}")
    if args.out:
        print(f"saved vector to {vec.save(args.out)}")
    for prompt in args.prompt:
        print(f"\n=== prompt: {prompt}")
        base = generate(model, [prompt], args.max_new_tokens, chat=args.chat,
                        backend=args.backend)[0]
        print(f"--- unsteered:\n{base.strip()}")
        for coeff in args.coeffs:
            with steer(model, vec, layers=layer, coeff=coeff, scale=args.scale,
                       backend=args.backend):
                out = generate(model, [prompt], args.max_new_tokens, chat=args.chat,
                               backend=args.backend)[0]
            print(f"--- steered (layer {layer}, coeff {coeff:+g} ({SCALE_WORDS[args.scale]}), "
                  f"{args.positive}-minus-{args.negative} direction):\n{out.strip()}")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from steerlab.interop import llama_cpp_command, to_gguf
    from steerlab.vectors import SteeringVector

    vec = SteeringVector.load(args.vector)
    path = to_gguf(vec, args.gguf, coeff=args.coeff, scale=args.scale)
    print(f"wrote {path}: {vec.method} vector for {vec.model_id}, layers {vec.layers}, coeff "
          f"{args.coeff:g} ({args.scale}) baked in")
    print(f"llama.cpp: {llama_cpp_command(path)}   (or --control-vector-scaled {path} S to "
          "scale it again)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from steerlab.interop import from_gguf

    vec = from_gguf(args.file)
    path = vec.save(args.out)
    print(f"read {args.file}: {vec.method} vector for {vec.model_id}, layers {vec.layers}, "
          f"d_model {vec.d_model} -> {path}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from steerlab.benchmarks import data_dir
    from steerlab.tasks import TASKS

    where = data_dir()
    print(f"benchmark directory: {where or 'none found'} (set STEERLAB_DATA_DIR; else the hub)")
    print(f"{'task':20} {'kind':5} {'scoring':8} {'vectors from':12} description / source")
    for t in TASKS.values():
        scoring = t.scoring if t.kind == "mc" else "-"
        print(f"{t.name:20} {t.kind:5} {scoring:8} {t.extract_from:12} {t.description}")
        print(f"{'':20} {'':5} {'':8} {'':12} source: {t.source}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from steerlab.evaluation import evaluate
    from steerlab.models import load_model
    from steerlab.sweeps import default_shots
    from steerlab.tasks import get_task

    model = load_model(args.model, dtype=args.dtype, device=args.device)
    for name in args.task:
        task = get_task(name)
        few = default_shots(model, task, args.shots)
        res = evaluate(model, task, n=args.n or None, seed=args.seed, scoring=args.scoring,
                       shots=few, batch_size=args.batch_size, progress=True)
        chance = f", chance {res.chance:.3f}" if res.chance is not None else ""
        print(f"{model.name} {name}: accuracy {res.accuracy}{chance}, {res.seconds:.0f} s "
              f"({'chat template' if res.extra['chat'] else f'{len(few)}-shot, no template'}"
              f"{', ' + res.extra['scoring'] + ' scoring' if task.kind == 'mc' else ''})",
              flush=True)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from steerlab.models import load_model
    from steerlab.reports import report
    from steerlab.sweeps import SweepConfig, sweep

    config = SweepConfig(args.task, args.layers, args.coeffs, args.methods,
                         n=None if args.n == 0 else args.n, seed=args.seed, scale=args.scale,
                         extract_from=args.extract_from, extract_n=args.extract_n,
                         scoring=args.scoring, backend=args.backend,
                         batch_size=args.batch_size, mode=args.mode, scope=args.scope)
    model = load_model(args.model, dtype=args.dtype, device=args.device)
    table = sweep(model, config, out=args.out)
    print(report(table))
    if args.out:
        print(f"results: {args.out}")
    return 0


def cmd_replicate(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from steerlab import _io
    from steerlab.models import load_model
    from steerlab.replication import (
        SEED_REPORTED,
        answer_letters,
        best_layer_gains,
        gain_distribution,
        gold_letters,
        honest_protocol,
        protocol_layers,
        seed_protocol,
    )

    model = load_model(args.model, dtype=args.dtype, device=args.device)
    layers = args.layers or protocol_layers(model, args.every)
    kw = {"n": args.n, "layers": layers, "coeffs": args.coeffs, "batch_size": args.batch_size,
          "extract_n": args.extract_n or None, "task": args.task, "scoring": args.scoring}
    table = seed_protocol(model, draws=args.draws, out=args.out, **kw)
    gains = best_layer_gains(table)
    dist = gain_distribution(gains)
    letters = answer_letters(table, gold_letters(args.draws, args.n, args.task))
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(f"{model.name}: the seed's protocol (Hong et al.'s all-sites projection, "
              f"{args.scoring} scoring, best of {len(layers)} layers x {len(args.coeffs)} "
              f"coefficient(s) picked on the same {args.n} items), {args.draws} draws")
        print(gains.to_string(index=False))
        print("best-layer gain by direction over the draws:")
        print(dist.to_string(index=False))
        print("answered letters (share of items), unsteered and at each direction's best "
              "layer, next to the gold letters:")
        print(letters.to_string(index=False))
    print("the seed reported (Llama / DeepSeek models, its own items): " + "; ".join(
        f"{m}: {r['unsteered']:.3f} -> {r['best']:.3f} ({r['best'] - r['unsteered']:+.3f})"
        for m, r in SEED_REPORTED.items()))
    summary: dict = {"model": model.hf_id, "dtype": str(model.dtype), "task": args.task,
                     "layers": layers,
                     "coeffs": args.coeffs, "n": args.n, "draws": args.draws,
                     "scoring": args.scoring,
                     "extract_n": args.extract_n,
                     "gains": gains.to_dict("records"), "distribution": dist.to_dict("records"),
                     "answered_letters": letters.to_dict("records"),
                     "seed_reported": {m: {**r, "gain": r["best"] - r["unsteered"]}
                                       for m, r in SEED_REPORTED.items()}}
    if args.honest:
        honest = honest_protocol(model, n_dev=args.n_dev, n_test=args.n_test, layers=layers,
                                 task=args.task, scoring=args.scoring,
                                 coeffs=args.coeffs, batch_size=args.batch_size,
                                 extract_n=args.extract_n or None, out=args.out)
        p, t = honest["pick"], honest["test"]
        print(f"honest protocol: picked on {args.n_dev} dev items: layer {p['layer']}, coeff "
              f"{p['coeff']:g} (dev gain {p['dev_gain']:+.3f}, Holm p {p['dev_p_holm']:.3g}); "
              f"on {args.n_test} disjoint test items: {t['accuracy']:.3f} vs unsteered "
              f"{t['baseline']:.3f}, change {t['delta']:+.3f} [{t['delta_low']:+.3f}, "
              f"{t['delta_high']:+.3f}], McNemar p {t['p_mcnemar']:.3g}")
        lt = honest["test_letters"]
        print("  answered letters on test: " + "; ".join(
            f"{k}: {v['top']} for {v['top_share']:.0%} of items (gold is {v['top']} for "
            f"{v['gold_share_of_top']:.0%})" for k, v in lt.items()))
        if honest["dev_letters"] is not None:
            print("  answered letters on dev (each direction's best cell):")
            print(honest["dev_letters"].to_string(index=False))
        summary["honest"] = {"pick": p, "test": t, "test_letters": lt,
                             "dev_letters": None if honest["dev_letters"] is None
                             else honest["dev_letters"].to_dict("records")}
    if args.out:
        path = _io.write_text(f"{args.out}/replication.json",
                              json.dumps(summary, indent=1, default=float))
        print(f"results: {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from steerlab import _io
    from steerlab.reports import read_table, report

    text = f"{report(read_table(args.results))}\nresults: {args.results}\n"
    if args.out:
        _io.write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from steerlab.models import load_model
    from steerlab.train import TrainConfig, train_rloo

    model = load_model(args.model, dtype=args.dtype, device=args.device)
    cfg = TrainConfig(task=args.task, steps=args.steps, prompts_per_step=args.prompts,
                      samples=args.samples, lr=args.lr, max_new_tokens=args.max_new_tokens,
                      temperature=args.temperature, seed=args.seed,
                      layers=tuple(args.layers) if args.layers else None,
                      eval_every=args.eval_every, eval_n=args.eval_n, adapter=args.adapter,
                      lora_rank=args.lora_rank)
    t0 = time.perf_counter()
    run = train_rloo(model, cfg, args.out)
    hist = run.history
    print(f"{cfg.steps} steps in {time.perf_counter() - t0:.0f} s this session -> {args.out}")
    if "dev_acc" in hist:
        curve = hist.dropna(subset=["dev_acc"])
        print("dev accuracy by step: " + ", ".join(
            f"{int(s)}: {a:.3f}" for s, a in zip(curve.step, curve.dev_acc, strict=True)))
    if args.out:  # the numbers the README's training table quotes, from the journal
        import json

        from steerlab import _io
        from steerlab.train import training_summary

        path = _io.write_text(f"{args.out}/summary.json",
                              json.dumps(training_summary(hist), indent=1))
        print(f"summary: {path}")
    return 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    import os

    from steerlab import notebooks

    if args.smoke:
        os.environ["STEERLAB_SMOKE"] = "1"  # read by the notebook kernels we start
    if args.sync or args.check:
        stale = notebooks.sync(check=args.check)
        for path in stale:
            print(f"{'out of date' if args.check else 'wrote'}: {path}")
        return 1 if (args.check and stale) else 0
    t0 = time.perf_counter()
    done = notebooks.run(args.names or None)
    mode = "smoke" if notebooks.smoke() else "full"
    print(f"ran {len(done)} notebooks ({mode}) in {time.perf_counter() - t0:.0f} s; executed "
          f"copies in notebooks/executed/, figures in {notebooks.figures_dir()}")
    return 0


def cmd_teach(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from steerlab.teach import build

    if args.action == "build":
        out = Path(args.out) if args.out else None
        changed = build.build(check=args.check, out_dir=out)
        for path in changed:
            print(f"{'out of date' if args.check else 'wrote'}: {path}")
        if not changed:
            print("every lesson notebook is up to date")
        return 1 if (args.check and changed) else 0
    if args.smoke:
        os.environ["STEERLAB_SMOKE"] = "1"  # read by the notebook kernels we start
    variant = "exercises" if args.exercises else "solutions"
    done = build.run(args.names, variant)
    print(f"ran {len(done)} {variant} notebooks ({'smoke' if args.smoke else 'full'}) in "
          f"{sum(s for _, s in done):.0f} s")
    return 0


SCALE_WORDS = {"norm": "x the layer's typical residual norm", "unit": "x the unit direction",
               "raw": "x the raw difference of means"}


def _model_parent(backend: bool = True) -> argparse.ArgumentParser:
    """The options every command that loads a model shares."""
    from steerlab.models import DEFAULT_MODEL

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
    _scale_arg(p, "raw")
    p.set_defaults(fn=cmd_export)

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


DEMO_COEFFS = [0.25, 0.5, -0.5]
DEMO_PROMPTS = ["What is the capital of Japan?",
                "Sam has 4 boxes with 6 pens in each box. He gives away 5 pens. How many pens "
                "does he have left?"]


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
