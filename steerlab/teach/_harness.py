"""What every check shares: the result object, the stub marker, calling a participant's function
without crashing, comparing tensors with a specific message, the models checks run on, and
hook bookkeeping.

A check never raises because of the participant's code: wrong types, shapes, dtypes, NaNs and
exceptions all become a failed :class:`CheckResult` whose message says what was expected, what
came back, and a hint.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from steerlab.models import Model


class NotDoneYet(NotImplementedError):
    """Raised by an exercise stub: the participant has not written this function yet."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check.

    Attributes:
        name: the check's name, e.g. ``check_mean_difference``.
        passed: True when the participant's function agreed with the reference everywhere.
        message: what the check printed (expected, got, hint).
        not_done: True when the function is still the stub (then ``passed`` is False).
    """

    name: str
    passed: bool
    message: str
    not_done: bool = False

    def __repr__(self) -> str:
        state = "passed" if self.passed else "not done yet" if self.not_done else "failed"
        return f"<{self.name}: {state}>"

    def _ipython_display_(self) -> None:
        """A check printed its message when it ran; as a cell's value it shows nothing more."""


class Fail(Exception):
    """Raised inside a check body: the participant's answer is wrong; ``str`` is the message."""


class _NotDone(Exception):
    pass


def check(fn: Callable[..., str]) -> Callable[..., CheckResult]:
    """Turn a check body into a check: the body returns the success message or raises
    :class:`Fail`; the wrapper prints one message and returns a :class:`CheckResult`."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> CheckResult:
        try:
            res = CheckResult(name, True, f"passed: {fn(*args, **kwargs)}")
        except _NotDone as err:
            res = CheckResult(name, False, f"not done yet: {err}", not_done=True)
        except Fail as err:
            res = CheckResult(name, False, f"failed: {err}")
        except Exception as err:  # noqa: BLE001 - a check must never crash on odd answers
            res = CheckResult(name, False, f"failed: the check could not use what your "
                                           f"function returned ({type(err).__name__}: {err}).")
        print(f"{name} {res.message}")
        return res

    return wrapper


def call(fn: Any, *args: Any, what: str | None = None, hint: str = "", **kwargs: Any) -> Any:
    """Call a participant's function; its exceptions become :class:`Fail` (or "not done yet"
    for the stub) naming the line that raised, followed by ``hint``."""
    label = what or f"{getattr(fn, '__name__', 'your function')}(...)"
    if not callable(fn):
        raise Fail(f"expected a function, got {type(fn).__name__} {fn!r:.60}. Pass the function "
                   "itself, without calling it (no parentheses).")
    try:
        return fn(*args, **kwargs)
    except NotDoneYet as err:
        frame = traceback.extract_tb(err.__traceback__)[-1]
        raise _NotDone(f"{frame.name}() still raises NotDoneYet. Replace the stub with your "
                       "code (the hint is in the comments above it), then run the check again."
                       ) from None
    except Exception as err:  # noqa: BLE001 - report, never crash
        frame = traceback.extract_tb(err.__traceback__)[-1]
        where = f" at line {frame.lineno} of {frame.name}(): {frame.line}" if frame.line else ""
        raise Fail(f"{label} raised {type(err).__name__}: {err}{where}"
                   + (f". Hint: {hint}" if hint else "")) from None


def head(v: torch.Tensor, k: int = 3) -> str:
    """The first ``k`` values of ``v`` for a message: ``[0.12, -3.4, 5, ...]``."""
    return "[" + ", ".join(f"{x:.3g}" for x in v[:k].cpu().tolist()) + ", ...]"


def as_number(got: Any, what: str) -> float:
    """``got`` as one finite float, or :class:`Fail` saying what is wrong."""
    if got is None:
        raise Fail(f"{what} returned None; expected one number. Did you forget `return`?")
    size = (got.numel() if isinstance(got, torch.Tensor)
            else got.size if isinstance(got, np.ndarray) else 1)
    if size != 1:
        raise Fail(f"{what} returned an array of shape {tuple(got.shape)}; expected one "
                   "number.")
    try:
        val = float(got)
    except (TypeError, ValueError):
        raise Fail(f"{what} returned {type(got).__name__} {got!r:.60}; expected one number."
                   ) from None
    if not np.isfinite(val):
        raise Fail(f"{what} returned {val}: did you divide by zero?")
    return val


def as_tensor(got: Any, what: str, shape: tuple[int, ...]) -> torch.Tensor:
    """``got`` as a float32 tensor of ``shape``, or :class:`Fail` saying what is wrong."""
    if got is None:
        raise Fail(f"{what} returned None; expected a tensor of shape {shape}. Did you forget "
                   "`return`?")
    if not isinstance(got, torch.Tensor):
        try:
            got = torch.as_tensor(got)
        except Exception:  # noqa: BLE001
            raise Fail(f"{what} returned a {type(got).__name__}; expected a torch.Tensor of "
                       f"shape {shape}.") from None
    if tuple(got.shape) != shape:
        raise Fail(f"{what} returned shape {tuple(got.shape)}; expected {shape}.")
    if not got.is_floating_point():
        raise Fail(f"{what} returned dtype {got.dtype}; expected floats (residuals are real "
                   "numbers: did an integer tensor or a .long() slip in?).")
    got = got.detach().float().cpu()
    if not torch.isfinite(got).all():
        raise Fail(f"{what} returned NaN or inf values ({int((~torch.isfinite(got)).sum())} "
                   "of them).")
    return got


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """||got - ref|| / ||ref|| over the whole tensor."""
    return float((got - ref).norm() / ref.norm().clamp_min(1e-12))


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().float(), b.flatten().float()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-12))


def tolerance(model: Model) -> float:
    """Relative tolerance for comparing with steerlab on ``model``: tight in fp32, looser in
    bf16 (batched and one-at-a-time forwards round differently)."""
    return 1e-4 if model.dtype == torch.float32 else 3e-2


# ---- the models a check runs on -------------------------------------------------------------

_MODELS: dict[str, Model] = {}


def _char_tokenizer() -> Any:
    """Characters of printable ASCII as tokens, plus pad/bos/eos: a tokenizer built offline."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = ["<pad>", "<bos>", "<eos>", "<unk>"] + [chr(i) for i in range(32, 127)]
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


