"""Apply a mode to a Hugging Face VLM at prefill only.

Two forward pre-hooks do the work:

* on the top-level model, which still sees ``input_ids``: find the visual positions of the call
  (``config.image_token_id``) and keep them for the decoder call that follows;
* on the language model (the decoder), which sees the embedded sequence: if this call is a prompt prefill
  (empty cache) with visual tokens, swap its 2D padding mask for the mode's 4D mask, rendered for the attention
  backend.

Decode steps carry no visual token and a non-empty cache, so they run the stock causal path untouched. ``generate``
keeps its own 2D mask throughout (it refuses 4D masks), and ``mode="original"`` installs no hook at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .masks import MODES, build_mask, check_mode, mask_function
from .merge import MERGE_BACKEND_PREFIX, MergeContext, MergeSettings, merge_settings, register_merge_backend
from .segments import FLASH_BACKENDS, SEGMENTS_BACKEND_PREFIX, SegmentContext, register_segments_backend

#: Attention backends that run every mode exactly: explicit masks (sdpa, eager), a BlockMask built from the mask
#: function (flex), or segments merged by log-sum-exp (flash-attn, see :mod:`lmms_futuremask.attention.segments`).
MASKED_BACKENDS = ("sdpa", "eager", "flex_attention", *FLASH_BACKENDS)

_STATE_ATTR = "_futuremask"


@dataclass
class FutureMaskState:
    """What :func:`enable` installed on a model; kept on the model as ``model._futuremask``."""

    mode: str
    merge: MergeSettings | None
    visual_token_ids: tuple[int, ...]
    base_backend: str = "sdpa"
    installed_backend: str = "sdpa"  # the decoder's attn_implementation as enable() left it
    handles: list[Any] = field(default_factory=list)
    pending: PromptLayout | None = None


@dataclass(frozen=True)
class PromptLayout:
    """What the top-level call tells the decoder call that follows it."""

    is_visual: torch.Tensor
    padding_mask: torch.Tensor | None
    has_pixels: bool


def visual_token_ids_of(config: Any) -> tuple[int, ...]:
    """Token ids that stand for visual positions in a VLM config (image and, where present, video tokens)."""
    ids = []
    for name in ("image_token_id", "image_token_index", "video_token_id", "video_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value >= 0 and value not in ids:
            ids.append(value)
    return tuple(ids)


def attn_implementation_of(module: nn.Module) -> str:
    """The module's attention backend, seen through our wrappers (``futuremask_merge_sdpa`` is ``sdpa``)."""
    config = getattr(module, "config", None)
    name = str(getattr(config, "_attn_implementation", None) or "eager")
    return name.removeprefix(MERGE_BACKEND_PREFIX).removeprefix(SEGMENTS_BACKEND_PREFIX)


def check_backend(attn_implementation: str, mode: str) -> None:
    """Refuse a backend that would silently drop the mask (flash-attn only takes padding masks)."""
    if mode != "original" and attn_implementation not in MASKED_BACKENDS:
        raise ValueError(
            f"mode {mode!r} needs an attention backend that takes an explicit mask; "
            f"attn_implementation={attn_implementation!r} would ignore it. "
            f"Load the model with attn_implementation in {list(MASKED_BACKENDS)}."
        )


def render_mask(allowed: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """Turn a boolean ``[B, 1, L, L]`` mask into what the backend's attention function adds or selects with.

    sdpa takes the boolean mask itself; eager adds a float mask (0 where allowed, the dtype's minimum elsewhere).
    A bool mask on eager would be silently wrong, hence the explicit rendering.
    """
    if attn_implementation == "sdpa":
        return allowed
    if attn_implementation == "eager":
        zero = torch.zeros((), dtype=dtype, device=allowed.device)
        blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=allowed.device)
        return torch.where(allowed, zero, blocked)
    raise ValueError(f"render_mask renders sdpa and eager masks, not {attn_implementation!r}")


def prefill_mask(is_visual: torch.Tensor, mode: str, padding_mask: torch.Tensor | None, backend: str, dtype):
    """The mode's prompt mask in the backend's own form: bool (sdpa), additive (eager) or a BlockMask (flex)."""
    if backend == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        batch, length = is_visual.shape
        fn = mask_function(mode, is_visual, padding_mask)
        return create_block_mask(fn, batch, None, length, length, device=is_visual.device)
    return render_mask(build_mask(is_visual, mode, padding_mask), backend, dtype)


def _mask_key_length(past_key_values: Any, query_length: int) -> int:
    """How many keys the kernel sees at this call: the prompt, or every slot of a fixed-size cache."""
    if past_key_values is not None and hasattr(past_key_values, "get_mask_sizes"):
        return int(past_key_values.get_mask_sizes(query_length, 0)[0])
    return query_length


def _extend_keys(mask, key_length: int):
    """Pad a prompt mask ``[B, 1, L, L]`` with masked columns up to ``key_length`` (a static cache's length)."""
    if not isinstance(mask, torch.Tensor):
        if mask.shape[-1] != key_length:  # a flex BlockMask: built for the prompt's keys only
            raise NotImplementedError("flex_attention with a static cache is not supported; use sdpa or eager")
        return mask
    extra = key_length - mask.shape[-1]
    if extra <= 0:
        return mask
    fill = False if mask.dtype == torch.bool else torch.finfo(mask.dtype).min
    return torch.nn.functional.pad(mask, (0, extra), value=fill)


