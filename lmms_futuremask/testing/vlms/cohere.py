"""Tiny Aya Vision checkpoint: ``AyaVisionForConditionalGeneration`` (SigLIP tower, 2x2 pixel-shuffle SwiGLU
projector, Cohere2 decoder with a sliding and a full layer) with the real ``AyaVisionProcessor``,
``GotOcr2ImageProcessor`` (crop to tiles + a global thumbnail) and ``CohereTokenizer``.

A 64 px tile -> 8x8 SigLIP patches -> pixel shuffle -> 16 ``<|IMG_PATCH|>`` tokens. A square image of up to 64 px
is one tile, written ``<|START_OF_IMG|>TILE_GLOBAL`` + 16 x ``<|IMG_PATCH|>`` + ``<|END_OF_IMG|>``; a larger or
non-square one is cut into up to 4 tiles (each ``TILE_<i>`` + 16 patches) plus the global one.
"""

from __future__ import annotations

import torch

from . import TinyVLM
from ._common import CORPUS, set_generation_ids, spread_init, train_bpe_tokenizer, wrap_tokenizer

IMAGE_SIZE = 64
PATCH_SIZE = 8
DOWNSAMPLE = 2
TOKENS_PER_TILE = (IMAGE_SIZE // (PATCH_SIZE * DOWNSAMPLE)) ** 2
MAX_TILES = 4
SLIDING_WINDOW = 16
LAYER_TYPES = ["sliding_attention", "full_attention"]

_SPECIALS = [
    "<PAD>",
    "<UNK>",
    "<CLS>",
    "<SEP>",
    "<MASK_TOKEN>",
    "<BOS_TOKEN>",
    "<EOS_TOKEN>",
    "<|START_OF_TURN_TOKEN|>",
    "<|END_OF_TURN_TOKEN|>",
    "<|USER_TOKEN|>",
    "<|CHATBOT_TOKEN|>",
    "<|SYSTEM_TOKEN|>",
    "<|START_OF_IMG|>",
    "<|END_OF_IMG|>",
    "<|IMG_PATCH|>",
    "<|IMG_LINE_BREAK|>",
]

_TILE_WORDS = "\n" + " ".join(["TILE_GLOBAL"] + [f"TILE_{i}" for i in range(1, MAX_TILES + 1)]) + "\n"

#: A reduced copy of CohereForAI/aya-vision-8b's chat template (without its default system preamble): Cohere turns
#: ``<|START_OF_TURN_TOKEN|><|USER_TOKEN|>...<|END_OF_TURN_TOKEN|>``, each image block written ``<image>`` where it
#: stands, ``<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>`` as the generation prompt.
AYA_VISION_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' }}"
    "{% elif message['role'] == 'user' %}{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|END_OF_TURN_TOKEN|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}"
)


def build_tokenizer():
    """The real ``CohereTokenizer`` (byte-level BPE, digits split) over a vocab trained offline. No automatic BOS:
    the chat template writes ``<BOS_TOKEN>``."""
    from transformers import CohereTokenizer

    return wrap_tokenizer(
        CohereTokenizer,
        # The tile markers the processor writes (plain text) join the corpus so they split into few pieces.
        train_bpe_tokenizer(_SPECIALS, bos="<BOS_TOKEN>", add_bos=False, corpus=CORPUS + _TILE_WORDS),
        unk_token="<UNK>",
        bos_token="<BOS_TOKEN>",
        eos_token="<|END_OF_TURN_TOKEN|>",
        pad_token="<PAD>",
        cls_token="<CLS>",
        sep_token="<SEP>",
        mask_token="<MASK_TOKEN>",
        add_bos_token=False,
        add_eos_token=False,
        model_max_length=8192,
        padding_side="left",
    )


def build_aya_vision(seed: int = 0):
    """Aya Vision (SigLIP, pixel-shuffle projector, Cohere2 with a sliding and a full layer): ``(model, processor)``."""
    from transformers import (
        AyaVisionConfig,
        AyaVisionForConditionalGeneration,
        AyaVisionProcessor,
        Cohere2Config,
        GotOcr2ImageProcessor,
        SiglipVisionConfig,
    )

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        vision_use_head=False,
    )
    text = Cohere2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=len(LAYER_TYPES),
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        sliding_window=SLIDING_WINDOW,
        layer_types=list(LAYER_TYPES),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config = AyaVisionConfig(
        vision_config=vision,
        text_config=text,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        downsample_factor=DOWNSAMPLE,
        image_token_index=tokenizer.convert_tokens_to_ids("<|IMG_PATCH|>"),
        tie_word_embeddings=False,
    )
    model = AyaVisionForConditionalGeneration(config)
    spread_init(model, seed)
    set_generation_ids(model, tokenizer)
    image_processor = GotOcr2ImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        crop_to_patches=True,
        min_patches=1,
        max_patches=MAX_TILES,
    )
    processor = AyaVisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE * DOWNSAMPLE,
        img_size=IMAGE_SIZE,
        downsample_factor=1,
        chat_template=AYA_VISION_CHAT_TEMPLATE,
    )
    return model.eval(), processor


FAMILIES: dict[str, TinyVLM] = {
    "aya_vision": TinyVLM(
        name="aya_vision",
        build=build_aya_vision,
        image_placeholder="<image>",
        visual_tokens=("<|IMG_PATCH|>",),
        marker_tokens=("<|START_OF_IMG|>", "<|END_OF_IMG|>"),
        non_causal_stock_mask=False,
        layer_kinds=("sliding", "full"),
        video=False,
        notes=(
            "config.image_token_id (alias of image_token_index) = <|IMG_PATCH|>. The processor replaces each "
            "'<image>' (plain text, not a token) by <|START_OF_IMG|> [TILE_1 + 16 patches ...] TILE_GLOBAL + 16 "
            "<|IMG_PATCH|> <|END_OF_IMG|>; TILE_<i> / TILE_GLOBAL are ordinary text (several BPE pieces). A square "
            "image <= 64 px is one tile (16 visual tokens); larger / non-square ones get up to 4 tiles + the global "
            "one. Cohere2 decoder layers: sliding (window 16), full. Weights untied (the real model ties them) so "
            "greedy decoding of the random model does not stall."
        ),
        extra={
            "tokens_per_tile": TOKENS_PER_TILE,
            "sliding_window": SLIDING_WINDOW,
            "image_size": IMAGE_SIZE,
            "layer_types": tuple(LAYER_TYPES),
        },
    ),
}
