"""Tiny Qwen-VL checkpoints: Qwen2-VL, Qwen2.5-VL and Qwen3-VL (M-RoPE decoders, native-resolution vision towers).

Each uses its real ``*ForConditionalGeneration``, processor, ``Qwen2VLImageProcessor``, video processor and the real
``Qwen2Tokenizer`` class over a vocab trained offline. Patches are 8 px with a 2x2 merge, so one visual token
covers 16x16 px; ``min_pixels = 32*32`` and ``max_pixels = 64*64`` keep an image at 4..16 tokens (a 40x32 image
is resized to 48x32 -> 6 tokens).
"""

from __future__ import annotations

import torch

from . import TinyVLM
from ._common import qwen2_tokenizer, set_generation_ids, spread_init

PATCH, MERGE, TEMPORAL = 8, 2, 2
MIN_PIXELS, MAX_PIXELS = 32 * 32, 64 * 64
#: A video frame pair (temporal patch 2) is capped lower: 32x32 px -> 4 tokens a temporal patch.
VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS = 32 * 32, 32 * 32 * 4

_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

#: The Qwen2-VL / Qwen2.5-VL instruct chat template (verbatim: default system prompt, images in place).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Qwen3-VL instruct chat template, reduced (no tools / reasoning): no default system prompt, images in place.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif content['type'] == 'video' or 'video' in content %}{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in content %}{{- content['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
)


def _tokenizer():
    return qwen2_tokenizer(
        _SPECIALS,
        {
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )


def _token_ids(tokenizer) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )


def _text_ids(tokenizer) -> dict[str, int | None]:
    return dict(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _processors(image_mean=None, image_std=None, video_cls=None, **video_kwargs):
    from transformers import Qwen2VLImageProcessor

    norm = {} if image_mean is None else {"image_mean": image_mean, "image_std": image_std}
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        patch_size=PATCH,
        temporal_patch_size=TEMPORAL,
        merge_size=MERGE,
        **norm,
    )
    video_processor = video_cls(
        size={"shortest_edge": VIDEO_MIN_PIXELS, "longest_edge": VIDEO_MAX_PIXELS},
        patch_size=PATCH,
        temporal_patch_size=TEMPORAL,
        merge_size=MERGE,
        cap_pixels_per_frame=False,  # the current uncapped behaviour, stated so it does not warn
        **norm,
        **video_kwargs,
    )
    return image_processor, video_processor


def _finish(model, tokenizer, seed: int):
    spread_init(model, seed, skip=("visual",))
    set_generation_ids(model, tokenizer)
    return model.eval()


def build_qwen2_vl(seed: int = 0):
    """Qwen2-VL (M-RoPE, native resolution, 2x2 merge): ``(model, processor)``."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    config = Qwen2VLConfig(
        text_config=dict(
            model_type="qwen2_vl_text",
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            **_TEXT,
            **_text_ids(tokenizer),
        ),
        vision_config=dict(
            model_type="qwen2_vl_vision",
            depth=2,
            embed_dim=32,
            hidden_size=_TEXT["hidden_size"],
            mlp_ratio=2,
            num_heads=2,
            patch_size=PATCH,
            spatial_merge_size=MERGE,
            temporal_patch_size=TEMPORAL,
        ),
        **_token_ids(tokenizer),
    )
    model = _finish(Qwen2VLForConditionalGeneration(config), tokenizer, seed)
    image_processor, video_processor = _processors(video_cls=Qwen2VLVideoProcessor)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    return model, processor


def build_qwen2_5_vl(seed: int = 0):
    """Qwen2.5-VL (M-RoPE, windowed vision attention, 2x2 merge): ``(model, processor)``."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLVideoProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    config = Qwen2_5_VLConfig(
        text_config=dict(
            model_type="qwen2_5_vl_text",
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            **_TEXT,
            **_text_ids(tokenizer),
        ),
        vision_config=dict(
            model_type="qwen2_5_vl",
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=_TEXT["hidden_size"],
            patch_size=PATCH,
            spatial_merge_size=MERGE,
            temporal_patch_size=TEMPORAL,
            window_size=PATCH * MERGE * 2,  # windows of 2x2 merged tokens
            fullatt_block_indexes=[1],
            tokens_per_second=2,
        ),
        **_token_ids(tokenizer),
    )
    model = _finish(Qwen2_5_VLForConditionalGeneration(config), tokenizer, seed)
    image_processor, video_processor = _processors(video_cls=Qwen2VLVideoProcessor)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    return model, processor


