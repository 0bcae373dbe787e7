"""Tiny LLaVA-lineage checkpoints: LLaVA-1.5, LLaVA-NeXT (anyres), LLaVA-OneVision (anyres + video) and
LLaVA-NeXT-Video.

Each uses its real ``*ForConditionalGeneration``, processor, image processor (and video processor), a tokenizer
trained offline, and a reduced copy of its llava-hf chat template.
"""

from __future__ import annotations

import torch

from . import TinyVLM
from ._common import qwen2_tokenizer, set_generation_ids, spread_init, train_bpe_tokenizer

_LLAMA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>"]
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

# --- chat templates (llava-hf style: images of a turn first, then its text) ------------------------------------

#: llava-hf/llava-v1.6-mistral-7b-hf (Mistral [INST] format; the closing " [/INST]" is the generation prompt).
LLAVA_NEXT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<<SYS>>\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{{ message['content'][0]['text'] }}{% endif %}"
    "{{ '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% endif %}{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% if message['content'] is string %}{{ ' ' + message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ ' ' + content['text'] }}{% endfor %}"
    "{% endif %}{{ '</s>' }}"
    "{% endif %}{% endfor %}"
)

#: llava-hf/llava-onevision-qwen2-0.5b-ov-hf (ChatML; images, then videos, then text).
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ '\n' + message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\n' + content['text'] }}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: llava-hf/LLaVA-NeXT-Video-7B-hf (Vicuna "USER: ... ASSISTANT:"; images, then videos, then text).
LLAVA_NEXT_VIDEO_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
)


def _llama_tokenizer(specials=_LLAMA_SPECIALS, video: bool = False):
    from transformers import PreTrainedTokenizerFast

    extra = {"image_token": "<image>"}
    if video:
        extra["video_token"] = "<video>"
    return PreTrainedTokenizerFast(
        tokenizer_object=train_bpe_tokenizer(specials),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=extra,
        model_max_length=4096,
        padding_side="left",
    )


def _finish(model, tokenizer, seed: int):
    spread_init(model, seed)
    set_generation_ids(model, tokenizer)
    return model.eval()


# --- LLaVA-1.5 -----------------------------------------------------------------------------------------------------


def build_llava(seed: int = 0):
    """LLaVA-1.5 (the tiny checkpoint of :mod:`lmms_futuremask.testing.tiny`): ``(model, processor)``."""
    from lmms_futuremask.testing.tiny import build_model, build_processor, build_tokenizer

    tokenizer = build_tokenizer()
    return build_model(tokenizer, seed=seed), build_processor(tokenizer)


# --- LLaVA-NeXT ----------------------------------------------------------------------------------------------------

#: CLIP tile 28 px / patch 14: 2x2 patches a tile. Pinpoints up to 2x2 tiles: an image of 28 px or less gives
#: 1 tile (4 + 2 newlines + 4 base = 10 tokens), a larger square one 2x2 tiles (16 + 4 newlines + 4 base = 24).
NEXT_TILE, NEXT_PATCH = 28, 14
NEXT_PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56]]


def build_llava_next(seed: int = 0):
    """LLaVA-NeXT (anyres: a base tile plus grid tiles per image): ``(model, processor)``."""
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        MistralConfig,
    )

    torch.manual_seed(seed)
    tokenizer = _llama_tokenizer(_LLAMA_SPECIALS[:5])
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=NEXT_TILE,
        patch_size=NEXT_PATCH,
        projection_dim=32,
    )
    text = MistralConfig(
        vocab_size=len(tokenizer),
        sliding_window=None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **_TEXT,
    )
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=NEXT_PINPOINTS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(NEXT_TILE // NEXT_PATCH) ** 2,
    )
    model = _finish(LlavaNextForConditionalGeneration(config), tokenizer, seed)
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": NEXT_TILE},
        crop_size={"height": NEXT_TILE, "width": NEXT_TILE},
        image_grid_pinpoints=NEXT_PINPOINTS,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=NEXT_PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_NEXT_CHAT_TEMPLATE,
    )
    return model, processor


# --- LLaVA-OneVision -----------------------------------------------------------------------------------------------

#: SigLIP tile 32 px / patch 8: 4x4 = 16 features a tile. In a multi-image prompt each image is its base tile only
#: (16 + 1 newline = 17 tokens); a single image goes anyres over at most 2 tiles (a 32x32 one: 16 + 4 newlines +
#: 16 base = 36; 40x32 or 64x48: 44). A video frame is pooled 2x2 -> 4 tokens, plus one newline token per video.
OV_TILE, OV_PATCH = 32, 8
OV_PINPOINTS = [[32, 32], [32, 64], [64, 32]]


