"""Tiny Phi-4-multimodal checkpoint: ``Phi4MultimodalForCausalLM`` (SigLIP-style vision tower, HD crops, audio
conformer; image and audio features are embedded *inside* the decoder module ``Phi4MultimodalModel`` from
``input_ids``) with the real ``Phi4MultimodalProcessor``, ``Phi4MultimodalImageProcessor``,
``Phi4MultimodalFeatureExtractor`` and ``GPT2Tokenizer``. It is not in the ``AutoModelForImageTextToText`` mapping:
``AutoModelForCausalLM`` (or ``AutoModelForMultimodalLM``) loads it.

The image processor hard-codes a 16x16 merged grid per crop (``num_img_tokens = 256 + 1 + ... + 16``), so the vision
tower must see 32x32 patches: 64 px crops of 2 px patches. A 64 px image is one HD crop plus the global view:
global 16 x (16 + 1 row separator) + 1 separator + crop 16 x (16 + 1) = 545 ``<|image|>`` tokens, all of them
visual (the separators are learned feature vectors placed at ``<|image|>`` positions, not text tokens).
"""

from __future__ import annotations

import torch

from . import TinyVLM
from ._common import set_generation_ids, spread_init, train_bpe_tokenizer, wrap_tokenizer

CROP_SIZE = 64
PATCH_SIZE = 2
MAX_CROPS = 4
#: <|image|> tokens of a square image of up to CROP_SIZE px (one HD crop + global view).
TOKENS_PER_IMAGE = 16 * 17 + 1 + 16 * 17

_SPECIALS = ["<|endoftext|>", "<|image|>", "<|audio|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

#: microsoft/Phi-4-multimodal-instruct's processor chat template, reduced (no tools): ``<|role|>content<|end|>`` turns,
#: images written ``<|image|>`` and audio ``<|audio|>`` where they stand, ``<|assistant|>`` as generation prompt.
PHI4_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<|image|>' }}"
    "{% elif content['type'] == 'audio' %}{{ '<|audio|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def build_tokenizer():
    """The real ``GPT2Tokenizer`` class (Phi-4's) over a byte-level vocab trained offline; no BOS is added."""
    from transformers import GPT2Tokenizer

    return wrap_tokenizer(
        GPT2Tokenizer,
        train_bpe_tokenizer(_SPECIALS, bos=None, add_bos=False),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image|>", "audio_token": "<|audio|>"},
        model_max_length=131072,
        padding_side="left",
    )


def build_phi4_multimodal(seed: int = 0):
    """Phi-4-multimodal (images embedded inside the decoder module, HD crops): ``(model, processor)``."""
    from transformers import (
        Phi4MultimodalAudioConfig,
        Phi4MultimodalConfig,
        Phi4MultimodalFeatureExtractor,
        Phi4MultimodalForCausalLM,
        Phi4MultimodalImageProcessor,
        Phi4MultimodalProcessor,
        Phi4MultimodalVisionConfig,
    )

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids("<|image|>")
    audio_token_id = tokenizer.convert_tokens_to_ids("<|audio|>")
    vision = Phi4MultimodalVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=CROP_SIZE,
        patch_size=PATCH_SIZE,
        crop_size=CROP_SIZE,
        image_token_id=image_token_id,
        feature_layer=-2,
    )
    audio = Phi4MultimodalAudioConfig(
        hidden_size=32,
        intermediate_size=64,
        num_blocks=1,
        num_attention_heads=2,
        ext_pw_out_channel=32,
        depthwise_separable_out_channel=32,
        nemo_conv_channels=32,
        audio_token_id=audio_token_id,
    )
    config = Phi4MultimodalConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.pad_token_id,
        vision_config=vision,
        audio_config=audio,
        tie_word_embeddings=False,
    )
    model = Phi4MultimodalForCausalLM(config)
    spread_init(model, seed, skip=("img_processor", "audio_embed"))
    with torch.no_grad():
        # Phi-4 does not scale its token embeddings; without this the 500+ projected image features per image
        # drown the text tokens and greedy decoding of the random model falls into a loop at once.
        model.get_input_embeddings().weight.mul_(8.0)
    set_generation_ids(model, tokenizer)
    image_processor = Phi4MultimodalImageProcessor(
        size={"height": CROP_SIZE, "width": CROP_SIZE}, patch_size=PATCH_SIZE, dynamic_hd=MAX_CROPS
    )
    processor = Phi4MultimodalProcessor(
        image_processor=image_processor,
        audio_processor=Phi4MultimodalFeatureExtractor(),
        tokenizer=tokenizer,
        chat_template=PHI4_CHAT_TEMPLATE,
    )
    return model.eval(), processor


FAMILIES: dict[str, TinyVLM] = {
    "phi4_multimodal": TinyVLM(
        name="phi4_multimodal",
        build=build_phi4_multimodal,
        image_placeholder="<|image|>",
        visual_tokens=("<|image|>",),
        marker_tokens=(),
        non_causal_stock_mask=False,
        layer_kinds=("full",),
        video=False,
        notes=(
            "Image token id lives in config.vision_config.image_token_id (audio: config.audio_config.audio_token_id); "
            "there is no top-level image_token_id. Phi4MultimodalForCausalLM is not in AutoModelForImageTextToText: "
            "load with AutoModelForCausalLM / AutoModelForMultimodalLM. The decoder module (Phi4MultimodalModel, "
            "= get_decoder()) takes input_ids and image_pixel_values / image_sizes / image_attention_mask and "
            "scatters the image features itself (embed_tokens_extend), then builds the causal mask; image positions "
            "are input_ids == <|image|>. The image processor hard-codes 256 + 16 tokens per view, so a 64 px image "
            "gives 545 visual tokens (no way to make it smaller). Text decoder: full attention only. "
            "The text config is the top-level config: assigning it a string _attn_implementation also switches "
            "vision_config / audio_config. "
            "AutoProcessor.from_pretrained drops the processor's chat_template (its __init__ has no such argument); "
            "processor.tokenizer.chat_template keeps it. Token embeddings are scaled x8 after init (see build)."
        ),
        extra={"tokens_per_image": TOKENS_PER_IMAGE, "image_size": CROP_SIZE},
    ),
}
