"""What each ``steerlab`` command does (the parser is :mod:`steerlab.cli`): thin wrappers
over the library functions, importing them when run so ``steerlab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import time

SCALE_WORDS = {"norm": "x the layer's typical residual norm", "unit": "x the unit direction",
               "raw": "x the raw difference of means"}
DEMO_COEFFS = [0.25, 0.5, -0.5]
DEMO_PROMPTS = ["What is the capital of Japan?",
                "Sam has 4 boxes with 6 pens in each box. He gives away 5 pens. How many pens "
                "does he have left?"]


def cmd_models(args: argparse.Namespace) -> int:
    from steerlab.devices import available_devices, default_dtype, resolve_device
    from steerlab.embedded import EMBEDDED, cache_root, converted_dir, is_converted

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
    from steerlab.extraction import extract_vector

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
    path = to_gguf(vec, args.gguf, coeff=args.coeff, scale=args.scale, layers=args.layers)
    print(f"wrote {path}: {vec.method} vector for {vec.model_id}, layers "
          f"{args.layers or vec.layers}, coeff {args.coeff:g} ({args.scale}) baked in")
    print(f"llama.cpp: {llama_cpp_command(path)}   (or "
          f"{llama_cpp_command(path, scale=2.0).split(' ', 3)[3]} to scale it again, here by 2)")
    return 0


def cmd_bake(args: argparse.Namespace) -> int:
    from steerlab.bake import bake
    from steerlab.models import load_model
    from steerlab.vectors import SteeringVector

    vec = SteeringVector.load(args.vector)
    model = load_model(args.model, dtype=args.dtype, device=args.device)
    out = bake(model, vec, args.out, coeff=args.coeff, scale=args.scale, layers=args.layers)
    print(f"wrote {out}: {model.hf_id} with the {vec.method} vector (layers "
          f"{args.layers or vec.layers}, coeff {args.coeff:g} {args.scale}) as the bias after "
          "each block; load it with transformers' AutoModelForCausalLM.from_pretrained, no "
          "steerlab needed")
    return 0


def cmd_reliability(args: argparse.Namespace) -> int:
    from steerlab import _io
    from steerlab.interop import from_gguf
    from steerlab.models import load_model
    from steerlab.reliability import reliability_report
    from steerlab.steerability import DEFAULT_COEFFS
    from steerlab.vectors import SteeringVector

    vec = (from_gguf(args.vector) if str(args.vector).endswith(".gguf")
           else SteeringVector.load(args.vector))
    model = load_model(args.model, dtype=args.dtype, device=args.device)
    coeffs = args.coeffs or list(DEFAULT_COEFFS)
    report = reliability_report(model, vec, args.task, layers=args.layers,
                                random=args.controls, coeffs=coeffs, n=args.n,
                                scale=args.scale, backend=args.backend, progress=True)
    cols = [c for c in ("layer", "method", "seed", "n", "steerable", "steerable_low",
                        "steerable_high", "anti_steerable", "anti_low", "anti_high",
                        "mean_slope", "consistency", "d_prime", "probe_acc", "lens_peak",
                        "lens_coherence") if c in report.table.columns]
    print(f"per-item steerability of {args.vector} (steerable / anti-steerable: the item's 95% "
          "slope interval above / below zero; random: norm-matched directions)")
    print(report.verdict())
    print(report.table[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.out:
        _io.write_text(args.out, report.table.to_csv(index=False))
        print(f"wrote {args.out}")
    if args.figure:
        with _io.atomic_path(args.figure) as tmp:
            report.figure().write_html(tmp, include_plotlyjs=True)  # self-contained
        print(f"wrote {args.figure}")
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
    from steerlab.sweep_plan import default_shots
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
    from steerlab.sweep_plan import SweepConfig
    from steerlab.sweeps import sweep

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
        from steerlab.train_journal import training_summary

        path = _io.write_text(f"{args.out}/summary.json",
                              json.dumps(training_summary(hist), indent=1))
        print(f"summary: {path}")
    return 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    import os

    from steerlab import notebook_runner, notebooks

    if args.smoke:
        os.environ["STEERLAB_SMOKE"] = "1"  # read by the notebook kernels we start
    if args.sync or args.check:
        stale = notebook_runner.sync(check=args.check)
        for path in stale:
            print(f"{'out of date' if args.check else 'wrote'}: {path}")
        return 1 if (args.check and stale) else 0
    t0 = time.perf_counter()
    done = notebook_runner.run(args.names or None)
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
