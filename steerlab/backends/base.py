"""The interface every backend implements, the names of hook sites, and the shared plumbing.

A *site* is a named place in a decoder block where a tensor can be read or replaced; the
vocabulary follows TransformerLens:

========== ===================================================== ==========================
site       what it is                                             shape seen by an edit
========== ===================================================== ==========================
resid_pre  the block's input (residual stream before the block)   (B, T, d_model)
z          the attention heads' outputs before the output proj.   (B, T, n_heads, d_head)
attn_out   the attention module's output                          (B, T, d_model)
resid_mid  the residual stream between attention and MLP          (B, T, d_model)
mlp_out    the MLP module's output                                (B, T, d_model)
resid_post the block's output (residual stream after the block)   (B, T, d_model)
========== ===================================================== ==========================

A backend offers a few *points* (module inputs and outputs it can hook); every site is written
once here in terms of them (:func:`site_points`), so the three backends cannot disagree on what
a site means. ``resid_mid`` has no module of its own: it is the input of the pre-MLP norm, and
an edit there also adds its change to the block's output, because the residual the MLP's
output is added to is the same tensor (exact up to float rounding).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import torch

from steerlab.backends.blocks import head_shape
from steerlab.backends.phase import Phase
from steerlab.errors import BackendMismatchError, LayerError, OptionError, SiteError
from steerlab.options import SITES, WHEN, Site, When

if TYPE_CHECKING:
    from steerlab.models import Model
    from steerlab.receipts import Receipt

# An edit sees the tensor at a site and returns a replacement of the same shape, or None to
# leave it unchanged (a read-only observer).
EditFn = Callable[[torch.Tensor], "torch.Tensor | None"]

#: what a backend can hook in each block, in execution order
Point = Literal["block_in", "o_in", "attn_out", "mid_in", "mlp_out", "block_out"]
POINTS: tuple[Point, ...] = get_args(Point)
#: the points each site needs
SITE_POINTS: dict[str, tuple[Point, ...]] = {
    "resid_pre": ("block_in",), "z": ("o_in",), "attn_out": ("attn_out",),
    "resid_mid": ("mid_in", "block_out"), "mlp_out": ("mlp_out",),
    "resid_post": ("block_out",)}


class Handle(Protocol):
    def remove(self) -> None: ...


def check_site(site: str, available: tuple[str, ...], model_name: str) -> Site:
    if site not in SITES:
        raise SiteError(f"Unknown site {site!r}: use one of {', '.join(SITES)}.")
    if site not in available:
        raise SiteError(f"{model_name} has no {site!r} site; its sites are "
                        f"{', '.join(available)}.")
    return site  # type: ignore[return-value]


def check_when(when: str) -> When:
    if when not in WHEN:
        raise OptionError(f"Unsupported edit phase {when!r}: use one of {', '.join(WHEN)}.")
    return when  # type: ignore[return-value]


def site_points(site: Site, fn: EditFn, heads: tuple[int, int] | None
                ) -> list[tuple[Point, EditFn]]:
    """The (point, edit) pairs that run ``fn`` at ``site``."""
    if site == "z":
        assert heads is not None
        return [("o_in", _per_head(fn, heads))]
    if site == "resid_mid":
        return list(zip(SITE_POINTS["resid_mid"], _mid_edit(fn), strict=True))
    return [(SITE_POINTS[site][0], fn)]


def _per_head(fn: EditFn, heads: tuple[int, int]) -> EditFn:
    """``fn`` on (B, T, n_heads, d_head), for a point that holds (B, T, n_heads * d_head)
    (the HF output projection's input) or already (B, T, n_heads, d_head) (the bridge's)."""
    def edit(h: torch.Tensor) -> torch.Tensor | None:
        split = tuple(h.shape[-2:]) != heads
        new = fn(h.view(*h.shape[:-1], *heads) if split else h)
        return None if new is None else new.reshape(h.shape)

    return edit


def _mid_edit(fn: EditFn) -> tuple[EditFn, EditFn]:
    """``fn`` at the pre-MLP norm's input, and the same change added to the block's output
    (``resid_post = resid_mid + mlp(norm(resid_mid))``: the residual must change too)."""
    delta: list[torch.Tensor] = []

    def at_norm(h: torch.Tensor) -> torch.Tensor | None:
        delta.clear()
        new = fn(h)
        if new is not None:
            delta.append(new - h)
        return new

    def at_out(h: torch.Tensor) -> torch.Tensor | None:
        return h + delta.pop() if delta else None

    return at_norm, at_out


class Handles:
    """Several handles removed as one (last registered first; idempotent); as a context
    manager, removed when the block exits, whatever happens in it."""

    def __init__(self, handles: list[Handle]) -> None:
        self._handles = handles

    @property
    def active(self) -> bool:
        """True until :meth:`remove` has run."""
        return bool(self._handles)

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> Handles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def register_all(steps: list[Callable[[], Handle]]) -> Handles:
    """Run each registration in turn; when one fails, those before it come off again."""
    handles: list[Handle] = []
    try:
        for step in steps:
            handles.append(step())
    except BaseException:
        Handles(handles).remove()
        raise
    return Handles(handles)


class _Counted:
    """A handle that keeps the model's count of live edits per backend."""

    def __init__(self, live: dict[str, int], name: str, inner: Handle) -> None:
        self._live, self._name, self._inner = live, name, inner
        live[name] = live.get(name, 0) + 1

    def remove(self) -> None:
        if self._inner is not None:
            try:
                self._inner.remove()
            finally:
                self._inner = None  # type: ignore[assignment]
                self._live[self._name] -= 1


