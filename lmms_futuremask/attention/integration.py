"""Apply a mode to a Hugging Face VLM at prefill only, on top of each layer's own mask.

Three pieces, and no per-family branch:

* a forward pre-hook on the top-level model, which still sees ``input_ids``, records the prompt's visual positions
  (the config's image / video token ids, see :func:`visual_token_ids_of`);
* a forward pre-hook on the language model (the decoder) turns a prompt prefill (empty cache, visual tokens) into a
  :class:`Prefill` handed down as the ``futuremask`` keyword, which transformers passes to every attention call;
* the decoder's attention backend is ours (``futuremask_<base>``, registered in :mod:`.backends`): on calls without
  a :class:`Prefill` (decode steps, text-only prompts, the vision tower) it is the base backend untouched; at a
  prefill it reads the mask transformers built for that layer (causal, sliding window, chunks, image blocks,
  padding; :mod:`.native`), adds the mode's later keys (:func:`.masks.overlay`) and runs the base kernel with it,
  or the merge (:mod:`.merge`) or flash-attn segments (:mod:`.segments`) on top of that layer's mask.

Decode steps extend the cache causally, exactly as in the stock model; ``mode="original"`` installs nothing. A
prompt with images on which the mode was never applied raises instead of silently running the stock model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import merge as merging
from .backends import BACKEND_PREFIX, register_backend, scaling_of
from .masks import RESTRICTED_MODES, check_mode
from .merge import MergeContext, MergeSettings, merge_settings
from .native import allowed, is_plain_causal, module_is_causal, real_keys, render
from .segments import FLASH_BACKENDS, SegmentContext, prefers_segments, sdpa_kernel, segment_attention

#: Attention backends that run every mode exactly: explicit masks (sdpa, eager), a BlockMask (flex), or segments
#: merged by log-sum-exp (flash-attn, see :mod:`lmms_futuremask.attention.segments`).
MASKED_BACKENDS = ("sdpa", "eager", "flex_attention", *FLASH_BACKENDS)

_STATE_ATTR = "_futuremask"
_VISUAL_ID_NAMES = ("image_token_id", "image_token_index", "video_token_id", "video_token_index")


@dataclass
class PromptLayout:
    """What the top-level call tells the decoder call that follows it."""

    is_visual: torch.Tensor
    has_pixels: bool


@dataclass
class Prefill:
    """One prompt prefill: where its visual tokens are, the mode, and each layer type's rendering (computed at the
    first layer that receives a given mask object, reused by the others)."""

    is_visual: torch.Tensor  # [B, L] bool
    mode: str
    merge: MergeSettings | None
    base: str
    layers: frozenset[int]  # ids of the decoder layers' modules: only their attention calls are changed
    applied: int = 0
    _per_mask: dict = field(default_factory=dict, repr=False)

    def covers(self, module: nn.Module) -> bool:
        """Whether an attention call of ``module`` belongs to the decoder layers of this prefill."""
        return id(module) in self.layers

    def _layer(self, mask: Any, module: nn.Module, kwargs: dict, query: torch.Tensor, key: torch.Tensor):
        """``(native [B,1,L,K] bool, real keys [B,L], cache dict)`` of the layer type ``mask`` stands for."""
        entry_key = (id(mask), module_is_causal(module, kwargs), kwargs.get("sliding_window"))
        if entry_key not in self._per_mask:
            batch, length = self.is_visual.shape
            native = allowed(mask, module, kwargs, self.base, batch, length, key.shape[2], query.device)
            self._per_mask[entry_key] = (native, real_keys(native, length), {})
        return self._per_mask[entry_key]

    def _sdpa_segments(self, native, real, module, kwargs) -> SegmentContext | None:
        """The segments route on SDPA (see :mod:`.segments`) where it does less work than a dense mask: a future
        mode on a layer whose own mask is plain causal."""
        if self.base != "sdpa" or self.mode in RESTRICTED_MODES or not module_is_causal(module, kwargs):
            return None
        context = SegmentContext(self.is_visual, real, self.mode)
        return context if is_plain_causal(native[:, 0], real) and prefers_segments(context) else None

    def attend(self, module, query, key, value, mask, base_fn, args, kwargs):
        """The layer's attention at this prefill: its own mask plus the mode, on the base backend."""
        length = self.is_visual.shape[1]
        if query.shape[2] != length:
            raise RuntimeError(
                f"a prefill attention call has {query.shape[2]} queries but the prompt has {length} positions; "
                "the future mask cannot be placed"
            )
        self.applied += 1
        native, real, cache = self._layer(mask, module, kwargs, query, key)
        if self.merge is not None:
            if "merge" not in cache:
                cache["merge"] = MergeContext(self.is_visual, real, self.mode, self.merge, native=native[:, 0])
            output = merging.merge_prefill(
                query,
                key,
                value,
                cache["merge"],
                scaling_of(module, query, kwargs),
                lambda: base_fn(module, query, key, value, mask, *args, **kwargs)[0],
            )
            return output, None  # the kernel's weights no longer describe the visual rows
        if self.base in FLASH_BACKENDS:
            if self.mode in RESTRICTED_MODES:  # flash computes causal (+ window) attention natively
                return base_fn(module, query, key, value, mask, *args, **kwargs)
            if not module_is_causal(module, kwargs):
                raise NotImplementedError(
                    f"{type(module).__name__} attends bidirectionally; future modes on flash-attn need a causal "
                    "layer. Use attn_implementation=sdpa, eager or flex_attention for this model."
                )
            context = SegmentContext(self.is_visual, real, self.mode, window=kwargs.get("sliding_window"))
            return segment_attention(query, key, value, context, scaling_of(module, query, kwargs)), None
        if "segments" not in cache:
            cache["segments"] = self._sdpa_segments(native, real, module, kwargs)
        if cache["segments"] is not None:
            return segment_attention(
                query, key, value, cache["segments"], scaling_of(module, query, kwargs), kernel=sdpa_kernel
            ), None
        if "mask" not in cache:
            cache["mask"] = render(mask, native, self.is_visual, self.mode, real, self.base, query.dtype)
        return base_fn(module, query, key, value, cache["mask"], *args, **kwargs)


