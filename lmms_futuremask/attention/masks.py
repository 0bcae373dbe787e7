"""The future-aware mask family as pure predicates.

Every mode is the causal mask OR-ed with a *relaxation*: a predicate over the modality of the query and of the key
that says when a query may also look at a later key. Everything else in the package (the boolean mask, its
per-backend rendering, the transformers hooks) is plumbing around :data:`RELAXATIONS`.

The functions follow transformers' ``masking_utils`` / FlexAttention ``mask_mod`` convention: a mask function is
``fn(batch_idx, head_idx, q_idx, kv_idx) -> bool`` and True means "the query may attend the key".
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Relaxation = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MaskFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _nothing(q_visual: torch.Tensor, kv_visual: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(q_visual & kv_visual)


def _visual_query(q_visual: torch.Tensor, kv_visual: torch.Tensor) -> torch.Tensor:
    return q_visual & torch.ones_like(kv_visual)


def _visual_to_visual(q_visual: torch.Tensor, kv_visual: torch.Tensor) -> torch.Tensor:
    return q_visual & kv_visual


def _visual_to_text(q_visual: torch.Tensor, kv_visual: torch.Tensor) -> torch.Tensor:
    return q_visual & ~kv_visual


def _across_modalities(q_visual: torch.Tensor, kv_visual: torch.Tensor) -> torch.Tensor:
    return q_visual ^ kv_visual


#: mode name -> when a query may attend a *later* key, given (query is visual, key is visual).
RELAXATIONS: dict[str, Relaxation] = {
    # Mc: the causal baseline.
    "original": _nothing,
    # Mf: a visual query sees every future token.
    "future": _visual_query,
    # Mv2v: a visual query sees future visual tokens.
    "future_v2v": _visual_to_visual,
    # Mv2t: a visual query sees future text tokens.
    "future_v2t": _visual_to_text,
    # Modality-Mutual Attention, generalised: any query sees later tokens of the other modality.
    "mma": _across_modalities,
}

#: The valid ``mode`` strings, in the order the README and the paper list them.
MODES: tuple[str, ...] = tuple(RELAXATIONS)


def check_mode(mode: str) -> str:
    """Return ``mode`` if it names a mask of the family, else raise a ValueError listing the valid ones."""
    if mode not in RELAXATIONS:
        raise ValueError(f"unknown mode {mode!r}; valid modes are: {', '.join(MODES)}")
    return mode


def mask_function(mode: str, is_visual: torch.Tensor, attention_mask: torch.Tensor | None = None) -> MaskFunction:
    """The mode as a ``mask_mod(batch_idx, head_idx, q_idx, kv_idx)`` over one prompt batch.

    ``is_visual`` is ``[B, L]`` bool; ``attention_mask`` is the usual ``[B, L]`` padding mask (1 = real token).
    Padding keys are never allowed, whatever the mode.
    """
    relax = RELAXATIONS[check_mode(mode)]
    is_visual = is_visual.bool()
    real_key = None if attention_mask is None else attention_mask.bool()

    def allowed(batch_idx, head_idx, q_idx, kv_idx):
        ok = (kv_idx <= q_idx) | relax(is_visual[batch_idx, q_idx], is_visual[batch_idx, kv_idx])
        if real_key is not None:
            ok = ok & real_key[batch_idx, kv_idx]
        return ok

    return allowed


def build_mask(is_visual: torch.Tensor, mode: str, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean attention mask ``[B, 1, L, L]`` of ``mode``; True means the query (row) may attend the key (column).

    Rows of padding queries come out all False; a kernel that cannot take empty rows needs them filled
    (see :func:`lmms_futuremask.attention.integration.render_mask`).
    """
    if is_visual.dim() != 2:
        raise ValueError(f"is_visual must be [batch, length], got shape {tuple(is_visual.shape)}")
    if attention_mask is not None and attention_mask.shape != is_visual.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match is_visual {tuple(is_visual.shape)}"
        )
    batch, length = is_visual.shape
    device = is_visual.device
    fn = mask_function(mode, is_visual, attention_mask)
    b = torch.arange(batch, device=device).view(batch, 1, 1, 1)
    h = torch.zeros(1, 1, 1, 1, dtype=torch.long, device=device)
    q = torch.arange(length, device=device).view(1, 1, length, 1)
    k = torch.arange(length, device=device).view(1, 1, 1, length)
    return fn(b, h, q, k).expand(batch, 1, length, length)
