"""The future-aware mask family as pure predicates, and how a mode changes a layer's own mask.

Every layer of a model has its *native* mask: causal for LLaVA, a sliding window or chunks on some layers (Gemma 3,
Mistral, Cohere 2, Llama 4), bidirectional image blocks (Gemma 3) or a bidirectional prefix (PaliGemma), and always
no padding key. A mode changes it in one of two ways, defined here and nowhere else:

* a **relaxation** (:data:`RELAXATIONS`): a predicate over the modality of the query and of a *later* key that says
  when the query may also attend that key; the layer's mask becomes ``native OR (later AND relax AND key is real)``.
  ``original`` relaxes nothing (and is never installed at all: the stock model runs);
* a **restriction** (``causal``): the layer's mask becomes ``native AND (key is not later)``: the paper's M^c on
  models whose stock mask is not causal, keeping each layer's window or chunk limits.

Everything else in the package (rendering per backend, hooks, kernels) is plumbing around :func:`overlay`. The
functions follow transformers' ``masking_utils`` / FlexAttention ``mask_mod`` convention: a mask function is
``fn(batch_idx, head_idx, q_idx, kv_idx) -> bool`` and True means "the query may attend the key".
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..validation import check_choice

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
    # Mc on any model: no later key at all (a restriction, see RESTRICTED_MODES), so it relaxes nothing.
    "causal": _nothing,
}

#: Modes that take later keys away from the layer's own mask instead of adding some.
RESTRICTED_MODES: tuple[str, ...] = ("causal",)
#: Modes that open later keys (the paper's future masks and mma).
FUTURE_MODES: tuple[str, ...] = ("future", "future_v2v", "future_v2t", "mma")
#: The valid ``mode`` strings, in the order the README lists them.
MODES: tuple[str, ...] = ("original", *FUTURE_MODES, *RESTRICTED_MODES)


def check_mode(mode: str) -> str:
    """Return ``mode`` if it names a mask of the family, else raise a ValueError listing the valid ones."""
    return check_choice("mode", mode, MODES, noun="modes")


def later_keys(is_visual: torch.Tensor, mode: str, real_key: torch.Tensor, key_length: int | None = None):
    """``[B, 1, L, K]`` bool: the later keys ``mode`` opens to each query (never padding, never past the prompt).

    ``is_visual`` / ``real_key`` are ``[B, L]``; ``K = key_length`` (default ``L``) covers a static cache's empty
    slots, which stay closed.
    """
    _batch, length = is_visual.shape
    positions = torch.arange(length, device=is_visual.device)
    later = positions[None, :] > positions[:, None]
    vis = is_visual.bool()
    opened = later & RELAXATIONS[check_mode(mode)](vis[:, :, None], vis[:, None, :]) & real_key.bool()[:, None, :]
    extra = (key_length or length) - length
    if extra > 0:
        opened = torch.nn.functional.pad(opened, (0, extra), value=False)
    return opened[:, None]


def overlay(native: torch.Tensor, is_visual: torch.Tensor, mode: str, real_key: torch.Tensor) -> torch.Tensor:
    """A layer's mask under ``mode``: ``native`` (``[B or 1, 1, L, K]`` bool, the layer's own prefill mask) with the
    mode's later keys added, or (``causal``) with every later key removed."""
    _batch, length = is_visual.shape
    if mode in RESTRICTED_MODES:
        positions = torch.arange(native.shape[-1], device=native.device)
        return native & ~(positions[None, :] > torch.arange(length, device=native.device)[:, None])
    return native | later_keys(is_visual, mode, real_key, native.shape[-1])


def relaxation_function(mode: str, is_visual: torch.Tensor, real_key: torch.Tensor) -> MaskFunction:
    """What ``mode`` adds to a layer's mask, as a ``mask_mod`` (restricted modes add nothing)."""
    relax = RELAXATIONS[check_mode(mode)]
    is_visual, real_key = is_visual.bool(), real_key.bool()

    def opened(batch_idx, _head_idx, q_idx, kv_idx):
        return (
            (kv_idx > q_idx)
            & relax(is_visual[batch_idx, q_idx], is_visual[batch_idx, kv_idx])
            & real_key[batch_idx, kv_idx]
        )

    return opened


def mask_function(mode: str, is_visual: torch.Tensor, attention_mask: torch.Tensor | None = None) -> MaskFunction:
    """The mode on a causal model, as a ``mask_mod(batch_idx, head_idx, q_idx, kv_idx)`` over one prompt batch.

    ``is_visual`` is ``[B, L]`` bool; ``attention_mask`` is the usual ``[B, L]`` padding mask (1 = real token).
    Padding keys are never allowed, whatever the mode.
    """
    real_key = torch.ones_like(is_visual, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    opened = relaxation_function(mode, is_visual, real_key)

    def allowed(batch_idx, head_idx, q_idx, kv_idx):
        return ((kv_idx <= q_idx) | opened(batch_idx, head_idx, q_idx, kv_idx)) & real_key[batch_idx, kv_idx]

    return allowed


def build_mask(is_visual: torch.Tensor, mode: str, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean attention mask ``[B, 1, L, L]`` of ``mode`` on a causal model (LLaVA); True means the query (row) may
    attend the key (column). The causal mask with padding keys closed is the native mask :func:`overlay` starts from.

    Rows of padding queries come out all False; a kernel that cannot take empty rows needs them filled.
    """
    if is_visual.dim() != 2:
        raise ValueError(f"is_visual must be [batch, length], got shape {tuple(is_visual.shape)}")
    if attention_mask is not None and attention_mask.shape != is_visual.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match is_visual {tuple(is_visual.shape)}"
        )
    check_mode(mode)
    batch, length = is_visual.shape
    real_key = torch.ones_like(is_visual, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    positions = torch.arange(length, device=is_visual.device)
    causal = (positions[None, :] <= positions[:, None])[None, None] & real_key[:, None, None, :]
    return overlay(causal, is_visual, mode, real_key).expand(batch, 1, length, length)
