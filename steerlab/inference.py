"""Forward passes and generation through any backend (steering hooks, if active, apply)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from steerlab.errors import OptionError
from steerlab.options import BackendName
from steerlab.validate import check_prompts

if TYPE_CHECKING:
    from steerlab.models import Model


@torch.no_grad()
def forward_logits(model: Model, prompts: Sequence[str], chat: bool | None = None,
                   backend: BackendName = "hf") -> torch.Tensor:
    """Logits (B, T, vocab) of a left-padded batch (row ``i`` ends at position ``T - 1``)."""
    enc = model.encode(check_prompts(prompts), chat=chat)
    return model.backend(backend).forward(enc)


@torch.no_grad()
def next_token_logits(model: Model, prompts: Sequence[str], chat: bool | None = None,
                      backend: BackendName = "hf", batch_size: int = 16) -> torch.Tensor:
    """(n_prompts, vocab) float32 logits of the token after each prompt."""
    prompts = check_prompts(prompts)
    out = [forward_logits(model, prompts[i:i + batch_size], chat, backend)[:, -1].float()
           for i in range(0, len(prompts), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def generate(model: Model, prompts: Sequence[str] | str, max_new_tokens: int = 32,
             chat: bool | None = None, backend: BackendName = "hf", do_sample: bool = False,
             temperature: float = 1.0, seed: int | None = None, batch_size: int = 16,
             progress: bool | None = None) -> list[str]:
    """Greedy (default) or seeded sampled completions, decoded, without the prompt.

    Args:
        model: the model.
        prompts: prompt strings (or one string).
        max_new_tokens: token budget per completion.
        chat: apply the chat template (default: follow the model, :meth:`Model.uses_chat`).
        backend: ``hf``, ``tlens`` or ``nnsight``.
        do_sample: sample at ``temperature`` instead of greedy decoding (seeded by ``seed``).
        batch_size: prompts per generate call.
    """
    prompts = check_prompts(prompts)
    if max_new_tokens < 1:
        raise OptionError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    model.backend(backend)  # an unknown backend name fails here, before any work
    if do_sample:
        torch.manual_seed(0 if seed is None else seed)
    texts: list[str] = []
    batches = range(0, len(prompts), batch_size)
    show = progress if progress is not None else len(batches) > 1
    for i in tqdm(batches, desc="generating", disable=not show):
        enc = model.encode(prompts[i:i + batch_size], chat=chat)
        texts.extend(generate_encoded(model, enc, max_new_tokens, backend, do_sample,
                                      temperature))
    return texts


def generate_encoded(model: Model, enc: dict[str, torch.Tensor], max_new_tokens: int,
                     backend: BackendName = "hf", do_sample: bool = False,
                     temperature: float = 1.0) -> list[str]:
    """The completions of one encoded (left-padded) batch, decoded without the prompt: greedy,
    or sampled at ``temperature`` (seed torch first). Any active edit applies."""
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample,
                              "pad_token_id": model.tokenizer.pad_token_id}
    if do_sample:
        kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
    else:
        kwargs.update(temperature=None, top_k=None, top_p=None)
    ids = model.backend(backend).generate(enc, **kwargs)
    return model.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:],
                                        skip_special_tokens=True)