def build_llava_onevision(seed: int = 0):
    """LLaVA-OneVision (anyres images and video frames, Qwen2 decoder): ``(model, processor)``."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    torch.manual_seed(seed)
    tokenizer = qwen2_tokenizer(_QWEN_SPECIALS, {"image_token": "<image>", "video_token": "<video>"})
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=OV_TILE,
        patch_size=OV_PATCH,
        vision_use_head=False,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **_TEXT,
    )
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=OV_PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
    )
    model = _finish(LlavaOnevisionForConditionalGeneration(config), tokenizer, seed)
    image_processor = LlavaOnevisionImageProcessor(
        size={"height": OV_TILE, "width": OV_TILE}, image_grid_pinpoints=OV_PINPOINTS
    )
    video_processor = LlavaOnevisionVideoProcessor(size={"height": OV_TILE, "width": OV_TILE})
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        num_image_tokens=(OV_TILE // OV_PATCH) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )
    return model, processor


# --- LLaVA-NeXT-Video ----------------------------------------------------------------------------------------------

#: CLIP tile 32 px / patch 8: 4x4 patches a tile. A 32 px image: 1 tile (16 + 4 newlines + 16 base = 36 tokens);
#: a video frame: 16 patches average-pooled 2x2 -> 4 tokens (no newline).
NV_TILE, NV_PATCH = 32, 8
NV_PINPOINTS = [[32, 32], [32, 64], [64, 32]]


def build_llava_next_video(seed: int = 0):
    """LLaVA-NeXT-Video (anyres images, pooled video frames): ``(model, processor)``."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextImageProcessor,
        LlavaNextVideoConfig,
        LlavaNextVideoForConditionalGeneration,
        LlavaNextVideoProcessor,
        LlavaNextVideoVideoProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = _llama_tokenizer(_LLAMA_SPECIALS, video=True)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=NV_TILE,
        patch_size=NV_PATCH,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **_TEXT,
    )
    grid = (NV_TILE // NV_PATCH) ** 2
    config = LlavaNextVideoConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=NV_PINPOINTS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        spatial_pool_mode="average",
        spatial_pool_stride=2,
        image_seq_length=grid,
        video_seq_length=grid // 4,
    )
    model = _finish(LlavaNextVideoForConditionalGeneration(config), tokenizer, seed)
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": NV_TILE},
        crop_size={"height": NV_TILE, "width": NV_TILE},
        image_grid_pinpoints=NV_PINPOINTS,
    )
    video_processor = LlavaNextVideoVideoProcessor(
        size={"shortest_edge": NV_TILE}, crop_size={"height": NV_TILE, "width": NV_TILE}
    )
    processor = LlavaNextVideoProcessor(
        video_processor=video_processor,
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=NV_PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_NEXT_VIDEO_CHAT_TEMPLATE,
    )
    return model, processor


FAMILIES: dict[str, TinyVLM] = {
    "llava": TinyVLM(
        name="llava",
        build=build_llava,
        image_placeholder="<image>",
        visual_tokens=("<image>",),
        notes=(
            "lmms_futuremask.testing.tiny's LLaVA-1.5 (CLIP 56 px / patch 14, Llama decoder, PreTrainedTokenizerFast): "
            "16 <image> tokens per image, images first in the chat template. config.image_token_id "
            "(alias image_token_index)."
        ),
        extra={"num_multimodal_tokens": "visual"},
    ),
    "llava_next": TinyVLM(
        name="llava_next",
        build=build_llava_next,
        image_placeholder="<image>",
        visual_tokens=("<image>",),
        notes=(
            "Anyres: CLIP 28 px tiles / patch 14, pinpoints up to 2x2 tiles. <image> positions hold the base tile, "
            "the unpadded tile grid AND one image_newline feature per grid row (no separate newline token): "
            "10 tokens for an image of 28 px or less, 24 for a larger square-ish one. The model needs image_sizes. "
            "Mistral decoder (sliding_window=None), [INST] template (images first; ' [/INST]' is the generation "
            "prompt, there is no add_generation_prompt text). config.image_token_id (alias image_token_index)."
        ),
        extra={"num_multimodal_tokens": "visual"},
    ),
    "llava_onevision": TinyVLM(
        name="llava_onevision",
        build=build_llava_onevision,
        image_placeholder="<image>",
        visual_tokens=("<image>", "<video>"),
        video=True,
        notes=(
            "SigLIP 32 px tiles / patch 8 (16 features a tile), Qwen2 decoder, real Qwen2Tokenizer. A sample "
            "whose images come as ONE nested list with >1 image (batch_num_images > 1) is multi-image: 17 tokens "
            "each (base tile + 1 newline); otherwise each image goes anyres (36 for 32x32, 44 for 40x32 or "
            "64x48, at most 56), newline features inside the <image> run; a flat image list counts every image "
            "as its own sample (anyres). Video: 4 pooled tokens per frame + 1 newline per video, all <video>. "
            "_get_num_multimodal_tokens only knows the anyres count. config.image_token_id / video_token_id "
            "(aliases *_index)."
        ),
        extra={"num_multimodal_tokens": "visual"},
    ),
    "llava_next_video": TinyVLM(
        name="llava_next_video",
        build=build_llava_next_video,
        image_placeholder="<image>",
        visual_tokens=("<image>", "<video>"),
        video=True,
        notes=(
            "CLIP 32 px tiles / patch 8, pinpoints [[32,32],[32,64],[64,32]], Llama decoder, Vicuna template. "
            "Images anyres (36 tokens for 32x32, 44 for 40x32 or 64x48, at most 56, newline features inside the "
            "run); video frames average-pooled 2x2 -> 4 <video> tokens per frame, no newline. "
            "config.image_token_id / video_token_id (aliases *_index)."
        ),
        extra={"num_multimodal_tokens": "visual"},
    ),
}
