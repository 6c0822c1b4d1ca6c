"""The HF backend's fast paths, the backend side of :mod:`steerlab.engine`: prefix record
and replay, the columns all rows share read once (lead rows, then the others from their
first differing column), and the greedy loop whose rows leave the batch as they finish, with
its staged prefill and preallocated KV cache (:mod:`steerlab.backends.kvcache`).
:class:`~steerlab.backends.hf.HFBackend` implements :class:`steerlab.engine.FastPath` through
this mixin; only :mod:`steerlab.engine` calls it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from steerlab.backends.blocks import StopForward, position_ids
from steerlab.backends.hf_replay import HFReplay
from steerlab.backends.kvcache import (
    LEAD_ROWS,
    common_start,
    decoding_cache,
    fill_past,
    leads,
)
from steerlab.errors import OptionError

if TYPE_CHECKING:
    from steerlab.backends.phase import Phase
    from steerlab.models import Model


class HFFastPath(HFReplay):
    """The fast-path methods of the HF backend (the attributes below are its own; prefix
    record and replay come from :class:`~steerlab.backends.hf_replay.HFReplay`)."""

    name: str
    model: Model
    top: Any
    phase: Phase
    _layers: Any
    _cache_kw: str | None
    _takes_positions: bool
    _takes_keep: bool
    _sliding: float | None

    if TYPE_CHECKING:
        def forward(self, enc: dict[str, torch.Tensor],
                    keep: int | torch.Tensor | None = None) -> torch.Tensor: ...

        def check_sole(self) -> None: ...

        def has_foreign_hooks(self) -> bool: ...

    def fast_paths(self) -> frozenset[str]:
        """The fast paths of :class:`steerlab.engine.FastPath` this model has: prefix replay
        always; the greedy loop where the model has a KV cache (not a recurrent state)."""
        return frozenset({"replay", "greedy"} if self._cache_kw is not None else {"replay"})

    @torch.no_grad()
    def greedy(self, enc: dict[str, torch.Tensor], max_new_tokens: int,
               stop: set[int] | None = None,
               done: Callable[[int, list[int]], bool] | None = None,
               on_rows: Callable[[torch.Tensor], None] | None = None,
               repeat: int = 1, shared_until: int | Sequence[int] | None = None
               ) -> list[list[int]]:
        """Greedy decoding with a KV cache in which finished rows leave the batch: a row ends
        at a token in ``stop`` (default: the generation config's EOS ids, where ``generate``
        stops; kept out of the result, as ``generate`` leaves it to the decoder's
        ``skip_special_tokens``), after ``max_new_tokens``, or once
        ``done(row, new_tokens)`` is true (its answer is complete). The unfinished rows go on
        alone, so a batch costs what its live rows cost. ``on_rows(index)`` is called with
        the rows the next forwards run (positions among all the rows) whenever that
        changes, so per-row state (a per-row steering vector) can follow them.

        ``repeat`` > 1: each prompt row of ``enc`` stands for ``repeat`` consecutive rows
        (row ``i * repeat + c``): the prompt is read once and its cache and first token are
        copied, which is exact when nothing edits the prompt's forward (steering at
        ``positions="generated"``). Same tokens as ``generate(do_sample=False)`` row by row
        (the forwards are the same up to the batch's size, which this loop changes).
        ``shared_until`` with ``repeat`` > 1: a layer, or one per repeat index (``c``): row
        ``i * repeat + c`` has no edit before block ``shared_until[c]``'s output (as a sweep
        cell steering there). The prompt's forward then runs each block once per group of
        rows whose inputs to it are still equal: up to the lowest of those blocks once per
        prompt, and above it the rows whose edits have begun each on their own, the others
        still once per prompt (:meth:`_shared_prefill`). Several layers need ``on_rows``
        (the forwards between them run a subset of the rows).

        Returns:
            Each row's new tokens, in row order (``len(enc) * repeat`` rows).
        """
        self.check_sole()
        if max_new_tokens < 1 or repeat < 1:
            raise OptionError(f"greedy needs max_new_tokens >= 1 and repeat >= 1, got "
                              f"{max_new_tokens} and {repeat}.")
        until = None if shared_until is None else (
            [shared_until] * repeat if isinstance(shared_until, int) else list(shared_until))
        if until is not None:
            if len(until) != repeat:
                raise OptionError(f"shared_until has {len(until)} layers for repeat={repeat}: "
                                  "give one layer, or one per repeat.")
            bad = [u for u in until if not 0 <= u < len(self._layers)]
            if bad:
                raise OptionError(f"shared_until={bad[0]} is not a layer of this model "
                                  f"(0..{len(self._layers) - 1}).")
            if on_rows is None:  # no way to steer a subset of rows: share up to the lowest
                until = [min(until)] * repeat
        if stop is None:
            eos = self.top.generation_config.eos_token_id
            eos = self.model.tokenizer.eos_token_id if eos is None else eos
            stop = {eos} if isinstance(eos, int) else set(eos or ())
        mask = enc["attention_mask"]
        cache = decoding_cache(self.top.config, max_new_tokens)
        pos = position_ids(mask)
        kw: dict[str, Any] = {"use_cache": True, str(self._cache_kw): cache}
        if self._takes_keep:
            kw["logits_to_keep"] = 1
        n = mask.shape[0] * repeat
        out: list[list[int]] = [[] for _ in range(n)]
        alive = list(range(n))  # the row of ``out`` each current batch row decodes
        ids = enc["input_ids"]
        with self.phase.generation(width=ids.shape[1]):  # the prompt is ids' columns
            for step in range(max_new_tokens):
                args = dict(kw, input_ids=ids, attention_mask=mask)
                if self._takes_positions:
                    args["position_ids"] = pos
                # every forward of step 0 (however many stages) reads the prompt; later ones decode
                with self.phase.reading(prompt=step == 0):
                    if step == 0 and repeat > 1 and until is not None:
                        nxt = self._prefill_rows(args, cache, until, max_new_tokens, on_rows)
                        mask, pos = (t.repeat_interleave(repeat, 0) for t in (mask, pos))
                    else:
                        nxt = self.top(**args).logits[:, -1].argmax(-1)
                if step == 0 and repeat > 1 and until is None:
                    # the prompt read once: copy its results
                    cache.batch_repeat_interleave(repeat)
                    mask, pos = (t.repeat_interleave(repeat, 0) for t in (mask, pos))
                    nxt = nxt.repeat_interleave(repeat, 0)
                keep = []
                for j, (row, tok) in enumerate(zip(alive, nxt.cpu().tolist(), strict=True)):
                    if tok in stop:
                        continue
                    out[row].append(tok)
                    if done is None or not done(row, out[row]):
                        keep.append(j)
                if not keep or step == max_new_tokens - 1:
                    break
                if len(keep) < len(alive):
                    # the rows that go on: the first len(keep) positions, each finished
                    # row's place among them taken by a row from beyond them, so that the
                    # cache moves those rows only (PreallocatedLayer.batch_select_indices)
                    gone = set(range(len(alive))) - set(keep)
                    movers = iter(j for j in keep if j >= len(keep))
                    keep = [next(movers) if j in gone else j for j in range(len(keep))]
                    index = torch.tensor(keep, device=mask.device)
                    cache.batch_select_indices(index)
                    mask, pos, nxt = mask[index], pos[index], nxt[index]
                    alive = [alive[j] for j in keep]
                    if on_rows is not None:
                        on_rows(torch.tensor(alive))
                ids = nxt[:, None]
                mask = torch.cat([mask, mask.new_ones(len(alive), 1)], 1)
                pos = pos[:, -1:] + 1
            return out

    def _prefill_rows(self, args: dict[str, Any], cache: Any, until: list[int], extra: int,
                      on_rows: Callable[[torch.Tensor], None] | None) -> torch.Tensor:
        """:meth:`greedy`'s first forward for ``repeat`` rows per prompt, each steered from
        ``until[c]`` up: :meth:`_shared_prefill`, with the tokens all prompts begin with (a
        chat template's system prompt, few-shot examples) read once per row of the lead
        prompts only (:func:`~steerlab.backends.kvcache.leads`: one per padding length, at
        least :data:`~steerlab.backends.kvcache.LEAD_ROWS`).
        The other prompts run from the first column they do not share on, each row with its
        lead's row of the same repeat (same steering, same padding) as the cache of the
        columns before: every token sits at its own position, under the same mask and key
        length, as in one forward of the whole batch. Returns every row's first token."""
        ids, mask = args["input_ids"], args["attention_mask"]
        prompts, width = ids.shape
        repeat = len(until)
        plan = leads(ids, mask, LEAD_ROWS)
        if plan is None or width >= self._window():
            return self._shared_prefill(args, cache, until, extra, on_rows)
        lead, others, lead_of, start = plan

        def part(which: list[int], cols: int) -> dict[str, Any]:
            at = torch.tensor(which, device=ids.device)
            return {name: (t[at] if name == "attention_mask" else t[at, cols:])
                    if isinstance(t, torch.Tensor) else t for name, t in args.items()}

        lead_cache = decoding_cache(self.top.config, extra)
        lead_next = self._shared_prefill(part(lead, 0), lead_cache, until, extra, on_rows,
                                         prompt_ids=lead)
        other_cache = decoding_cache(self.top.config, extra)
        other_next = self._shared_prefill(part(others, start), other_cache, until, extra,
                                          on_rows, prompt_ids=others,
                                          past=(lead_cache, lead_of, start))
        rows = [torch.tensor([i * repeat + c for i in which for c in range(repeat)])
                for which in (lead, others)]
        nxt = lead_next.new_empty(prompts * repeat)
        nxt[rows[0]], nxt[rows[1]] = lead_next, other_next
        for b, layer in enumerate(cache.layers):  # every row's cache, in row order
            k0, v0 = lead_cache.layers[b].keys, lead_cache.layers[b].values
            k1, v1 = other_cache.layers[b].keys, other_cache.layers[b].values
            keys, values = k0.new_empty(prompts * repeat, *k0.shape[1:]), \
                v0.new_empty(prompts * repeat, *v0.shape[1:])
            keys[rows[0]], keys[rows[1]], values[rows[0]], values[rows[1]] = k0, k1, v0, v1
            layer.update(keys, values)
        if on_rows is not None:  # the decoding runs every row
            on_rows(torch.arange(prompts * repeat))
        return nxt

    def _shared_prefill(self, args: dict[str, Any], cache: Any, until: list[int], extra: int,
                        on_rows: Callable[[torch.Tensor], None] | None,
                        prompt_ids: Sequence[int] | None = None,
                        past: tuple[Any, torch.Tensor, int] | None = None) -> torch.Tensor:
        """The prompt's first forward of :meth:`greedy` in stages, one per distinct layer of
        ``until`` (one per repeat index; ``L1 < L2 < ...``). Stage 1 runs blocks ``0..L1``
        once per prompt; stage ``j`` runs blocks ``L(j-1)+1..Lj`` (the last one: to the
        logits) on the rows whose edits have begun (``until <= L(j-1)``) each, plus one
        representative per prompt for the rest: the row of the highest ``until``, whose
        edits below it add nothing. Each stage goes on from the last one's output at block
        ``L(j-1)`` (recorded before any edit there ran, which then runs on it). Every row's
        cache of a stage's blocks is its group's. Returns every row's first token.

        ``prompt_ids``: the prompts of ``args`` among those ``on_rows`` counts (default: all,
        in order). ``past``: (cache, lead of each prompt, columns): ``args`` holds each
        prompt's columns from ``columns`` on, and row ``i * repeat + c`` takes the first
        ``columns`` columns of its keys and values from row ``lead[i] * repeat + c`` of the
        cache (:meth:`_prefill_rows`)."""
        repeat, prompts = len(until), args["input_ids"].shape[0]
        ids = torch.tensor(list(range(prompts) if prompt_ids is None else prompt_ids))
        top = max(range(repeat), key=until.__getitem__)  # the representative repeat index
        stages = sorted(set(until))

        def groups(wanted: Sequence[int], rows: list[int]) -> torch.Tensor:
            """Each wanted row's group among a stage's ``rows``: itself, or its prompt's
            representative."""
            where = {x: p for p, x in enumerate(rows)}
            return torch.tensor([where.get(r, where[r - r % repeat + top]) for r in wanted])

        rows = [i * repeat + top for i in range(prompts)]
        done: list[tuple[range, Any, list[int]]] = []  # (blocks, their cache, rows)
        recorded: Any = None
        nxt = None
        for j, hi in enumerate([*stages, None]):  # the last stage runs to the logits
            lo = stages[j - 1] if j else -1
            if j:
                new = sorted(set(rows) | {i * repeat + c for i in range(prompts)
                                          for c in range(repeat) if until[c] <= lo})
                src = groups(new, rows)
                recorded = (recorded[src] if isinstance(recorded, torch.Tensor) else
                            (recorded[0][src], *recorded[1:]))
                rows = new
            index = torch.tensor(rows)
            sub = {name: t[index // repeat] if isinstance(t, torch.Tensor) else t
                   for name, t in args.items()}
            part = cache if hi is None else decoding_cache(self.top.config, extra)
            if past is not None:
                lead_cache, lead_of, columns = past
                fill_past(part, lead_cache, lead_of[index // repeat] * repeat + index % repeat,
                          columns, range(lo + 1, len(self._layers) if hi is None else hi + 1))
            sub[str(self._cache_kw)] = part
            if on_rows is not None:
                on_rows(ids[index // repeat] * repeat + index % repeat)
            seen: dict[str, Any] = {}

            def stop(module: torch.nn.Module, inputs: Any, output: Any,
                     seen: dict[str, Any] = seen) -> None:
                seen["out"] = output
                raise StopForward

            with contextlib.ExitStack() as stack:
                if j:
                    stack.enter_context(self.replaying(lo, recorded))
                if hi is not None:
                    handle = self._layers[hi].register_forward_hook(stop, prepend=True)
                    stack.callback(handle.remove)
                    with contextlib.suppress(StopForward):
                        self.top(**sub)
                    recorded = seen["out"]
                    done.append((range(lo + 1, hi + 1), part, rows))
                else:
                    nxt = self.top(**sub).logits[:, -1].argmax(-1)
        n = prompts * repeat
        for blocks, part, rows in done:  # each row's cache of a stage's blocks: its group's
            index = groups(range(n), rows)
            for b in blocks:
                part.layers[b].batch_select_indices(index)
                cache.layers[b] = part.layers[b]
        assert nxt is not None
        return nxt

    def forward_shared(self, enc: dict[str, torch.Tensor],
                       keep: int | torch.Tensor) -> torch.Tensor:
        """``forward(enc, keep)`` reading the columns every row shares only once: when the
        rows' first columns hold the same tokens and mask
        (:func:`~steerlab.backends.kvcache.common_start`), as a right-padded batch's shared
        chat template or few-shot examples do, :data:`LEAD_ROWS` rows run whole and the
        others run from the first column they do not share, with the lead's keys and values
        of the shared columns as their cache. Each row's tokens sit where they sit in
        ``forward`` (the same positions, the same mask, the same key length), so the scored
        logits are those of ``forward`` up to the rounding of smaller matrix products
        (``tests/test_shared_prefix.py`` compares them with a plain forward on every tiny
        architecture).

        ``keep``: a tensor of positions (sharing stops at the first); an int, no shared
        column, too few rows, a model without a KV cache, or a batch wider than a sliding
        attention window falls back to a plain :meth:`forward`. A replay in force
        (:meth:`replaying`) is cut to each part's rows and columns."""
        self.check_sole()
        shared = common_start(enc)
        if isinstance(keep, torch.Tensor) and len(keep):
            shared = min(shared, int(keep.min()))
        ids, mask = enc["input_ids"], enc["attention_mask"]
        rows, width = ids.shape
        if (shared < 1 or not isinstance(keep, torch.Tensor) or self._cache_kw is None
                or not self._takes_keep or width >= self._window()):
            return self.forward(enc, keep)
        # the lead rows run whole: LEAD_ROWS of them (a lone row takes other kernels, which
        # round differently), one with padding when any row has some, so that their mask
        # takes the whole batch's attention path (an explicit mask, not sdpa's is_causal)
        padded = int((mask == 0).any(1).long().argmax())  # row 0 when none is padded
        lead = sorted([padded, *[r for r in range(rows) if r != padded][:LEAD_ROWS - 1]])
        if rows <= len(lead):
            return self.forward(enc, keep)
        lead_at = torch.tensor(lead, device=ids.device)
        rest = torch.tensor([r for r in range(rows) if r not in lead], device=ids.device)
        pos = position_ids(mask)
        cache_kw = str(self._cache_kw)
        lead_cache = decoding_cache(self.top.config, 0)
        args: dict[str, Any] = {"input_ids": ids[lead_at], "attention_mask": mask[lead_at],
                                "use_cache": True, cache_kw: lead_cache, "logits_to_keep": keep}
        if self._takes_positions:
            args["position_ids"] = pos[lead_at]
        with self.phase.reading(prompt=True), self._viewing(lead_at, 0):
            first = self.top(**args).logits
        if not any(layer.is_initialized for layer in lead_cache.layers):
            shared = 0  # every block replayed: no keys to share, and none to compute
        args = {"input_ids": ids[rest, shared:], "attention_mask": mask[rest],
                "use_cache": False, "logits_to_keep": keep - shared}
        if shared:  # every other row's cache: the first lead row's shared columns
            from transformers import DynamicCache

            past = DynamicCache(config=self.top.config)
            fill_past(past, lead_cache, torch.zeros(len(rest), dtype=torch.long), shared)
            args.update({"use_cache": True, cache_kw: past})
        if self._takes_positions:
            args["position_ids"] = pos[rest, shared:]
        # the others continue a cache of the shared columns: still the prompt's forward
        with self.phase.reading(prompt=True, width=width), self._viewing(rest, shared):
            others = self.top(**args).logits
        out = others.new_empty(rows, *others.shape[1:])
        out[lead_at] = first
        out[rest] = others
        return out

    def _window(self) -> float:
        """The shortest sliding window of the model's cache layers (inf: none): a sliding
        layer keeps only its last ``window - 1`` columns, so a batch that wide has no
        complete lead cache to share; 0 when a layer keeps no keys and values (a linear
        attention's state), which has no columns to share."""
        if self._sliding is None:
            from transformers import DynamicCache
            from transformers.cache_utils import DynamicLayer

            layers = DynamicCache(config=self.top.config).layers
            windows = [getattr(layer, "sliding_window", None) or float("inf")
                       for layer in layers]
            plain = all(isinstance(layer, DynamicLayer) for layer in layers)
            self._sliding = float(min(windows, default=float("inf"))) if plain else 0.0
        return self._sliding
