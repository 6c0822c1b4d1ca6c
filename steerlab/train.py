"""Learned steering vectors: one trainable vector per layer, the model frozen, trained with RLOO.

Sinii et al. 2025 ("Steering LLM Reasoning Through Bias-Only Adaptation") add a trainable
d_model vector ``s_l`` to the residual stream after every layer, at every position, freeze all
weights, and train the vectors with REINFORCE Leave-One-Out on a verifiable reward:

* for each prompt draw ``N`` completions at temperature 1;
* reward 1 when the final answer (``\\boxed{}``, ``####`` or the last number) is right, else 0;
* advantage of sample ``i`` = its reward minus the mean reward of the *other* ``N - 1``;
* loss = - mean over samples of advantage x log-probability of the completion.

:func:`train_rloo` does exactly that on any :class:`~steerlab.models.Model`, journals every step,
checkpoints the vectors (a :class:`~steerlab.vectors.SteeringVector`, safetensors) and the Adam
state (safetensors, no pickle) after every step, and resumes from them. Steps are seeded by
``(seed, step)``, so a resumed run draws the same prompts and samples as an uninterrupted one.

A run directory holds ``vectors.safetensors`` (or ``lora.safetensors``), ``optimizer.safetensors``
and ``journal.jsonl``. Each step appends its journal row, then replaces the two checkpoint files
in one commit (:func:`steerlab._io.commit`), so they are always of the same step; a resume
checks that they are, and drops journal rows after that step (they are redone).

The adapters (:class:`~steerlab.adapters.LearnedVectors`, :class:`~steerlab.adapters.LoraAdapter`,
one :class:`~steerlab.adapters.Adapter` protocol) live in :mod:`steerlab.adapters`; the
comparison of a trained vector with its controls in :mod:`steerlab.conditions`.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from steerlab import _io
from steerlab.adapters import ADAPTERS, Adapter, freeze, make_adapter
from steerlab.answers import judge
from steerlab.console import progress as progress_bar
from steerlab.devices import dtype_name
from steerlab.errors import OptionError
from steerlab.evaluation import evaluate
from steerlab.tasks import get_task, training_items
from steerlab.train_journal import (
    JOURNAL,
    checkpoint_meta,
    checkpoint_step,
    load_checkpoint,
    resume_journal,
    save_checkpoint,
)
from steerlab.vectors import SteeringVector

if TYPE_CHECKING:
    from steerlab.models import Model
    from steerlab.tasks import Item

RewardFn = Callable[["Item", str], float]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (its hash names the run's checkpoints).

    Attributes:
        task: ``arithmetic`` (synthetic a +/- b) or ``gsm8k`` (GSM8K train).
        steps: optimizer steps.
        prompts_per_step: prompts drawn (without replacement within an epoch) per step.
        samples: completions per prompt (RLOO's N, >= 2).
        lr: Adam learning rate.
        max_new_tokens: completion budget while training.
        temperature: sampling temperature of the rollouts (the paper: 1.0).
        seed: seeds prompt order and sampling.
        layers: layers that get a vector (default: all).
        chat: apply the chat template (default: when the model is a chat model).
        eval_every: greedy accuracy on the dev split every this many steps (0: never).
        eval_n: dev items used for those curves.
        grad_clip: clip the gradient norm (0: no clipping).
        adapter: ``vectors`` (the paper's bias-only method) or ``lora`` (rank-r adapters on
            each MLP down-projection via ``peft``, the paper's comparison).
        lora_rank: rank of the LoRA adapters.
    """

    task: str = "arithmetic"
    steps: int = 60
    prompts_per_step: int = 8
    samples: int = 8
    lr: float = 1e-2
    max_new_tokens: int = 32
    temperature: float = 1.0
    seed: int = 0
    layers: tuple[int, ...] | None = None
    chat: bool | None = None
    eval_every: int = 10
    eval_n: int = 100
    grad_clip: float = 1.0
    adapter: str = "vectors"
    lora_rank: int = 8

    def __post_init__(self) -> None:
        checks = [(self.steps >= 1, "steps must be >= 1"),
                  (self.prompts_per_step >= 1, "prompts_per_step must be >= 1"),
                  (self.samples >= 2, "samples (RLOO's N) must be >= 2: the baseline of a "
                   "sample is the mean reward of the others"),
                  (self.lr > 0, "lr must be > 0"),
                  (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
                  (self.temperature > 0, "temperature must be > 0"),
                  (self.eval_every >= 0 and self.eval_n >= 1, "eval_every >= 0, eval_n >= 1"),
                  (self.adapter in ADAPTERS, f"adapter must be one of {ADAPTERS}")]
        for ok, msg in checks:
            if not ok:
                raise OptionError(f"Bad training config: {msg} (got {self}).")

    def key(self) -> str:
        """Hash of every field that changes the result (not steps: a run can be extended)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("steps", "eval_every")}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class TrainRun:
    """What :func:`train_rloo` returns: the learned vector, the per-step history and where the
    checkpoints are."""

    vector: SteeringVector | None
    history: pd.DataFrame
    config: TrainConfig
    out_dir: Path | None
    adapter: Adapter = field(repr=False, default=None)  # type: ignore[assignment]


def verified_reward(item: Item, completion: str) -> float:
    """1.0 when the completion's final answer is right (the evaluation's verifier), else 0."""
    return float(judge(item, completion)[0])


def rollout(model: Model, items: Sequence[Item], cfg: TrainConfig, seed: int,
            chat: bool, reward_fn: RewardFn = verified_reward) -> dict[str, Any]:
    """``cfg.samples`` sampled completions per item (grouped: item 0's samples first), their
    token ids, the mask of real completion tokens (up to and including the first end-of-text)
    and the 0/1 rewards from the verifier."""
    prompts = [it.question for it in items for _ in range(cfg.samples)]
    enc = model.encode(prompts, chat=chat)
    torch.manual_seed(seed)
    with torch.no_grad():
        seq = model.backend("hf").generate(
            enc, max_new_tokens=cfg.max_new_tokens, do_sample=True,
            temperature=cfg.temperature, top_k=0, top_p=1.0,
            pad_token_id=model.tokenizer.pad_token_id)
    new = seq[:, enc["input_ids"].shape[1]:]
    is_eos = torch.isin(new, torch.tensor(model.eos_ids, device=new.device))
    mask = (is_eos.long().cumsum(1) - is_eos.long()) == 0  # before or at the first eos
    texts = model.tokenizer.batch_decode(new, skip_special_tokens=True)
    rewards = torch.tensor([float(reward_fn(it, t)) for it, t in
                            zip((it for it in items for _ in range(cfg.samples)), texts,
                                strict=True)], device=new.device)
    return {"enc": enc, "new": new, "mask": mask, "texts": texts, "rewards": rewards}


def completion_logprobs(model: Model, enc: dict[str, torch.Tensor], new: torch.Tensor,
                        mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B,) summed log-probabilities of the completion tokens under the distribution they were
    sampled from, ``softmax(logits / temperature)`` (with grad through any attached adapter);
    the unembedding runs only on the completion positions."""
    if temperature <= 0:
        raise OptionError(f"temperature must be > 0, got {temperature}.")
    ids = torch.cat([enc["input_ids"], new], 1)
    att = torch.cat([enc["attention_mask"], mask.long()], 1)
    k = new.shape[1]
    logits = model.backend("hf").forward({"input_ids": ids, "attention_mask": att}, keep=k + 1)
    lp = torch.log_softmax(logits[:, :-1].float() / temperature, -1).gather(-1, new.unsqueeze(-1))
    return (lp.squeeze(-1) * mask).sum(1)


def rloo_advantages(rewards: torch.Tensor, samples: int) -> torch.Tensor:
    """Reward minus the mean reward of the other samples of the same prompt (flat, grouped)."""
    r = rewards.view(-1, samples)
    return (r - (r.sum(1, keepdim=True) - r) / (samples - 1)).flatten()


def _dev_accuracy(model: Model, adapter: Adapter, items: list[Item], task: str,
                  chat: bool) -> float:
    with adapter.attached(model):
        res = evaluate(model, get_task(task), items=items, chat=chat, batch_size=50,
                       progress=False)
    return float(res.correct.mean())


def train_rloo(model: Model, cfg: TrainConfig | None = None, out_dir: str | Path | None = None,
               progress: bool = True, reward_fn: RewardFn = verified_reward,
               **overrides: Any) -> TrainRun:
    """Train steering vectors (or LoRA adapters) on ``cfg.task`` with RLOO, model frozen.

    Args:
        model: the model (its weights are set to ``requires_grad=False``).
        cfg: the configuration; keyword ``overrides`` replace single fields.
        out_dir: where the journal and checkpoints go; a run there with the same configuration
            resumes from its last step (and extends it when ``steps`` grew).
        progress: show a progress bar with the running reward.
        reward_fn: ``(item, completion) -> reward``; default: 1 for a verified right answer.

    Returns:
        A :class:`TrainRun`: the learned :class:`SteeringVector` (``method="learned"``, its meta
        holding the config and step), the history and the output directory.
    """

    cfg = cfg or TrainConfig()
    if overrides:
        cfg = TrainConfig(**{**asdict(cfg), **overrides})
    chat = model.uses_chat(cfg.chat)
    train = training_items(cfg.task, "train")
    dev = training_items(cfg.task, "dev")[:cfg.eval_n]
    freeze(model)
    model.train_mode(False)
    adapter = make_adapter(cfg.adapter, model, cfg.layers, cfg.lora_rank)
    model = adapter.target(model)  # LoRA: train and evaluate the private, adapted copy
    params = adapter.trainable_parameters()
    opt = torch.optim.Adam(params, lr=cfg.lr)
    out = Path(out_dir) if out_dir is not None else None
    start = 0
    rows: list[dict] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        start = load_checkpoint(out, adapter, opt, model, cfg)
        rows = resume_journal(out, start)
    if not rows and cfg.eval_every:
        rows.append({"step": 0, "dev_acc": _dev_accuracy(model, adapter, dev, cfg.task,
                                                         chat)})
        if out is not None:
            _io.append_jsonl(out / JOURNAL, rows[-1])
    bar = progress_bar(range(start + 1, cfg.steps + 1), desc="RLOO", disable=not progress,
               initial=start, total=cfg.steps)
    for step in bar:
        row = _train_step(model, adapter, opt, params, cfg, train, step, chat, reward_fn)
        if cfg.eval_every and step % cfg.eval_every == 0:
            row["dev_acc"] = _dev_accuracy(model, adapter, dev, cfg.task, chat)
        rows.append(row)
        if out is not None:  # the row first: a checkpoint always has its journal row
            _io.append_jsonl(out / JOURNAL, row)
            save_checkpoint(out, adapter, opt, model, cfg, step)
        recent = [r["reward"] for r in rows[-10:] if "reward" in r]
        bar.set_postfix(reward=f"{sum(recent) / max(len(recent), 1):.3f}")
    meta = {"config": asdict(cfg), "config_key": cfg.key(), "step": cfg.steps,
            "task": cfg.task, "trainer": "rloo", "dtype": dtype_name(model.dtype)}
    vec = adapter.to_steering_vector(model, meta, seed=cfg.seed)
    return TrainRun(vec, pd.DataFrame(rows), cfg, out, adapter)


def replayable(out_dir: str | Path) -> list[tuple[str, int]]:
    """The recorded journal entries of the run in ``out_dir`` whose starting state is on disk,
    so :func:`replay` can compute them again: ``("dev", 0)`` (the dev accuracy of the zero
    start), ``("step", 1)`` (the first step, from the zero start and a fresh Adam) and
    ``("dev", s)`` for the checkpoint's step ``s`` when its row has a dev accuracy. Other steps
    start from checkpoints a run does not keep."""
    out = Path(out_dir)
    step = checkpoint_step(out)
    rows = {r["step"]: r for r in _io.read_jsonl(out / JOURNAL)
            if step is None or r["step"] <= step}
    found: list[tuple[str, int]] = []
    if "dev_acc" in rows.get(0, {}):
        found.append(("dev", 0))
    if "reward" in rows.get(1, {}):
        found.append(("step", 1))
    if step and "dev_acc" in rows.get(step, {}):
        found.append(("dev", step))
    return found


def replay(model: Model, out_dir: str | Path, kind: str, step: int,
           reward_fn: RewardFn = verified_reward) -> dict[str, Any]:
    """Compute one entry of :func:`replayable` again on ``model`` (which should be in the
    run's :func:`run_dtype`): ``("dev", s)`` gives ``{"dev_acc": ..., "dev_items": n}``,
    ``("step", 1)`` the
    first step's journal row (reward, loss, grad_norm, ..., sample) with the run's
    ``reward_fn``."""

    out = Path(out_dir)
    if (kind, step) not in replayable(out):
        raise OptionError(f"{out}: ({kind!r}, {step}) cannot be replayed; these can: "
                          f"{replayable(out)}.")
    meta = checkpoint_meta(out) or {}
    stored: dict[str, Any] = dict(meta["config"])
    if stored.get("layers") is not None:
        stored["layers"] = tuple(stored["layers"])
    cfg = TrainConfig(**stored)
    chat = model.uses_chat(cfg.chat)
    freeze(model)
    model.train_mode(False)
    adapter = make_adapter(cfg.adapter, model, cfg.layers, cfg.lora_rank)
    target = adapter.target(model)
    if kind == "dev":
        if step:
            adapter.read_checkpoint(out / adapter.file_name, target).restore()
        dev = training_items(cfg.task, "dev")[:cfg.eval_n]
        return {"dev_acc": _dev_accuracy(target, adapter, dev, cfg.task, chat),
                "dev_items": len(dev)}
    params = adapter.trainable_parameters()
    opt = torch.optim.Adam(params, lr=cfg.lr)
    return _train_step(target, adapter, opt, params, cfg, training_items(cfg.task, "train"),
                       step, chat, reward_fn)


def _batch(train: list[Item], cfg: TrainConfig, step: int) -> list[Item]:
    """The prompts of ``step``: epochs are seeded shuffles of the training split."""
    per_epoch = max(1, len(train) // cfg.prompts_per_step)
    epoch, k = divmod(step - 1, per_epoch)
    order = list(range(len(train)))
    random.Random(f"{cfg.seed}:{epoch}").shuffle(order)
    return [train[i] for i in order[k * cfg.prompts_per_step:(k + 1) * cfg.prompts_per_step]]


def _train_step(model: Model, adapter: Adapter, opt: torch.optim.Optimizer,
                params: list[torch.nn.Parameter], cfg: TrainConfig, train: list[Item],
                step: int, chat: bool, reward_fn: RewardFn) -> dict[str, Any]:
    t0 = time.perf_counter()
    items = _batch(train, cfg, step)
    with adapter.attached(model):
        ro = rollout(model, items, cfg, seed=cfg.seed * 1_000_003 + step, chat=chat,
                     reward_fn=reward_fn)
        t_gen = time.perf_counter() - t0
        adv = rloo_advantages(ro["rewards"], cfg.samples)
        loss_val = 0.0
        grad_norm = 0.0
        # groups whose samples all got the same reward have zero advantage: only the others
        # need a forward and backward (the gradient is the same, at a fraction of the cost)
        keep = adv != 0
        if keep.any():
            enc = {k: v[keep] for k, v in ro["enc"].items()}
            lp = completion_logprobs(model, enc, ro["new"][keep], ro["mask"][keep],
                                     cfg.temperature)
            loss = -(adv[keep] * lp).sum() / len(adv)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
            opt.step()
            loss_val = float(loss.detach())
    r = ro["rewards"].view(-1, cfg.samples)
    return {"step": step, "reward": float(r.mean()), "loss": loss_val, "grad_norm": grad_norm,
            "groups_with_signal": int(((r.max(1).values - r.min(1).values) > 0).sum()),
            "mean_tokens": float(ro["mask"].sum(1).float().mean()),
            "vector_norm": float(sum(p.detach().float().norm() ** 2 for p in params) ** 0.5),
            "seconds": time.perf_counter() - t0, "gen_seconds": t_gen,
            "sample": ro["texts"][0][:120]}

