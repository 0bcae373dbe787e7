"""A layer's own mask, read from whatever its attention function receives at a prefill, and written back.

transformers builds each layer's mask itself (``masking_utils``: causal, sliding window, chunks, image blocks,
padding) and hands the attention function a backend-specific object: ``None`` (sdpa's ``is_causal`` fast path, or
no mask at all), a 4D bool tensor (sdpa), a 4D additive float tensor (eager), a ``BlockMask`` (flex_attention), or a
2D padding mask / ``None`` plus a ``sliding_window`` keyword (flash-attn). :func:`allowed` reads any of them as a
``[B, 1, Q, K]`` bool matrix; :func:`render` writes a mode onto it in the same form, so every layer keeps its
window, chunks, blocks and padding and only gains (or, for ``causal``, loses) what the mode says.
"""

from __future__ import annotations

from typing import Any

import torch

from .masks import RESTRICTED_MODES, overlay, relaxation_function


def _is_block_mask(mask: Any) -> bool:
    return type(mask).__name__ == "BlockMask"


def module_is_causal(module: Any, kwargs: dict) -> bool:
    """Whether the layer attends causally when handed no mask (PaliGemma's Gemma layers do not)."""
    return bool(kwargs.get("is_causal", getattr(module, "is_causal", True)))


def allowed(
    mask: Any, module: Any, kwargs: dict, backend: str, batch: int, q_len: int, kv_len: int, device: torch.device
) -> torch.Tensor:
    """``[B, 1, Q, K]`` bool: which key each query of this layer may attend at this prefill (queries from 0)."""
    q = torch.arange(q_len, device=device)[:, None]
    k = torch.arange(kv_len, device=device)[None, :]
    if mask is None or (isinstance(mask, torch.Tensor) and mask.dim() == 2):
        # sdpa's is_causal path (top-left aligned at a prefill), flash-attn with its padding mask and window; eager
        # and flex attend every key when handed no mask.
        causal = backend in ("sdpa", "flash_attention_2", "flash_attention_3") and module_is_causal(module, kwargs)
        dense = (k <= q) if causal else torch.ones(q_len, kv_len, dtype=torch.bool, device=device)
        window = kwargs.get("sliding_window")
        if window:
            dense = dense & (k > q - window)
        dense = dense.to(device)[None, None].expand(batch, 1, q_len, kv_len)
        if mask is not None:  # flash-attn's 2D padding mask: right-aligned on the keys
            dense = dense & mask[:, None, None, -kv_len:].bool()
        return dense
    if _is_block_mask(mask):
        b = torch.arange(batch, device=device)[:, None, None, None]
        h = torch.zeros(1, 1, 1, 1, dtype=torch.long, device=device)
        return mask.mask_mod(b, h, q[None, None], k[None, None]).expand(batch, 1, q_len, kv_len)
    if mask.dtype == torch.bool:
        return mask.expand(batch, 1, q_len, kv_len)
    return (mask > torch.finfo(mask.dtype).min / 2).expand(batch, 1, q_len, kv_len)


def real_keys(native: torch.Tensor, length: int) -> torch.Tensor:
    """``[B, L]`` bool, the prompt's non-padding positions: a real token always attends itself (its diagonal), a
    padding one never (every stock mask closes padding keys)."""
    diagonal = torch.arange(length, device=native.device)
    return native[:, 0, diagonal, diagonal]


def is_plain_causal(native: torch.Tensor, real_key: torch.Tensor) -> bool:
    """Whether a layer's own mask (``native [B, L, K]`` bool) is exactly causal over the real keys (``real_key
    [B, L]``) on every real row: no window, chunk, image block or prefix, no key past the prompt. Padding rows are
    not compared (stock masks differ there)."""
    length = real_key.shape[1]
    positions = torch.arange(length, device=native.device)
    real = real_key.to(native.device).bool()
    causal = (positions[None, None, :] <= positions[None, :, None]) & real[:, None, :]
    same = (native[:, :, :length] == causal) | ~real[:, :, None]
    return bool(same.all()) and not bool(native[:, :, length:].any())


def render(
    mask: Any,
    native: torch.Tensor,
    is_visual: torch.Tensor,
    mode: str,
    real_key: torch.Tensor,
    backend: str,
    dtype: torch.dtype,
) -> Any:
    """``mask`` (what the layer received) with ``mode`` written onto it, in the form ``backend`` takes: a BlockMask
    for flex_attention, a bool tensor for sdpa, an additive float tensor in ``dtype`` for eager (the layer's own
    values kept where it allowed a key; a bool mask there would be silently wrong)."""
    if _is_block_mask(mask):
        return _render_block_mask(mask, is_visual, mode, real_key)
    composed = overlay(native, is_visual, mode, real_key)
    if backend != "eager":
        return composed
    zero = torch.zeros((), dtype=dtype, device=native.device)
    blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=native.device)
    own = mask if isinstance(mask, torch.Tensor) and mask.is_floating_point() else zero
    return torch.where(composed, torch.where(native, own, zero), blocked)


def _render_block_mask(mask: Any, is_visual: torch.Tensor, mode: str, real_key: torch.Tensor) -> Any:
    from torch.nn.attention.flex_attention import and_masks, create_block_mask, or_masks

    batch, length = is_visual.shape
    q_len, kv_len = mask.seq_lengths
    if mode in RESTRICTED_MODES:
        mask_mod = and_masks(mask.mask_mod, lambda _b, _h, q, k: k <= q)
    else:
        extra = kv_len - length  # a static cache's empty slots: no visual token, never a real key
        vis = torch.nn.functional.pad(is_visual.bool(), (0, extra), value=False)
        real = torch.nn.functional.pad(real_key.bool(), (0, extra), value=False)
        mask_mod = or_masks(mask.mask_mod, relaxation_function(mode, vis, real))
    return create_block_mask(mask_mod, batch, None, q_len, kv_len, device=is_visual.device)
