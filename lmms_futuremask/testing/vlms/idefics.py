"""Tiny Idefics3 and SmolVLM (SmolVLM2, with video) checkpoints.

Both use a SigLIP-like vision tower on square tiles, a pixel-shuffle connector, a Llama decoder and the processor's
``<fake_token_around_image>`` / ``<global-img>`` / ``<row_i_col_j>`` framing around runs of ``<image>`` tokens.

* ``idefics3``: 32 px tiles, patch 8 -> 16 patches, scale factor 2 -> 4 ``<image>`` tokens a tile. Image splitting
  is on (the real default) with ``size.longest_edge = 64``: every image is first resized so its longest edge is
  64 px (small ones are upscaled), then cut into 32 px tiles plus a global tile, so a square-ish image gives 2x2
  tiles + global = 20 ``<image>`` tokens (a very elongated one 1x2 + global = 12).
* ``smolvlm``: 32 px tiles, patch 4 -> 64 patches, scale factor 2 -> 16 ``<image>`` tokens a tile; splitting is
  off, so every image (and every video frame) is one tile of 16 tokens.
"""

from __future__ import annotations

import torch

from . import TinyVLM
from ._common import bpe_vocab_merges, set_generation_ids, spread_init, train_bpe_tokenizer

_ROW_COL = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
_IMAGE_SPECIALS = ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>", *_ROW_COL]

#: HuggingFaceM4/Idefics3-8B-Llama3 chat template (verbatim): images in place, "User:" / "Assistant:" turns.
IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

#: SmolVLM2 chat template (transformers' smolvlm DEFAULT_CHAT_TEMPLATE, verbatim): images and videos in place.
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}{% endif %}"
    "{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
)