def build_qwen3_vl(seed: int = 0):
    """Qwen3-VL (interleaved M-RoPE, deepstack vision features): ``(model, processor)``."""
    from transformers import (
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    config = Qwen3VLConfig(
        text_config=dict(
            model_type="qwen3_vl_text",
            head_dim=16,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [4, 2, 2],
                "mrope_interleaved": True,
            },
            **_TEXT,
            **_text_ids(tokenizer),
        ),
        vision_config=dict(
            model_type="qwen3_vl",
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=_TEXT["hidden_size"],
            patch_size=PATCH,
            spatial_merge_size=MERGE,
            temporal_patch_size=TEMPORAL,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0],
        ),
        **_token_ids(tokenizer),
    )
    model = _finish(Qwen3VLForConditionalGeneration(config), tokenizer, seed)
    image_processor, video_processor = _processors(
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], video_cls=Qwen3VLVideoProcessor
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )
    return model, processor


_QWEN_NOTES = (
    "8 px patches, 2x2 merge: one <|image_pad|> per 16x16 px after smart_resize to multiples of 16 within "
    "32*32..64*64 px (4 tokens for 32x32 or 40x32, 12 for 64x48, at most 16). Each image is "
    "<|vision_start|> + N <|image_pad|> + <|vision_end|>; video: one <|video_pad|> per 16x16 px per 2 frames "
    "(temporal patch 2). The model builds 3-D M-RoPE position_ids (3, batch, seq) from mm_token_type_ids and "
    "*_grid_thw. config.image_token_id / video_token_id / vision_start_token_id / vision_end_token_id (top level). "
)

FAMILIES: dict[str, TinyVLM] = {
    "qwen2_vl": TinyVLM(
        name="qwen2_vl",
        build=build_qwen2_vl,
        image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
        visual_tokens=("<|image_pad|>", "<|video_pad|>"),
        marker_tokens=("<|vision_start|>", "<|vision_end|>"),
        video=True,
        notes=_QWEN_NOTES + "Chat template adds the default system prompt. The model requires mm_token_type_ids.",
        extra={"num_multimodal_tokens": "visual", "mrope": True},
    ),
    "qwen2_5_vl": TinyVLM(
        name="qwen2_5_vl",
        build=build_qwen2_5_vl,
        image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
        visual_tokens=("<|image_pad|>", "<|video_pad|>"),
        marker_tokens=("<|vision_start|>", "<|vision_end|>"),
        video=True,
        notes=_QWEN_NOTES
        + "Vision tower with window attention (window = 2x2 merged tokens) and one full-attention block. Without "
        "mm_token_type_ids the model silently falls back to 1-D positions (different logits) instead of raising.",
        extra={"num_multimodal_tokens": "visual", "mrope": True},
    ),
    "qwen3_vl": TinyVLM(
        name="qwen3_vl",
        build=build_qwen3_vl,
        image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
        visual_tokens=("<|image_pad|>", "<|video_pad|>"),
        marker_tokens=("<|vision_start|>", "<|vision_end|>"),
        video=True,
        notes=_QWEN_NOTES
        + "Interleaved M-RoPE (mrope_section [4,2,2], head_dim 16), DeepStack: vision layer 0 features are added "
        "to the hidden states at visual positions after decoder layer 0 (the decoder gets visual_pos_masks and "
        "deepstack_visual_embeds). Video: per temporal patch '<t seconds>' (plain text) + <|vision_start|> + "
        "<|video_pad|>*n + <|vision_end|>, nested inside the template's own <|vision_start|>...<|vision_end|>. "
        "No default system prompt. The model requires mm_token_type_ids.",
        extra={"num_multimodal_tokens": "visual", "mrope": True},
    ),
}