def tiny(arch: str = "llama") -> Model:
    """A seeded 4-layer random model (``llama`` or ``gpt2``, d_model 32, 128 tokens): checks
    run here first, because it is fast and exact (fp32)."""
    if arch not in _MODELS:
        from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

        from steerlab.models import model_from_hf

        ids: dict[str, Any] = {"vocab_size": 128, "pad_token_id": 0, "bos_token_id": 1,
                               "eos_token_id": 2}
        cfg = (LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, **ids)
               if arch == "llama" else GPT2Config(n_embd=32, n_layer=4, n_head=4, **ids))
        torch.manual_seed(1234)
        hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32,
                                              attn_implementation="sdpa")
        _MODELS[arch] = model_from_hf(hf, _char_tokenizer(), name=f"tiny-{arch}")
    return _MODELS[arch]


def embedded(model: Model | None) -> Model:
    """``model`` if given (the one the lesson loaded), else the default embedded model, loaded
    once per process."""
    if model is not None:
        return model
    from steerlab.models import DEFAULT_MODEL, load_model

    if DEFAULT_MODEL not in _MODELS:
        _MODELS[DEFAULT_MODEL] = load_model(DEFAULT_MODEL)
    return _MODELS[DEFAULT_MODEL]


def models_for(model: Model | None, embedded_too: bool, archs: tuple[str, ...] = ("llama",)
               ) -> list[Model]:
    """The models a check runs on: tiny ones first, then the embedded one (unless skipped)."""
    return [tiny(a) for a in archs] + ([embedded(model)] if embedded_too else [])


# ---- hooks ----------------------------------------------------------------------------------

def _hooks(model: Model) -> list[tuple[str, dict, int]]:
    """(module name, hook dict, key) of every forward hook and pre-hook on the model, except
    the inactive output-capturing hooks transformers 5 installs once for good (the first time
    anyone asks for ``output_hidden_states``): those are the library's, not a leak."""
    return [(name, d, k) for name, m in model.hf.named_modules()
            for d in (m._forward_hooks, m._forward_pre_hooks) for k, fn in d.items()
            if not (getattr(fn, "__module__", None) or "").startswith("transformers.")]


def count_hooks(model: Model) -> int:
    """Forward hooks and pre-hooks currently registered on the model (not counting the
    output-capturing ones transformers keeps for itself)."""
    return len(_hooks(model))


def remove_hooks(model: Model) -> int:
    """Remove every forward hook and pre-hook that :func:`count_hooks` counts (a lesson's
    clean-up after it leaked one on purpose); returns how many were removed."""
    found = _hooks(model)
    for _, d, k in found:
        del d[k]
    return len(found)


class HookGuard:
    """Context manager: afterwards, ``leaked`` lists the modules that gained hooks inside the
    block; those hooks are removed, so a wrong answer cannot break later checks."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.leaked: list[str] = []

    def __enter__(self) -> HookGuard:
        self._before = {(id(d), k) for _, d, k in _hooks(self.model)}
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, d, k in _hooks(self.model):
            if (id(d), k) not in self._before:
                del d[k]
                self.leaked.append(name or "(top)")
