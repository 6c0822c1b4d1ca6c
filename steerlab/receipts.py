"""Receipts: what an intervention actually did, and guards that make a silent failure loud.

A :class:`Receipt` belongs to one intervention context (a steering, a patching run, a
capture, learned vectors attached). The backend wraps each edit the context registers
(:meth:`Receipt.wrap`) so that every time it runs it notes where: the forward (numbered by
the backend, its phase told by evidence the phase rule does not use:
:class:`~steerlab.backends.phase.Seen`), the layer and site, the rows and positions it saw,
and at ``level="detail"`` how far it moved them (``||Δh||`` per token) next to what the
request implies (``coeff x scale x ||v||`` for an addition, ``|coeff| |h·r̂|`` for a
projection).

Levels: ``counts`` (the default: forwards, rows, positions; no tensor arithmetic), ``detail``
(sizes too, and the size guard), ``off`` (nothing registered).

Guards (``guards="raise"``, the default; ``"warn"`` warns instead; ``"off"``), each raising
:class:`~steerlab.errors.ReceiptError` inside the forward where it happens:

* an edit that did not run in a complete forward whose phase it asked for (a phase rule
  gone wrong: a generated-only edit that never fires during decoding, a prompt-only edit
  missing a stage of the prompt);
* an edit that ran in a forward of the other phase (a prompt-only edit on a decoding step);
* an edit that ran twice in one forward (a hook registered twice);
* (``detail``) an edit whose realised change differs from the requested one by more than
  the dtype's rounding (a broadcast or dtype slip, a vector added twice inside one hook).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch

from steerlab.errors import OptionError, ReceiptError, ReceiptWarning
from steerlab.receipt_totals import collect, describe

if TYPE_CHECKING:
    import pandas as pd

    from steerlab.backends.base import EditFn
    from steerlab.backends.phase import Seen

Level = Literal["counts", "detail", "off"]
LEVELS: tuple[Level, ...] = get_args(Level)
Guards = Literal["raise", "warn", "off"]
GUARDS: tuple[Guards, ...] = get_args(Guards)

#: the change an edit is asked to make, as a function of the float32 tensor it sees
Expected = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EditInfo:
    """One edit a receipt watches."""

    id: int
    layer: int
    site: str
    when: str
    expect: Expected | None = None
    #: the unit direction whose component ``|h·r̂|`` the table reports (projections)
    direction: torch.Tensor | None = None
    #: the original row of each batch row the edit sees now (None: the batch's own order)
    rows: Callable[[], torch.Tensor | None] | None = None
    fired: int = 0
    live: bool = True  # registered (False once its handle is removed)

    def remove(self) -> None:
        """Stop expecting this edit (its hooks came off): the handle the backend keeps."""
        self.live = False


@dataclass
class _Forward:
    seen: Seen
    fired: set[int] = field(default_factory=set)
    complete: bool = False


@dataclass
class Firing:
    """One edit running once in one forward (a row of :meth:`Receipt.table`)."""

    forward: int
    phase: str
    step: int
    edit: int
    rows: int
    positions: int  # tokens the edit changed (``counts``: tokens it saw)
    first: int  # first and last changed column, counting the cache's columns before
    last: int
    #: ``detail``: per batch row, the sum over its changed tokens of ``||Δh||``, of the
    #: requested size, of ``|h·r̂|``, and the changed tokens (float32 tensors (B,))
    per_row: tuple[torch.Tensor, ...] | None = None
    max_norm: float = math.nan
    row_ids: torch.Tensor | None = None


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps if dtype.is_floating_point else 0.0


class Receipt:
    """What one intervention context did: see the module docstring.

    ``str(receipt)`` is one line per (layer, site): e.g. ``steered layer 12 resid_post at 0
    prompt forwards and 31 decoding steps x 4 rows, 0 prompt positions, 124 decoded, mean
    change 58.2 (asked 58.2)``; :meth:`table` is one row per (forward, layer, site), forwards
    numbered from 1 in the order this receipt saw them; a notebook shows both. Positions are
    real tokens (pads, which the attention mask hides, are not counted)."""

    def __init__(self, what: str = "steered", level: Level = "counts",
                 guards: Guards = "raise") -> None:
        if level not in LEVELS:
            raise OptionError(f"Unknown receipt level {level!r}: use one of {LEVELS}.")
        if guards not in GUARDS:
            raise OptionError(f"Unknown guards {guards!r}: use one of {GUARDS}.")
        self.what, self.level, self.guards = what, level, guards
        self.edits: list[EditInfo] = []
        self.firings: list[Firing] = []
        self._now: _Forward | None = None
        self.forwards = 0  # forwards begun while watched
        self.complete = 0  # of them, forwards that completed

    # -- what the backend calls -------------------------------------------------------
    def wrap(self, fn: EditFn, layer: int, site: str, when: str,
             expect: Expected | None = None, direction: torch.Tensor | None = None,
             rows: Callable[[], torch.Tensor | None] | None = None
             ) -> tuple[EditFn, EditInfo]:
        """``fn`` noting each run in this receipt, and the edit's record, whose ``remove()``
        the backend calls when the edit's hooks come off (it calls this in ``add_edit``)."""
        info = EditInfo(len(self.edits), layer, site, when, expect, direction, rows)
        self.edits.append(info)
        detail = self.level == "detail"

        def edit(h: torch.Tensor) -> torch.Tensor | None:
            # detail compares with what came in: keep it, in case the edit works in place
            before = h.detach().clone() if detail else h
            try:
                new = fn(h)
            except BaseException:
                self._note(info, before, None, False)  # it ran (a capture may stop the forward)
                raise
            if detail and new is None and not torch.equal(h, before):
                new = h  # changed in place
            self._note(info, before, new, detail)
            return new

        return edit, info

    def begin(self, seen: Seen) -> None:
        self.forwards += 1
        self._now = _Forward(replace(seen, index=self.forwards))

    def end(self) -> None:
        now = self._now
        if now is None:
            return
        now.complete = True
        self.complete += 1
        for info in self.edits:
            if info.live and info.id not in now.fired and _admits(info.when, now.seen.phase):
                self._fail(f"{self._name(info)} did not run in forward {now.seen.index} "
                           f"({_phase_text(now.seen)}), which it applies to: the phase rule "
                           "or a hook lost it, so this forward is unsteered there.")

    # -- recording ------------------------------------------------------------------------
    def _note(self, info: EditInfo, h: torch.Tensor, new: torch.Tensor | None,
              detail: bool) -> None:
        now = self._now
        if now is None:  # a forward the backend's top module did not start (none known)
            from steerlab.backends.phase import Seen

            now = self._now = _Forward(Seen(0, "prompt", 0, h.shape[0], h.shape[1], 0))
        seen = now.seen
        if info.id in now.fired:
            self._fail(f"{self._name(info)} ran twice in forward {seen.index}: its hook is "
                       "registered twice, or the backend runs the point twice, so the edit "
                       "is applied twice.")
        now.fired.add(info.id)
        info.fired += 1
        if not _admits(info.when, seen.phase):
            self._fail(f"{self._name(info)} ran in forward {seen.index}, "
                       f"{_phase_text(seen)}: it applies only to "
                       f"{'the prompt' if info.when == 'prompt' else 'decoding steps'}.")
        rows, cols = h.shape[0], h.shape[1]
        real = seen.real if seen.real is not None and tuple(seen.real.shape) == (rows, cols) \
            else None
        row_ids = info.rows() if info.rows is not None else None
        if not detail or new is None:
            seen_tokens = rows * cols if real is None else int(real.sum())
            self.firings.append(Firing(seen.index, seen.phase, seen.step, info.id, rows,
                                       seen_tokens if new is not None else 0, seen.start,
                                       seen.start + cols - 1, row_ids=row_ids))
            return
        with torch.no_grad():
            hf, nf = h.detach().float(), new.detach().float()
            delta = (nf - hf).flatten(2)
            size = delta.norm(dim=-1)  # (B, T)
            changed = size > 0
            if real is not None:
                changed &= real.to(changed.device)
            per_row = [(size * changed).sum(1), changed.sum(1).float()]
            cols_hit = changed.any(0).nonzero()
            first, last = ((int(cols_hit[0]), int(cols_hit[-1])) if len(cols_hit)
                           else (0, -1))
            if info.expect is not None:
                want = info.expect(hf).flatten(2)
                asked = want.norm(dim=-1)
                per_row.insert(1, (asked * changed).sum(1))
                err = (delta - want).norm(dim=-1)
                bound = 4 * _eps(h.dtype) * (hf.flatten(2).norm(dim=-1)
                                             + nf.flatten(2).norm(dim=-1) + asked)
                bad = err > bound + 1e-30  # a real token changed otherwise than asked
                if real is not None:
                    bad &= real.to(bad.device)
                if bool(bad.any()):
                    i = int(bad.flatten().nonzero()[0])
                    b, t = divmod(i, cols)
                    self._fail(f"{self._name(info)} changed row {b}, column "
                               f"{seen.start + t} of forward {seen.index} by "
                               f"{float(size[b, t]):.4g} where the request implies "
                               f"{float(asked[b, t]):.4g} (off by {float(err[b, t]):.3g}, "
                               f"beyond {h.dtype}'s rounding {float(bound[b, t]):.2g}): a "
                               "broadcast, dtype or doubled-edit slip.")
            else:
                per_row.insert(1, torch.full_like(per_row[0], math.nan))
            if info.direction is not None:
                comp = (hf.flatten(2) @ info.direction.to(hf.device).float()).abs()
                per_row.insert(2, (comp * changed).sum(1))
            else:
                per_row.insert(2, torch.full_like(per_row[0], math.nan))
            self.firings.append(Firing(
                seen.index, seen.phase, seen.step, info.id, rows, int(changed.sum()),
                seen.start + first, seen.start + last, tuple(t.cpu() for t in per_row),
                float(size.max()) if size.numel() else 0.0, row_ids))

    def _fail(self, message: str) -> None:
        text = f"Receipt of {self.what}: {message}"
        if self.guards == "raise":
            raise ReceiptError(text)
        if self.guards == "warn":
            warnings.warn(text, ReceiptWarning, stacklevel=3)

    def _name(self, info: EditInfo) -> str:
        gate = "" if info.when == "all" else f" (positions={info.when!r})"
        return f"the edit at layer {info.layer} {info.site}{gate}"

    # -- reading ----------------------------------------------------------------------------
    def table(self) -> pd.DataFrame:
        """One row per (forward, layer, site): ``forward``, ``phase`` (prompt / decoding),
        ``step`` (0 for the prompt, k for the k-th decoding step), ``layer``, ``site``,
        ``when``, ``rows``, ``positions`` (real tokens changed; at ``counts``: real tokens
        seen), ``first``/``last`` (the span of changed columns; at ``counts``: of the
        columns seen), and at ``detail`` ``mean_norm`` /
        ``max_norm`` (``||Δh||`` over the changed tokens), ``asked`` (the mean size the
        request implies) and ``mean_proj`` (``|h·r̂|`` before the edit, projections)."""
        import pandas as pd

        columns = ["forward", "phase", "step", "layer", "site", "when", "rows", "positions",
                   "first", "last"]
        if self.level == "detail":
            columns += ["mean_norm", "asked", "mean_proj", "max_norm"]
        out = []
        for f in self.firings:
            info = self.edits[f.edit]
            row: dict[str, Any] = {
                "forward": f.forward, "phase": f.phase, "step": f.step, "layer": info.layer,
                "site": info.site, "when": info.when, "rows": f.rows,
                "positions": f.positions, "first": f.first, "last": f.last}
            if self.level == "detail":
                row.update(_means(f))
                row["max_norm"] = f.max_norm
            out.append(row)
        return pd.DataFrame(out, columns=columns)

    def totals(self, rows: Any = None, layers: Any = None) -> list[dict[str, Any]]:
        """Per (layer, site): the forwards of each phase it ran in, the rows and positions it
        changed, and (``detail``) the mean changed size next to the asked one. ``rows``: only
        the original batch rows in this collection (a sweep cell's rows of a batch of
        cells); each firing's row ids come from the edit's ``rows`` callback. ``layers``:
        only edits at these layers."""
        return collect(self.edits, self.firings, self.level, rows, layers)

    def summary(self, rows: Any = None, layers: Any = None) -> str:
        """One line per (layer, site) (see :meth:`totals`)."""
        return describe(self.what, self.totals(rows, layers), self.forwards)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"<Receipt {self.what}: {self.forwards} forwards, {len(self.firings)} edits ran>"

    def _repr_html_(self) -> str:
        import html

        lines = "<br>".join(html.escape(x) for x in self.summary().split("\n"))
        tab = self.table()
        body = tab.head(40).to_html(index=False) if len(tab) else ""
        more = f"<p>({len(tab) - 40} more rows: receipt.table())</p>" if len(tab) > 40 else ""
        return f"<div><p><b>receipt</b><br>{lines}</p>{body}{more}</div>"


def _admits(when: str, phase: str) -> bool:
    return when == "all" or (when == "prompt") == (phase == "prompt")


def _phase_text(seen: Seen) -> str:
    return ("a forward of the prompt" if seen.phase == "prompt"
            else f"decoding step {seen.step}")


def _means(f: Firing) -> dict[str, float]:
    if f.per_row is None:
        return {"mean_norm": math.nan, "asked": math.nan, "mean_proj": math.nan}
    norm, asked, proj, count = (t.sum().item() for t in f.per_row)
    n = count or math.nan
    return {"mean_norm": norm / n, "asked": asked / n, "mean_proj": proj / n}
