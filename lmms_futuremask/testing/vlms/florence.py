"""Tiny Florence-2 checkpoint: ``Florence2ForConditionalGeneration`` (DaViT vision backbone + projector feeding a
BART *encoder-decoder*) with the real ``Florence2Processor``, ``CLIPImageProcessor`` and ``BartTokenizer``.

It is here so that tests can check that the library refuses encoder-decoder models; it builds and runs like the
others. The prompt is a task token (``<CAPTION>``, ``<OD>``, ...) or free text; the processor turns a task token
into its question and writes ``<image>`` x 17 + ``<s>`` + text + ``</s>`` (one image per prompt) for the encoder. A
32 px image -> DaViT strides 4 and 2 -> 4x4 = 16 spatial tokens + 1 pooled token = 17.
"""

from __future__ import annotations

import torch

from . import TinyVLM
from ._common import set_generation_ids, spread_init, train_bpe_tokenizer, wrap_tokenizer

IMAGE_SIZE = 32
TOKENS_PER_IMAGE = (IMAGE_SIZE // 8) ** 2 + 1

_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<image>"]
_TASK_TOKENS = ["<OCR>", "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OD>"]


def build_tokenizer():
    """The real ``BartTokenizer`` (= ``RobertaTokenizer``: byte-level BPE, ``<s> ... </s>``) over a vocab trained
    offline; Florence-2's processor encodes with ``add_special_tokens=False`` and writes ``<s>``/``</s>`` itself."""
    from transformers import BartTokenizer

    return wrap_tokenizer(
        BartTokenizer,
        train_bpe_tokenizer(_SPECIALS + _TASK_TOKENS, add_bos=False),
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        extra_special_tokens={"image_token": "<image>"},
        model_max_length=1024,
        padding_side="left",
    )


def build_florence2(seed: int = 0):
    """Florence-2 (DaViT + BART encoder-decoder), to test that encoder-decoders are refused: ``(model, processor)``."""
    from transformers import (
        BartConfig,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        Florence2VisionConfig,
    )

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    vision = Florence2VisionConfig(
        depths=[1, 1],
        patch_size=[7, 3],
        patch_stride=[4, 2],
        patch_padding=[3, 1],
        patch_prenorm=[False, True],
        embed_dim=[32, 64],
        num_heads=[2, 4],
        num_groups=[2, 4],
        window_size=4,
        drop_path_rate=0.0,
        projection_dim=64,
    )
    text = BartConfig(
        vocab_size=len(tokenizer),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        tie_word_embeddings=False,
    )
    config = Florence2Config(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=False,  # the real model ties them; untied, greedy decoding of random weights does not stall
    )
    model = Florence2ForConditionalGeneration(config)
    spread_init(model, seed)
    set_generation_ids(model, tokenizer)
    model.generation_config.decoder_start_token_id = tokenizer.eos_token_id
    image_processor = CLIPImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False,
        image_seq_length=TOKENS_PER_IMAGE,
    )
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    return model.eval(), processor


FAMILIES: dict[str, TinyVLM] = {
    "florence2": TinyVLM(
        name="florence2",
        build=build_florence2,
        image_placeholder=None,
        visual_tokens=("<image>",),
        marker_tokens=(),
        non_causal_stock_mask=True,
        layer_kinds=("full",),
        video=False,
        notes=(
            "ENCODER-DECODER (config.is_encoder_decoder=True): the image and prompt go to a bidirectional BART "
            "encoder, generation happens in a decoder with cross-attention; the library should refuse it. "
            "config.image_token_id = <image>. No chat template: the prompt is a task token or text; the processor "
            "prepends 17 <image> tokens (one image per prompt). Loads with AutoModelForImageTextToText."
        ),
        extra={"tokens_per_image": TOKENS_PER_IMAGE, "image_size": IMAGE_SIZE, "encoder_decoder": True},
    ),
}