@dataclass
class FutureMaskState:
    """What :func:`enable` installed on a model; kept on the model as ``model._futuremask``."""

    mode: str
    merge: MergeSettings | None
    visual_token_ids: tuple[int, ...]
    base_backend: str = "sdpa"
    installed_backend: str = "sdpa"  # the decoder's attn_implementation as enable() left it
    layers: frozenset[int] = frozenset()
    handles: list[Any] = field(default_factory=list)
    pending: PromptLayout | None = None
    active: Prefill | None = None


def visual_token_ids_of(config: Any) -> tuple[int, ...]:
    """Token ids that stand for visual positions: the config's image and video token ids, or, where the top-level
    config has none (Phi-4-multimodal), those of its ``vision_config``."""
    for candidate in (config, getattr(config, "vision_config", None)):
        ids = []
        for name in _VISUAL_ID_NAMES:
            value = getattr(candidate, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0 and value not in ids:
                ids.append(value)
        if ids:
            return tuple(ids)
    return ()


def attn_implementation_of(module: nn.Module) -> str:
    """The module's attention backend, seen through our wrapper (``futuremask_sdpa`` is ``sdpa``)."""
    config = getattr(module, "config", None)
    return str(getattr(config, "_attn_implementation", None) or "eager").removeprefix(BACKEND_PREFIX)


def check_backend(attn_implementation: str, mode: str) -> None:
    """Refuse a backend that would silently drop the mask (flash-attn only takes padding masks)."""
    if mode != "original" and attn_implementation not in MASKED_BACKENDS:
        raise ValueError(
            f"mode {mode!r} needs an attention backend that takes an explicit mask; "
            f"attn_implementation={attn_implementation!r} would ignore it. "
            f"Load the model with attn_implementation in {list(MASKED_BACKENDS)}."
        )


def find_decoder(model: nn.Module) -> nn.Module:
    """The text decoder of a VLM: the module that turns embeddings into hidden states under a causal mask."""
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(
            f"{type(model).__name__} is an encoder-decoder model; future masks change a decoder-only VLM's prompt "
            "prefill (its encoder already attends bidirectionally), so this model is not supported"
        )
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or decoder is model:
        raise ValueError(
            f"cannot find the language model inside {type(model).__name__}; "
            "enable() expects a Hugging Face VLM such as LlavaForConditionalGeneration"
        )
    return decoder


def decoder_layers(decoder: nn.Module) -> frozenset[int]:
    """Ids of every module inside the decoder's layer stack (the shallowest ``layers`` list): attention calls of other
    modules (a vision tower embedded in the decoder, as in Phi-4-multimodal) are left alone."""
    lists = [(n.count("."), m) for n, m in decoder.named_modules() if n.split(".")[-1] == "layers"]
    lists = [(depth, m) for depth, m in lists if isinstance(m, nn.ModuleList)]
    root = min(lists, key=lambda item: item[0])[1] if lists else decoder
    return frozenset(id(m) for m in root.modules())


def _cache_length(past_key_values: Any) -> int:
    if past_key_values is None:
        return 0
    if hasattr(past_key_values, "get_seq_length"):
        return int(past_key_values.get_seq_length())
    return int(past_key_values[0][0].shape[-2])


def _attention(base: str):
    from .backends import base_attention

    def attention(module, query, key, value, attention_mask, *args, futuremask: Prefill | None = None, **kwargs):
        base_fn = base_attention(type(module), base)
        if futuremask is None or not futuremask.covers(module):
            return base_fn(module, query, key, value, attention_mask, *args, **kwargs)
        return futuremask.attend(module, query, key, value, attention_mask, base_fn, args, kwargs)

    return attention


def register_futuremask_backend(base: str) -> str:
    """Register ``futuremask_<base>`` with transformers (attention and mask interfaces); returns its name."""
    return register_backend(f"{BACKEND_PREFIX}{base}", base, _attention(base))


class _PrefillHooks:
    """The hooks :func:`enable` installs: the top-level model records where the prompt's visual tokens are, the
    decoder turns a prompt prefill into a :class:`Prefill`, and both check afterwards that the mode was applied."""

    def __init__(self, state: FutureMaskState, decoder: nn.Module, ids: tuple[int, ...], base: str) -> None:
        self.state, self.decoder, self.base = state, decoder, base
        self.ids = torch.tensor(ids)

    def install(self, model: nn.Module, decoder: nn.Module) -> list[Any]:
        """Register the four hooks; returns their handles."""
        return [
            model.register_forward_pre_hook(self.remember_visual_positions, with_kwargs=True),
            model.register_forward_hook(self.check_applied_at_top, with_kwargs=True, always_call=True),
            decoder.register_forward_pre_hook(self.start_prefill, with_kwargs=True),
            decoder.register_forward_hook(self.check_applied, with_kwargs=True, always_call=True),
        ]

    def visual(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` bool: which ids stand for visual positions."""
        return torch.isin(input_ids, self.ids.to(input_ids.device))

    def remember_visual_positions(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Top-level pre-hook: record the prompt's visual positions for the decoder call that follows."""
        state = self.state
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        # pixel_values, pixel_values_videos, Phi-4-multimodal's image_pixel_values, ...
        has_pixels = any("pixel_values" in k and v is not None for k, v in kwargs.items())
        if input_ids is None:
            state.pending = None
            if has_pixels:
                raise ValueError(
                    "future masks locate visual tokens through input_ids; call the model with input_ids, "
                    "not inputs_embeds"
                )
            return
        state.pending = PromptLayout(self.visual(input_ids), has_pixels)

    def check_applied_at_top(self, module: nn.Module, _args: tuple, _kwargs: dict, output: Any) -> None:
        """Top-level hook: a prompt with images whose decoder never ran under the mode is an error."""
        layout, self.state.pending = self.state.pending, None
        if output is None:  # the forward raised: let its own error through
            return
        if layout is not None and layout.has_pixels and bool(layout.is_visual.any()):
            raise RuntimeError(
                f"{type(module).__name__} ran a prompt with images but its decoder ({type(self.decoder).__name__}) "
                "was never called with it: the future mask was not applied. This model is not supported by enable()."
            )

    def start_prefill(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Decoder pre-hook: a prompt prefill with visual tokens gets a :class:`Prefill` as ``futuremask=``."""
        state = self.state
        layout, state.pending = state.pending, None
        own_ids = kwargs.get("input_ids")  # a decoder that embeds images itself (Phi-4-multimodal) sees the ids
        is_visual = self.visual(own_ids) if own_ids is not None else (layout.is_visual if layout else None)
        if is_visual is None or not bool(is_visual.any()):
            return None
        if _cache_length(kwargs.get("past_key_values")) > 0:
            # Decode steps (even one that happens to emit the image token id) extend the cache causally.
            if layout is not None and layout.has_pixels:
                raise NotImplementedError(
                    "future masks apply to a whole-prompt prefill; this call adds images to a non-empty cache"
                )
            return None
        if module.config._attn_implementation != state.installed_backend:
            raise ValueError(
                f"the attention backend changed after enable() ({state.installed_backend!r} -> "
                f"{module.config._attn_implementation!r}); call enable() again so the mode follows it"
            )
        state.active = Prefill(is_visual, state.mode, state.merge, self.base, state.layers)
        kwargs["futuremask"] = state.active
        return args, kwargs

    def check_applied(self, module: nn.Module, _args: tuple, _kwargs: dict, output: Any) -> None:
        """Decoder hook: a prefill none of whose attention calls took the mode is an error."""
        prefill, self.state.active = self.state.active, None
        if output is None:  # the forward raised: let its own error through
            return
        if prefill is not None and prefill.applied == 0:
            raise RuntimeError(
                f"the decoder {type(module).__name__} ran a prompt prefill with visual tokens, but none of its "
                "attention calls received the future mask; this model is not supported by enable()"
            )


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
    rows keep their layer's own mask and the future scores the mode would open are pooled into the prefix logits
    (see :mod:`lmms_futuremask.attention.merge`). Calling it again reconfigures the model; :func:`disable` restores
    the stock behaviour.
    """
    check_mode(mode)
    settings = merge_settings(merge, mode, merge_options)
    decoder = find_decoder(model)
    if visual_token_ids is not None and not tuple(visual_token_ids):
        raise ValueError("visual_token_ids=() names no token; give the ids of the visual positions, or None")
    ids = tuple(visual_token_ids) if visual_token_ids is not None else visual_token_ids_of(model.config)
    if not ids:
        raise ValueError(
            f"{type(model).__name__}.config has no image_token_id; pass visual_token_ids=(...) to enable()"
        )
    check_backend(attn_implementation_of(decoder), mode)

    disable(model)
    base = attn_implementation_of(decoder)
    state = FutureMaskState(mode=mode, merge=settings, visual_token_ids=ids, base_backend=base)
    setattr(model, _STATE_ATTR, state)
    if mode == "original":
        return model
    decoder.config._attn_implementation = {"": register_futuremask_backend(base)}  # this config only, not its parts
    state.installed_backend = decoder.config._attn_implementation
    state.layers = decoder_layers(decoder)
    state.handles = _PrefillHooks(state, decoder, ids, base).install(model, decoder)
    return model


def disable(model: nn.Module) -> nn.Module:
    """Remove what :func:`enable` installed; the model behaves exactly as before."""
    state = getattr(model, _STATE_ATTR, None)
    if state is not None:
        for handle in state.handles:
            handle.remove()
        if state.mode != "original":
            find_decoder(model).config._attn_implementation = {"": state.base_backend}
        delattr(model, _STATE_ATTR)
    return model


def enabled_settings(model: nn.Module) -> dict[str, Any] | None:
    """The keyword arguments of the :func:`enable` call in force on ``model`` (to restore it after another mode),
    or None when it is not enabled."""
    state = getattr(model, _STATE_ATTR, None)
    if state is None:
        return None
    settings: dict[str, Any] = {"mode": state.mode, "merge": "none", "visual_token_ids": state.visual_token_ids}
    if state.merge is not None:
        merge = state.merge
        settings |= {"merge": "kernel", "merge_pool": merge.pool, "merge_kernel": merge.kernel}
        settings["merge_prefix"] = merge.prefix
    return settings


def current_mode(model: nn.Module) -> str | None:
    """The mode :func:`enable` set on ``model``, or None when it is not enabled."""
    state = getattr(model, _STATE_ATTR, None)
    return None if state is None else state.mode


__all__ = ["current_mode", "disable", "enable", "enabled_settings", "visual_token_ids_of"]
