"""llama.cpp as a peer: steerlab's exported vectors and baked checkpoints run in real llama.cpp
(through llama-cpp-python, a test-only dependency like the other peers), so a change in
llama.cpp's control-vector format or layer mapping shows up in the suite.

* :func:`read_control_vector` reads a GGUF control vector the way llama.cpp's loader does
  (``common_control_vector_load_one`` in ``common/common.cpp``): 1-D F32 ``direction.{k}``,
  ``k > 0``, one width (anything else refuses the file), into a buffer that holds block k's
  direction at offset ``(k - 1) * n_embd``.
* :class:`LlamaCpp` opens a GGUF model and hands that buffer to libllama's
  ``llama_set_adapter_cvec`` for every block (zeros where the file has none, so a shorter
  vector never leaves a previous one's upper layers in place) and resets the context after
  each change (so no prompt prefix computed under the old vector is reused): the two traps of
  changing vectors inside one context. It decodes greedily from token ids that steerlab's
  tokenizer made, so both sides read the same prompt.
* :func:`evaluate_llama_cpp` scores a generative task's items with steerlab's judge;
  :func:`convert_to_gguf` runs the pinned llama.cpp's own ``convert_hf_to_gguf.py`` (a baked
  checkpoint becomes a GGUF llama.cpp serves).

``make llama-cpp`` (part of ``make test``) builds the pinned llama-cpp-python from its source
distribution once (pip keeps the wheel in its cache) and keeps that release's converter and
argument parser next to the venv (:func:`source_dir`).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from steerlab.answers import judge, reply
from steerlab.errors import InvalidVectorError, OptionError, VectorMismatchError
from steerlab.evaluation import gen_prompt
from steerlab.interop import _read

if TYPE_CHECKING:
    from steerlab.models import Model
    from steerlab.tasks import Item, Task

__all__ = ["LLAMA_CPP_PYTHON", "LlamaCpp", "convert_to_gguf", "evaluate_llama_cpp",
           "read_control_vector", "source_dir"]

#: the llama-cpp-python release the suite runs (it pins its own llama.cpp)
LLAMA_CPP_PYTHON = "0.3.36"


def source_dir() -> Path:
    """The pinned llama.cpp's ``convert_hf_to_gguf.py``, ``gguf-py/`` and ``common/arg.cpp``,
    kept by ``make llama-cpp`` (``$STEERLAB_LLAMA_CPP_SRC`` overrides where)."""
    where = os.environ.get("STEERLAB_LLAMA_CPP_SRC")
    path = Path(where) if where else Path(sys.prefix) / "share" / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    if not (path / "convert_hf_to_gguf.py").is_file():
        raise FileNotFoundError(
            f"No llama.cpp {LLAMA_CPP_PYTHON} sources at {path}: run `make llama-cpp` (it keeps "
            "the converter of the llama.cpp that llama-cpp-python pins) or set "
            "STEERLAB_LLAMA_CPP_SRC to a llama.cpp checkout of that release.")
    return path


def read_control_vector(path: str | Path, strength: float = 1.0) -> tuple[int, np.ndarray]:
    """(n_embd, buffer) of a GGUF control vector, as llama.cpp's loader builds them: the
    buffer holds ``strength * direction.k`` at ``(k - 1) * n_embd`` for every k up to the
    file's highest. The file is read and checked as :func:`steerlab.interop.from_gguf` reads
    it (``direction.<k>`` names, 1-D F32, one width); llama.cpp also refuses block 0. A file
    it refuses raises :class:`InvalidVectorError` naming why."""
    _, found = _read(Path(path))
    if 0 in found:
        raise InvalidVectorError(f"{path}: direction.0: llama.cpp takes direction.<k> with "
                                 "k > 0 only (block 0's output cannot be steered there).")
    n_embd = next(iter(found.values())).shape[0]
    buf = np.zeros(n_embd * max(found), dtype=np.float32)
    for layer, a in found.items():
        buf[(layer - 1) * n_embd:layer * n_embd] = strength * a
    return n_embd, buf


class LlamaCpp:
    """One llama.cpp model and context (CPU, greedy): :meth:`set_vector` / :meth:`clear`,
    :meth:`next_logits` and greedy :meth:`decode` on token ids."""

    def __init__(self, model_path: str | Path, n_ctx: int = 1024, n_threads: int = 1) -> None:
        """``n_threads`` (for prompts and decoding alike): llama.cpp's threads spin while they
        wait for each other, so on a CPU whose cores are busy (torch's own threads included)
        more threads can be far slower than one; one is the default."""
        import llama_cpp

        self.lib = llama_cpp
        self.path = Path(model_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"No GGUF model at {self.path}.")
        self.llm = llama_cpp.Llama(str(self.path), n_ctx=n_ctx, n_batch=n_ctx,
                                   n_threads=n_threads, n_threads_batch=n_threads,
                                   logits_all=False, verbose=False)
        model = self.llm._model.model
        self.n_embd = int(llama_cpp.llama_model_n_embd(model))
        self.n_layer = int(llama_cpp.llama_model_n_layer(model))
        self.n_vocab = int(self.llm.n_vocab())

    def close(self) -> None:
        """Free llama.cpp's model and context now (not at interpreter exit)."""
        self.llm.close()

    def __enter__(self) -> LlamaCpp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_vector(self, path: str | Path, strength: float = 1.0) -> None:
        """Steer with the control vector at ``path`` (``--control-vector-scaled
        path:strength``): every block gets its direction or zeros, then the context is reset."""
        n_embd, buf = read_control_vector(path, strength)
        if n_embd != self.n_embd:
            raise VectorMismatchError(f"{path}: width {n_embd}, but {self.path.name} has "
                                      f"n_embd {self.n_embd}.")
        full = np.zeros(self.n_embd * (self.n_layer - 1), dtype=np.float32)
        if buf.size > full.size:
            raise VectorMismatchError(f"{path}: directions up to block {buf.size // n_embd}, "
                                      f"but {self.path.name} has {self.n_layer} blocks.")
        full[:buf.size] = buf
        self._apply(full)

    def clear(self) -> None:
        """No control vector (llama.cpp's ``llama_set_adapter_cvec`` with no data)."""
        self._apply(None)

    def _apply(self, full: np.ndarray | None) -> None:
        ctx = self.llm._ctx.ctx
        if full is None:
            err = self.lib.llama_set_adapter_cvec(ctx, None, 0, self.n_embd, 1, self.n_layer)
        else:
            ptr = full.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            # blocks 1..n_layer, the range llama.cpp's common code passes by default
            err = self.lib.llama_set_adapter_cvec(ctx, ptr, full.size, self.n_embd, 1,
                                                  self.n_layer)
        if err != 0:
            raise InvalidVectorError(f"llama.cpp refused the control vector (error {err}).")
        self.llm.reset()  # no prompt prefix computed under the previous vector is reused

    def _eval(self, ids: Sequence[int]) -> np.ndarray:
        self.llm.eval(list(ids))
        ptr = self.lib.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def next_logits(self, ids: Sequence[int]) -> np.ndarray:
        """(n_vocab,) logits after the prompt ``ids``. The context keeps what it read under the
        current vector (llama.cpp's prompt cache: a prompt sharing a prefix with the previous
        one, e.g. a chat template's system prompt, reads only the rest); changing the vector
        empties it."""
        ids = list(ids)
        if not 0 < len(ids) <= self.llm.n_ctx():
            raise OptionError(f"A prompt of {len(ids)} tokens: llama.cpp reads 1 to "
                              f"{self.llm.n_ctx()} (open LlamaCpp with a larger n_ctx).")
        seen = self.llm.input_ids[:self.llm.n_tokens].tolist()
        keep = 0
        while keep < min(len(seen), len(ids) - 1) and seen[keep] == ids[keep]:
            keep += 1
        self.llm.n_tokens = keep  # eval drops the cache from here on and reads the rest
        return self._eval(ids[keep:])

    def decode(self, ids: Sequence[int], max_new_tokens: int, stop: set[int]) -> list[int]:
        """Greedy token ids after the prompt ``ids``, up to ``max_new_tokens`` or a token of
        ``stop`` (not included)."""
        if max_new_tokens < 1:
            raise OptionError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
        if len(ids) + max_new_tokens > self.llm.n_ctx():
            raise OptionError(f"{len(ids)} prompt tokens + {max_new_tokens} new ones exceed the "
                              f"context of {self.llm.n_ctx()}: open LlamaCpp with a larger n_ctx.")
        out: list[int] = []
        logits = self.next_logits(ids)
        for _ in range(max_new_tokens):
            tok = int(np.argmax(logits))
            if tok in stop:
                break
            out.append(tok)
            if len(out) < max_new_tokens:
                logits = self._eval([tok])
        return out


def evaluate_llama_cpp(runner: LlamaCpp, model: Model, task: Task, items: Sequence[Item],
                       chat: bool | None = None, progress: bool = True
                       ) -> tuple[np.ndarray, list[str], list[str]]:
    """(correct, predictions, completions) of ``runner`` (with its vector, if any) on
    ``items``: the prompts as steerlab's :func:`~steerlab.evaluation.evaluate` builds and
    encodes them (one unpadded prompt at a time), greedy for ``task.max_new_tokens``, stopped
    where HF ``generate`` stops, judged by steerlab's :func:`~steerlab.answers.judge`."""
    from tqdm.auto import tqdm

    if task.kind == "mc":
        raise OptionError(f"{task.name} is multiple choice; evaluate_llama_cpp decodes "
                          "generative tasks only.")
    chat = model.uses_chat(chat)
    stop = set(model.eos_ids)
    correct, preds, outs = [], [], []
    for item in tqdm(items, desc=f"llama.cpp {task.name}", disable=not progress, leave=False):
        ids = model.encode([gen_prompt(item, (), chat)], chat=chat)["input_ids"][0].cpu().tolist()
        text = model.tokenizer.decode(runner.decode(ids, task.max_new_tokens, stop),
                                      skip_special_tokens=True)
        ok, pred = judge(item, reply(text, chat))
        correct.append(ok)
        preds.append(pred)
        outs.append(text)
    return np.array(correct, dtype=bool), preds, outs


def convert_to_gguf(checkpoint: str | Path, out: str | Path, outtype: str = "f32") -> Path:
    """A Hugging Face checkpoint directory (e.g. :func:`steerlab.bake.bake`'s) as a GGUF model,
    by the pinned llama.cpp's own ``convert_hf_to_gguf.py`` with its own ``gguf-py``."""
    out = Path(out)
    src = source_dir()
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    done = subprocess.run(
        [sys.executable, str(src / "convert_hf_to_gguf.py"), str(checkpoint), "--outfile",
         str(out), "--outtype", outtype], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"llama.cpp's convert_hf_to_gguf.py failed on {checkpoint} "
                           f"(exit {done.returncode}):\n{done.stderr[-2000:]}")
    return out