def find_decoder(model: nn.Module) -> nn.Module:
    """The text decoder of a VLM: the module that turns embeddings into hidden states under a causal mask."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or decoder is model:
        raise ValueError(
            f"cannot find the language model inside {type(model).__name__}; "
            "enable() expects a Hugging Face VLM such as LlavaForConditionalGeneration"
        )
    return decoder


def _cache_length(past_key_values: Any) -> int:
    if past_key_values is None:
        return 0
    if hasattr(past_key_values, "get_seq_length"):
        return int(past_key_values.get_seq_length())
    return int(past_key_values[0][0].shape[-2])


def enable(
    model: nn.Module,
    mode: str = "future",
    merge: str = "none",
    *,
    visual_token_ids: tuple[int, ...] | None = None,
    **merge_options: Any,
) -> nn.Module:
    """Patch ``model`` so that prompts are prefilled under ``mode`` and decoding stays causal; returns ``model``.

    ``merge="kernel"`` (options ``merge_pool``, ``merge_kernel``, ``merge_prefix``) is the light variant: visual
    rows stay causal and their future scores are pooled into the prefix logits (see
    :mod:`lmms_futuremask.attention.merge`).
    Calling it again reconfigures the model; :func:`disable` restores the stock behaviour.
    """
    check_mode(mode)
    settings = merge_settings(merge, mode, merge_options)
    ids = tuple(visual_token_ids) if visual_token_ids is not None else visual_token_ids_of(model.config)
    if not ids:
        raise ValueError(
            f"{type(model).__name__}.config has no image_token_id; pass visual_token_ids=(...) to enable()"
        )
    decoder = find_decoder(model)
    check_backend(attn_implementation_of(decoder), mode)

    disable(model)
    base = attn_implementation_of(decoder)
    state = FutureMaskState(mode=mode, merge=settings, visual_token_ids=ids, base_backend=base)
    setattr(model, _STATE_ATTR, state)
    if mode == "original":
        return model
    if settings is not None:
        decoder.config._attn_implementation = register_merge_backend(base)
    elif base in FLASH_BACKENDS:
        decoder.config._attn_implementation = register_segments_backend(base)
    state.installed_backend = decoder.config._attn_implementation

    def remember_visual_positions(module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            state.pending = None
            if kwargs.get("pixel_values") is not None:
                raise ValueError(
                    "future masks locate visual tokens through input_ids; call the model with input_ids, "
                    "not inputs_embeds"
                )
            return None
        id_tensor = torch.tensor(state.visual_token_ids, device=input_ids.device)
        has_pixels = any(k.startswith("pixel_values") and v is not None for k, v in kwargs.items())
        state.pending = PromptLayout(torch.isin(input_ids, id_tensor), kwargs.get("attention_mask"), has_pixels)
        return None

    def swap_in_prompt_mask(module, args, kwargs):
        layout, state.pending = state.pending, None
        if layout is None or not bool(layout.is_visual.any()):
            return None
        is_visual, padding_mask = layout.is_visual, layout.padding_mask
        if _cache_length(kwargs.get("past_key_values")) > 0:
            # Decode steps (even one that happens to emit the image token id) extend the cache causally.
            if layout.has_pixels:
                raise NotImplementedError(
                    "future masks apply to a whole-prompt prefill; this call adds images to a non-empty cache"
                )
            return None
        embeds = kwargs.get("inputs_embeds")
        if embeds is None or embeds.shape[:2] != is_visual.shape:
            raise RuntimeError("the decoder call does not match the prompt seen by the model; cannot place the mask")
        # A static cache hands the kernel keys for all its slots: the mask spans them (the empty ones stay masked).
        key_length = _mask_key_length(kwargs.get("past_key_values"), is_visual.shape[1])
        if padding_mask is not None and padding_mask.dim() == 4:
            # generate() may hand over a ready 4D mask (static caches): its last row holds the prompt's padding.
            last_row = padding_mask[:, 0, -1, : is_visual.shape[1]]
            padding_mask = last_row if last_row.dtype == torch.bool else last_row > torch.finfo(last_row.dtype).min / 2
        if module.config._attn_implementation != state.installed_backend:
            raise ValueError(
                f"the attention backend changed after enable() ({state.installed_backend!r} -> "
                f"{module.config._attn_implementation!r}); call enable() again so the mode follows it"
            )
        backend = attn_implementation_of(module)
        real_key = torch.ones_like(is_visual) if padding_mask is None else padding_mask.bool()
        if state.merge is not None:
            # Visual rows stay causal, so the stock causal mask (and sdpa's is_causal fast path) is kept; the merge
            # backend adds their pooled future to the prefix logits.
            kwargs["futuremask_merge"] = MergeContext(is_visual, real_key, state.mode, state.merge)
        elif backend in FLASH_BACKENDS:  # flash takes no mask: the segments backend computes the prefill itself
            kwargs["futuremask_segments"] = SegmentContext(is_visual, real_key, state.mode)
        else:
            mask = prefill_mask(is_visual, state.mode, padding_mask, backend, embeds.dtype)
            kwargs["attention_mask"] = _extend_keys(mask, key_length)
        return args, kwargs

    state.handles = [
        model.register_forward_pre_hook(remember_visual_positions, with_kwargs=True),
        decoder.register_forward_pre_hook(swap_in_prompt_mask, with_kwargs=True),
    ]
    return model


def disable(model: nn.Module) -> nn.Module:
    """Remove what :func:`enable` installed; the model behaves exactly as before."""
    state = getattr(model, _STATE_ATTR, None)
    if state is not None:
        for handle in state.handles:
            handle.remove()
        if state.mode != "original":
            find_decoder(model).config._attn_implementation = state.base_backend
        delattr(model, _STATE_ATTR)
    return model


def current_mode(model: nn.Module) -> str | None:
    """The mode :func:`enable` set on ``model``, or None when it is not enabled."""
    state = getattr(model, _STATE_ATTR, None)
    return None if state is None else state.mode


__all__ = ["MODES", "enable", "disable", "current_mode", "render_mask", "visual_token_ids_of"]
