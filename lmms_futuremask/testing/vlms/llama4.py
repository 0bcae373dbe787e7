"""Tiny Llama 4 checkpoint: ``Llama4ForConditionalGeneration`` (Llama 4 vision encoder with pixel-shuffle adapter,
dense Llama 4 text decoder: one chunked-attention RoPE layer and one full-attention NoPE layer, no MoE) with the
real ``Llama4Processor``, ``Llama4ImageProcessor`` (tiling) and a ``PreTrainedTokenizerFast`` tokenizer (as the
real checkpoints ship).

Tiles are 32 px; 8 px patches (4x4) pixel-shuffled by 0.5 give 4 ``<|patch|>`` tokens a tile. A 64 px image fits a
2x2 canvas: ``<|image_start|>`` + per tile row (4 patches ``<|tile_x_separator|>`` 4 patches ``<|tile_y_separator|>``)
+ ``<|image|>`` + 4 patches of the global thumbnail + ``<|image_end|>`` = 20 visual tokens and 8 markers. An image of
32 px or less is one tile: ``<|image_start|><|image|>`` + 4 patches + ``<|image_end|>``.
``attention_chunk_size`` (32) is shorter than a two-image prompt.
"""

from __future__ import annotations

import torch

from . import TinyVLM
from ._common import set_generation_ids, spread_init, train_bpe_tokenizer, wrap_tokenizer

TILE_SIZE = 32
PATCH_SIZE = 8
PIXEL_SHUFFLE_RATIO = 0.5
TOKENS_PER_TILE = int((TILE_SIZE // PATCH_SIZE) ** 2 * PIXEL_SHUFFLE_RATIO**2)
MAX_TILES = 4
CHUNK_SIZE = 32
LAYER_TYPES = ["chunked_attention", "full_attention"]

_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|finetune_right_pad|>",
    "<|header_start|>",
    "<|header_end|>",
    "<|eom|>",
    "<|eot|>",
    "<|python_start|>",
    "<|python_end|>",
    "<|image_start|>",
    "<|image_end|>",
    "<|image|>",
    "<|patch|>",
    "<|tile_x_separator|>",
    "<|tile_y_separator|>",
]


def build_tokenizer():
    """Byte-level BPE in ``PreTrainedTokenizerFast`` (Llama 4's own class). No automatic BOS: the chat template
    writes ``<|begin_of_text|>``."""
    from transformers import PreTrainedTokenizerFast

    return wrap_tokenizer(
        PreTrainedTokenizerFast,
        train_bpe_tokenizer(_SPECIALS, bos="<|begin_of_text|>", add_bos=False),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot|>",
        pad_token="<|finetune_right_pad|>",
        model_max_length=8192,
        padding_side="left",
    )


def build_llama4(seed: int = 0):
    """Llama 4 (tiled images, one chunked-attention and one full NoPE layer, no MoE): ``(model, processor)``."""
    from transformers import (
        Llama4Config,
        Llama4ForConditionalGeneration,
        Llama4ImageProcessor,
        Llama4Processor,
        Llama4TextConfig,
        Llama4VisionConfig,
    )
    from transformers.models.llama4.processing_llama4 import chat_template as llama4_chat_template

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    vision = Llama4VisionConfig(
        hidden_size=32,
        intermediate_size=128,  # must be hidden_size / pixel_shuffle_ratio**2 (the shuffled feature width)
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TILE_SIZE,
        patch_size=PATCH_SIZE,
        pixel_shuffle_ratio=PIXEL_SHUFFLE_RATIO,
        vision_output_dim=64,
        projector_input_dim=64,
        projector_output_dim=64,
    )
    text = Llama4TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        intermediate_size_mlp=128,
        num_hidden_layers=len(LAYER_TYPES),
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=8192,
        moe_layers=[],  # every layer a dense MLP
        num_local_experts=1,
        no_rope_layers=[int(kind == "chunked_attention") for kind in LAYER_TYPES],  # 1 = RoPE (chunked) layer
        layer_types=list(LAYER_TYPES),
        attention_chunk_size=CHUNK_SIZE,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = Llama4Config(
        vision_config=vision,
        text_config=text,
        boi_token_index=tokenizer.convert_tokens_to_ids("<|image_start|>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<|image_end|>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<|patch|>"),
    )
    model = Llama4ForConditionalGeneration(config)
    spread_init(model, seed)
    set_generation_ids(model, tokenizer)
    image_processor = Llama4ImageProcessor(
        size={"height": TILE_SIZE, "width": TILE_SIZE}, max_patches=MAX_TILES, resize_to_max_canvas=False
    )
    processor = Llama4Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        pixel_shuffle_ratio=PIXEL_SHUFFLE_RATIO,
        chat_template=llama4_chat_template,
    )
    return model.eval(), processor


FAMILIES: dict[str, TinyVLM] = {
    "llama4": TinyVLM(
        name="llama4",
        build=build_llama4,
        image_placeholder="<|image|>",
        visual_tokens=("<|patch|>",),
        marker_tokens=(
            "<|image_start|>",
            "<|image_end|>",
            "<|image|>",
            "<|tile_x_separator|>",
            "<|tile_y_separator|>",
        ),
        non_causal_stock_mask=False,
        layer_kinds=("chunked", "full"),
        video=False,
        notes=(
            "config.image_token_id (alias of image_token_index) = <|patch|>; boi/eoi_token_id = "
            "<|image_start|>/<|image_end|>. The processor's image_token <|image|> is the placeholder of the text AND "
            "stays in the expansion as a text marker before the global tile's patches. A 64 px image: 2x2 tiles + "
            "global = 20 <|patch|>; a <=32 px one: 4. Decoder layers: chunked_attention (RoPE, "
            "attention_chunk_size=32), full_attention (NoPE, attention temperature tuning); no MoE layers. "
            "Processor outputs: input_ids, attention_mask, pixel_values (one row per tile, all images stacked)."
        ),
        extra={
            "tokens_per_tile": TOKENS_PER_TILE,
            "tile_size": TILE_SIZE,
            "attention_chunk_size": CHUNK_SIZE,
            "layer_types": tuple(LAYER_TYPES),
        },
    ),
}