class Backend(ABC):
    """One way of running a model with edits at its sites.

    Every backend implements the same interface: its :attr:`sites`, :meth:`add_edit`,
    :meth:`forward` and :meth:`generate` (captures are edits that return None). Subclasses say
    which points of block ``layer`` they can hook (:meth:`_points`) and how to register edits
    there (:meth:`_add_points`); sites, phases (:class:`~steerlab.backends.phase.Phase`), the
    live-edit count and the one-backend-at-a-time rule are written once here. Sharing work
    between cells is an optional protocol (:class:`steerlab.engine.FastPath`) that the HF
    backend implements and only :mod:`steerlab.engine` calls.
    """

    name: str
    model: Model
    #: the transformers module that every forward of this backend goes through
    top: Any
    #: True when forward() may be cut short after the last captured point
    supports_early_stop: bool = False

    def __init__(self, model: Model) -> None:
        self.model = model
        self.phase = Phase()
        points = self._points()
        self.sites: tuple[Site, ...] = tuple(
            s for s in SITES if all(p in points for p in SITE_POINTS[s])
            and (s != "z" or self.heads is not None))

    @property
    def heads(self) -> tuple[int, int] | None:
        """(n_heads, d_head) where the model's attention exposes per-head outputs."""
        return head_shape(self.model)

    def add_edit(self, layer: int, fn: EditFn, when: str = "all",
                 site: Site = "resid_post", receipt: Receipt | None = None,
                 **noted: Any) -> Handle:
        """Run ``fn`` on the tensor at ``site`` of block ``layer`` in every later forward
        (``when="all"``), only in the forward that reads the prompt (``"prompt"``) or only in
        the decoding steps of a generation (``"generated"``), until the returned handle's
        ``remove()`` is called. ``fn`` returns a replacement, or None to leave it as is.

        ``receipt``: a :class:`~steerlab.receipts.Receipt` that notes every run of ``fn``
        and hears about every forward (``noted``: what it needs to judge the edit, see
        :meth:`Receipt.wrap`)."""
        when_ = check_when(when)
        site_ = check_site(site, self.sites, self.model.name)
        if not 0 <= layer < self.model.n_layers:
            raise LayerError(f"Layer {layer} out of range: {self.model.name} has layers "
                             f"0..{self.model.n_layers - 1}.")
        steps: list[Callable[[], Handle]] = []
        if receipt is not None and receipt.level != "off":
            fn, noted_edit = receipt.wrap(fn, layer, site_, when_, **noted)
            steps += [lambda: noted_edit, partial(self.phase.watch, self.top, receipt)]
        points = site_points(site_, fn, self.heads)
        steps.append(lambda: _Counted(self.model._live_edits, self.name,
                                      self._add_points(layer, points, when_)))
        return register_all(steps)

    def add_edits(self, edits: Iterable[tuple[int, EditFn] | tuple[int, EditFn, dict[str, Any]]]
                  ) -> Handles:
        """Several :meth:`add_edit` calls, ``(layer, fn)`` or ``(layer, fn, {"site": ...,
        "when": ..., "receipt": ...})`` each, as one handle: all registered, or none left
        behind when one fails; removed last first by ``remove()`` or at the end of a ``with``
        block."""
        return register_all([partial(self.add_edit, e[0], e[1], **(e[2] if len(e) > 2 else {}))
                             for e in edits])

    def check_sole(self) -> None:
        """Refuse to run while edits are live on another backend of the same model: they
        would silently not apply here (each backend runs its own hooks, or its own copy)."""
        others = sorted(n for n, k in self.model._live_edits.items() if k and n != self.name)
        if others:
            raise BackendMismatchError(
                f"Steering or other edits are active on backend {others[0]!r} of "
                f"{self.model.name}, but this call runs on backend {self.name!r}, where they "
                f"would not apply. Pass backend={others[0]!r} to this call too, or remove "
                "those edits first.")

    @abstractmethod
    def _points(self) -> frozenset[Point]:
        """The points every block of this model offers."""

    @abstractmethod
    def _add_points(self, layer: int, points: list[tuple[Point, EditFn]], when: When
                    ) -> Handle:
        """Register each (point, edit) of block ``layer``, gated by ``when``; one handle."""

    @abstractmethod
    def forward(self, enc: dict[str, torch.Tensor],
                keep: int | torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for a padded batch ``enc`` (input_ids, attention_mask).

        ``keep``: only the last ``keep`` positions (an int) or the given sorted positions (a 1-D
        tensor), (B, P, vocab); the HF backend then skips the unembedding elsewhere, which
        matters for large vocabularies (Gemma's 262k rows). Gradients flow (no ``no_grad``
        here), so the same call scores completions for training.
        """

    @abstractmethod
    def generate(self, enc: dict[str, torch.Tensor], **kwargs: Any) -> Any:
        """Token ids (B, T + new) from HF-style generation with the current edits applied
        (or transformers' output object when ``return_dict_in_generate=True``)."""

    def has_foreign_hooks(self) -> bool:
        """True when something other than this backend's live edits hooks the model."""
        return False
