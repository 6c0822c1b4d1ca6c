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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import torch

from steerlab.errors import BackendMismatchError, LayerError, OptionError, SiteError
from steerlab.options import SITES, WHEN, Site, When

if TYPE_CHECKING:
    from steerlab.models import Model

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


class StopForward(Exception):
    """Raised by a capture hook once the last wanted layer has run, to skip the rest."""


def replace_hidden(output: Any, new: torch.Tensor) -> Any:
    """Put ``new`` where a block's output keeps its hidden states (a tensor, or a tuple's
    first element in older/other architectures such as GPT-2 or RWKV)."""
    if isinstance(output, tuple):
        return (new, *output[1:])
    return new


def hidden_of(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class Phase:
    """Whether the forward running now reads the prompt or continues a generation.

    The code that runs a forward says so: :meth:`reading` declares every forward inside it
    the prompt's (``prompt=True``: a plain forward, each stage of a staged prefill, the lead
    and the other rows of a shared-column forward) or a decoding step's (``False``). The
    backend's :meth:`Backend.generate` hands the library's loop to :meth:`generation`, which
    counts its forwards (the first reads the prompt, each later one decodes a token). Only a
    forward that neither covers (a generation started on the HF module directly) falls back to
    :func:`continues_cache` on the forward's own arguments.
    """

    def __init__(self) -> None:
        self.generating = False
        self.forwards = 0  # forwards seen in the current generation
        self.prefill = True
        self.declared: bool | None = None  # set by :meth:`reading`
        self._users = 0  # live edits that need the phase kept current
        self._hook: Any = None

    @contextmanager
    def reading(self, prompt: bool) -> Iterator[None]:
        """Every forward inside reads the prompt (``True``) or decodes a token (``False``)."""
        before = self.declared
        self.declared = prompt
        try:
            yield
        finally:
            self.declared = before

    @contextmanager
    def generation(self) -> Iterator[None]:
        """Count the forwards of one library ``generate`` call (nested calls are refused)."""
        if self.generating:
            raise RuntimeError("A generation is already running on this backend.")
        self.generating, self.forwards = True, 0
        try:
            yield
        finally:
            self.generating, self.forwards, self.prefill = False, 0, True

    def enter_forward(self, args: tuple, kwargs: dict[str, Any]) -> None:
        """Called before every forward of the model's top module (a declared phase needs no
        tracking: :meth:`admits` reads it)."""
        if self.declared is not None:
            return
        if self.generating:
            self.prefill = self.forwards == 0
            self.forwards += 1
        else:
            self.prefill = not continues_cache(args, kwargs)

    def admits(self, when: str) -> bool:
        return admits(when, self.prefill if self.declared is None else self.declared)

    def attach(self, top: torch.nn.Module) -> Handle:
        """Keep this phase current on every forward of ``top`` (the module every forward of
        the backend starts in). One pre-hook however many edits need it: two hooks would
        count each forward twice. The returned handle detaches (the hook goes with the last)."""
        if self._users == 0:
            self._hook = top.register_forward_pre_hook(self._enter, with_kwargs=True)
        self._users += 1
        return _Detach(self)

    def _enter(self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        self.enter_forward(args, kwargs)

    def _detach(self) -> None:
        self._users -= 1
        if self._users == 0 and self._hook is not None:
            self._hook.remove()
            self._hook = None


class _Detach:
    def __init__(self, phase: Phase) -> None:
        self._phase: Phase | None = phase

    def remove(self) -> None:
        if self._phase is not None:
            self._phase._detach()
            self._phase = None


def admits(when: str, prefill: bool) -> bool:
    """Whether an edit for ``when`` applies in a forward that does (not) read the prompt."""
    return when == "all" or (when == "prompt") == prefill


def continues_cache(args: tuple, kwargs: dict[str, Any]) -> bool:
    """True when a forward's arguments carry a non-empty KV cache or a recurrent state.

    Found by what the values are, not by keyword: any argument with a ``get_seq_length()``
    (a transformers ``Cache``; ``past_key_values=`` before transformers 5.24, ``cache=``
    since) holding tokens, a legacy tuple-of-layers cache, or a recurrent model's state
    (RWKV's ``state``, Mamba's ``cache_params``).
    """
    for key, value in (*enumerate(args), *kwargs.items()):
        if value is None or isinstance(value, torch.Tensor | bool | int | float | str):
            continue
        if hasattr(value, "get_seq_length"):
            if value.get_seq_length() > 0:
                return True
        elif key in ("state", "cache_params", "past_key_values"):
            return True
    return False


def gated(fn: EditFn, when: When, phase: Phase) -> EditFn:
    """``fn`` where ``phase`` admits ``when``, a no-op (None) elsewhere."""
    if when == "all":
        return fn

    def edit(h: torch.Tensor) -> torch.Tensor | None:
        return fn(h) if phase.admits(when) else None

    return edit


class Handles:
    """Several handles removed as one (last registered first; idempotent)."""

    def __init__(self, handles: list[Handle]) -> None:
        self._handles = handles

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()


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

    Subclasses say which points of block ``layer`` they can hook (:meth:`_points`) and how to
    register edits there (:meth:`_add_points`); sites, phases, the live-edit count and the
    one-backend-at-a-time rule are written once here.
    """

    name: str
    model: Model
    #: the transformers module that every forward of this backend goes through
    top: Any
    #: True when forward() may be cut short after the last captured point
    supports_early_stop: bool = False
    #: True when :meth:`record` / :meth:`replaying` exist (the fast sweep's shared prefix)
    supports_prefix_replay: bool = False

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
                 site: str = "resid_post") -> Handle:
        """Run ``fn`` on the tensor at ``site`` of block ``layer`` in every later forward
        (``when="all"``), only in the forward that reads the prompt (``"prompt"``) or only in
        the decoding steps of a generation (``"generated"``), until the returned handle's
        ``remove()`` is called. ``fn`` returns a replacement, or None to leave it as is."""
        when_ = check_when(when)
        site_ = check_site(site, self.sites, self.model.name)
        if not 0 <= layer < self.model.n_layers:
            raise LayerError(f"Layer {layer} out of range: {self.model.name} has layers "
                             f"0..{self.model.n_layers - 1}.")
        points = site_points(site_, fn, self.heads)
        return _Counted(self.model._live_edits, self.name,
                        self._add_points(layer, points, when_))

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

    def forward_shared(self, enc: dict[str, torch.Tensor],
                       keep: int | torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with ``keep``, reading the leading columns all rows share once
        where the backend can (the HF backend); here, a plain :meth:`forward`."""
        return self.forward(enc, keep)

    @abstractmethod
    def generate(self, enc: dict[str, torch.Tensor], **kwargs: Any) -> Any:
        """Token ids (B, T + new) from HF-style generation with the current edits applied
        (or transformers' output object when ``return_dict_in_generate=True``)."""

    def has_foreign_hooks(self) -> bool:
        """True when something other than this backend's live edits hooks the model."""
        return False

    def fast(self, path: Literal["replay", "greedy"]) -> bool:
        """The one test of whether a fast path may run now: the backend has it (``replay``:
        :meth:`record` / :meth:`replaying`; ``greedy``: :meth:`greedy`) and nothing but this
        call's own edits hooks the model (a foreign hook would see the shared work once, not
        once per cell)."""
        able = self.supports_prefix_replay if path == "replay" else self.supports_greedy
        return able and not self.has_foreign_hooks()

    #: True when :meth:`greedy` exists (rows leave the batch as they finish)
    supports_greedy: bool = False

    def greedy(self, enc: dict[str, torch.Tensor], max_new_tokens: int,
               stop: set[int] | None = None,
               done: Callable[[int, list[int]], bool] | None = None,
               on_rows: Callable[[torch.Tensor], None] | None = None,
               repeat: int = 1, shared_until: int | Sequence[int] | None = None
               ) -> list[list[int]]:
        """Greedy decoding in which each row leaves the batch once it is finished (a token in
        ``stop``, ``max_new_tokens`` reached, or ``done(row, new_tokens)``); see the HF
        backend."""
        raise OptionError(f"Backend {self.name!r} has no greedy loop; use backend='hf'.")

    def record(self, enc: dict[str, torch.Tensor], layer: int,
               start: tuple[int, Any] | None = None) -> Any:
        """Block ``layer``'s output on ``enc``, running no block after it; ``start`` =
        (earlier layer, its recorded output) resumes from there instead of the embeddings."""
        raise OptionError(f"Backend {self.name!r} has no prefix replay; use backend='hf'.")

    @contextmanager
    def replaying(self, layer: int, output: Any) -> Iterator[None]:
        """Inside: blocks ``0..layer`` hand back ``output`` (block ``layer``'s recorded
        output) without computing; their edits still run on it."""
        raise OptionError(f"Backend {self.name!r} has no prefix replay; use backend='hf'.")
        yield


def head_shape(model: Model) -> tuple[int, int] | None:
    """(n_heads, d_head) of the model's attention, or None (RWKV and other attention-free
    architectures)."""
    cfg = model.hf.config
    n = getattr(cfg, "num_attention_heads", None)
    if not isinstance(n, int) or n < 1:
        return None
    d = getattr(cfg, "head_dim", None)
    return n, int(d) if isinstance(d, int) and d > 0 else int(cfg.hidden_size) // n


#: child-module names of the parts of a transformers decoder block, by architecture family
ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn")
#: the norm that reads resid_mid (Gemma's pre_feedforward first: its post_attention_layernorm
#: normalises the attention output instead)
MID_NORM_NAMES = ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2", "ln2")
O_PROJ_NAMES = ("o_proj", "c_proj", "out_proj", "dense")


def block_parts(block: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The submodules of one HF decoder block that hold points: ``attn``, ``mlp``,
    ``mid_norm`` and ``o_proj``, where the block has them."""
    children = dict(block.named_children())
    parts: dict[str, torch.nn.Module] = {}
    for key, names in (("attn", ATTN_NAMES), ("mlp", MLP_NAMES), ("mid_norm", MID_NORM_NAMES)):
        found = next((children[n] for n in names if n in children), None)
        if found is not None:
            parts[key] = found
    if "attn" in parts:
        inner = dict(parts["attn"].named_children())
        o = next((inner[n] for n in O_PROJ_NAMES if n in inner), None)
        if o is not None:
            parts["o_proj"] = o
    return parts


def points_of(parts: dict[str, torch.nn.Module]) -> frozenset[Point]:
    have: set[Point] = {"block_in", "block_out"}
    for part, point in (("attn", "attn_out"), ("mlp", "mlp_out"), ("mid_norm", "mid_in"),
                        ("o_proj", "o_in")):
        if part in parts:
            have.add(point)  # type: ignore[arg-type]
    return frozenset(have)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counted over real tokens, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def keep_positions(logits: torch.Tensor, keep: int | torch.Tensor | None) -> torch.Tensor:
    """Slice full (B, T, vocab) logits like ``keep`` in :meth:`Backend.forward`."""
    if keep is None:
        return logits
    if isinstance(keep, int):
        return logits[:, -keep:]
    return logits[:, keep]