IDEFICS3_TILE, IDEFICS3_PATCH, IDEFICS3_SCALE = 32, 8, 2
IDEFICS3_IMAGE_SEQ_LEN = (IDEFICS3_TILE // IDEFICS3_PATCH) ** 2 // IDEFICS3_SCALE**2
SMOLVLM_TILE, SMOLVLM_PATCH, SMOLVLM_SCALE = 32, 4, 2
SMOLVLM_IMAGE_SEQ_LEN = (SMOLVLM_TILE // SMOLVLM_PATCH) ** 2 // SMOLVLM_SCALE**2


def _finish(model, tokenizer, seed: int):
    spread_init(model, seed, skip=("vision_model",))
    set_generation_ids(model, tokenizer)
    return model.eval()


def _vision(tile: int, patch: int) -> dict:
    return dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=tile,
        patch_size=patch,
    )


def build_idefics3(seed: int = 0):
    """Idefics3 (image splitting into 32 px tiles, 4 ``<image>`` tokens a tile): ``(model, processor)``."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(seed)
    # The Llama 3 tokenizer of Idefics3-8B is a plain PreTrainedTokenizerFast; its image tokens are added tokens.
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", *_IMAGE_SPECIALS]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe_tokenizer(specials, bos="<|begin_of_text|>"),
        bos_token="<|begin_of_text|>",
        eos_token="<end_of_utterance>",
        pad_token="<|reserved_special_token_0|>",
        extra_special_tokens=list(_IMAGE_SPECIALS),
        model_max_length=4096,
        padding_side="left",
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rms_norm_eps=1e-5,
        **_TEXT,
    )
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(**_vision(IDEFICS3_TILE, IDEFICS3_PATCH)),
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=IDEFICS3_SCALE,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = _finish(Idefics3ForConditionalGeneration(config), tokenizer, seed)
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": 2 * IDEFICS3_TILE},
        max_image_size={"longest_edge": IDEFICS3_TILE},
        do_image_splitting=True,
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IDEFICS3_IMAGE_SEQ_LEN,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    return model, processor


def build_smolvlm(seed: int = 0):
    """SmolVLM2 (Idefics3 layout, with a video processor): ``(model, processor)``."""
    from tokenizers import AddedToken
    from transformers import (
        GPT2Tokenizer,
        LlamaConfig,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
        SmolVLMVisionConfig,
    )
    from transformers.utils import is_num2words_available

    if not is_num2words_available():
        raise ImportError(
            "the smolvlm tiny VLM needs `num2words` (SmolVLMProcessor requires it): pip install num2words"
        )

    torch.manual_seed(seed)
    # SmolVLM2's tokenizer is GPT-2 style byte-level BPE (SmolLM2) with the image tokens added.
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *_IMAGE_SPECIALS, "<video>"]
    vocab, merges = bpe_vocab_merges(train_bpe_tokenizer(specials, add_bos=False))
    tokenizer = GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        extra_special_tokens={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
            "video_token": "<video>",
        },
        model_max_length=8192,
        padding_side="left",
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials], special_tokens=True)
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rms_norm_eps=1e-5,
        **_TEXT,
    )
    config = SmolVLMConfig(
        vision_config=SmolVLMVisionConfig(**_vision(SMOLVLM_TILE, SMOLVLM_PATCH)),
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=SMOLVLM_SCALE,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = _finish(SmolVLMForConditionalGeneration(config), tokenizer, seed)
    image_processor = SmolVLMImageProcessor(
        size={"longest_edge": SMOLVLM_TILE},
        max_image_size={"longest_edge": SMOLVLM_TILE},
        do_image_splitting=False,
    )
    video_processor = SmolVLMVideoProcessor(
        size={"longest_edge": SMOLVLM_TILE},
        max_image_size={"longest_edge": SMOLVLM_TILE},
    )
    processor = SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_len=SMOLVLM_IMAGE_SEQ_LEN,
        chat_template=SMOLVLM_CHAT_TEMPLATE,
    )
    return model, processor


FAMILIES: dict[str, TinyVLM] = {
    "idefics3": TinyVLM(
        name="idefics3",
        build=build_idefics3,
        image_placeholder="<image>",
        visual_tokens=("<image>",),
        marker_tokens=("<fake_token_around_image>", "<global-img>", *_ROW_COL),
        notes=(
            "Per tile: <fake_token_around_image><row_i_col_j> + 4 <image>; a '\\n' (plain text) after each row "
            "of tiles and before the global tile; then <fake_token_around_image><global-img> + 4 <image> + "
            "<fake_token_around_image>. 20 <image> tokens per image (2x2 tiles + global). pixel_values is 5-D "
            "(batch, max images*tiles, 3, 32, 32), padded with all-zero tiles that the model drops; "
            "pixel_attention_mask marks real pixels. The Llama-3-style tokenizer adds <|begin_of_text|> and the "
            "chat template starts with it too, so a rendered prompt tokenized by the processor starts with TWO "
            "BOS tokens (as with the real checkpoint). _get_num_multimodal_tokens counts the whole replacement "
            "(markers, newlines and <image> tokens: 34 per image), not just <image>. config.image_token_id."
        ),
        extra={"num_multimodal_tokens": "replacement"},
    ),
    "smolvlm": TinyVLM(
        name="smolvlm",
        build=build_smolvlm,
        image_placeholder="<image>",
        visual_tokens=("<image>",),
        marker_tokens=("<fake_token_around_image>", "<global-img>"),
        video=True,
        notes=(
            "Image splitting off: every image and video frame is one 32 px tile = "
            "<fake_token_around_image><global-img> + 16 <image> + <fake_token_around_image>. A video becomes "
            "'You are provided the following series of <n> frames from a <H:MM:SS> [H:MM:SS] video.\\n' then per "
            "frame '\\nFrame from MM:SS:' + the tile run, then '\\n\\n' (all plain text besides the tile tokens); "
            "video frames also arrive as pixel_values (no separate video key). A batch needs images as a nested "
            "list (one list per prompt). Needs the num2words package (SmolVLMProcessor requires it). The tokenizer "
            "is built as GPT2Tokenizer but transformers reloads any smolvlm tokenizer as TokenizersBackend (same "
            "tokens). No _get_num_multimodal_tokens. config.image_token_id."
        ),
        extra={"nested_images": True},
    ),
}
