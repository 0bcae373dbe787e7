"""Batched scoring and generation helpers over a (possibly enabled) Hugging Face VLM.

They own the two things that make batches exact: positions counted from the padding mask (as ``generate`` does),
and a continuation that is never inside the relaxed prompt: it is scored causally through the cache of a masked
prefill, exactly as if it had been generated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def position_ids_from(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions ``[B, L]`` that skip left padding, as ``generate`` computes them (padding positions get 0)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def _rope_deltas(model: nn.Module) -> torch.Tensor | None:
    """``[B, 1]``: the offsets a multimodal-RoPE model stored at its last prefill (``rope_deltas``), if any."""
    for module in (model, getattr(model, "model", None)):
        deltas = getattr(module, "rope_deltas", None)
        if isinstance(deltas, torch.Tensor):
            return deltas
    return None


@dataclass(frozen=True)
class ContinuationScore:
    """Log-likelihood of a continuation: the sum of its token log-probs, and whether greedy decoding gives it."""

    logprob: float
    is_greedy: bool


@torch.inference_mode()
def score_continuations(
    model: nn.Module,
    prompt_inputs: Mapping[str, Any],
    continuations: list[list[int]],
    pad_token_id: int,
    model_computes_positions: bool = False,
) -> list[ContinuationScore]:
    """Score ``continuations[b]`` after the left-padded prompt ``b`` of ``prompt_inputs``.

    One prefill of the prompts (under the model's mode, if enabled), then one causal forward of the right-padded
    continuations through the prompt cache. Equivalent to teacher-forced decode steps, one token at a time.
    Positions skip the left padding, as ``generate`` counts them; a model that computes its own (multimodal RoPE,
    ``model_computes_positions``) is never handed any.
    """
    if any(len(c) == 0 for c in continuations):
        raise ValueError("every continuation needs at least one token")
    inputs = dict(prompt_inputs)
    prompt_mask = inputs["attention_mask"]
    device = prompt_mask.device
    if not model_computes_positions:
        inputs.setdefault("position_ids", position_ids_from(prompt_mask))
    prefill = model(**inputs, use_cache=True)
    first_logits = prefill.logits[:, -1:, :]

    width = max(len(c) for c in continuations)
    cont_ids = torch.full((len(continuations), width), pad_token_id, dtype=torch.long, device=device)
    cont_mask = torch.zeros_like(cont_ids)
    for row, tokens in enumerate(continuations):
        cont_ids[row, : len(tokens)] = torch.tensor(tokens, device=device)
        cont_mask[row, : len(tokens)] = 1
    full_mask = torch.cat([prompt_mask, cont_mask.to(prompt_mask.dtype)], dim=1)
    positions = {"position_ids": position_ids_from(full_mask)[:, prompt_mask.shape[1] :]}
    if model_computes_positions:
        # Multimodal RoPE: what the model does itself for tokens after its prompt (its incremental-decoding
        # positions: text positions shifted by the rope deltas it stored at the prefill), for several tokens at once.
        deltas = _rope_deltas(model)
        positions = {} if deltas is None else {"position_ids": positions["position_ids"][None] + deltas[None]}
    step = model(
        input_ids=cont_ids,
        attention_mask=full_mask,
        past_key_values=prefill.past_key_values,
        use_cache=True,
        **positions,
    )
    # Logits that predict continuation token t: the prompt's last position for t = 0, then continuation t - 1.
    logits = torch.cat([first_logits, step.logits[:, :-1, :]], dim=1).float()
    logprobs = torch.log_softmax(logits, dim=-1)
    token_logprobs = logprobs.gather(-1, cont_ids.unsqueeze(-1)).squeeze(-1)
    greedy = logits.argmax(dim=-1) == cont_ids
    scores = []
    for row, tokens in enumerate(continuations):
        n = len(tokens)
        scores.append(
            ContinuationScore(
                logprob=float(token_logprobs[row, :n].sum()),
                is_greedy=bool(greedy[row, :n].all()),
            )
        )
    return scores
