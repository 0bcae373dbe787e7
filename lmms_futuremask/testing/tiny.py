"""A deterministic tiny random LLaVA checkpoint, built offline in seconds, for tests, demos and CI.

Same architecture family as ``llava-hf/llava-1.5-7b-hf`` (CLIP vision tower, 2-layer projector, Llama decoder,
``<image>`` expanded to one token per patch), shrunk: 56 px images give 16 visual tokens each.
"""

from __future__ import annotations

from pathlib import Path

import torch

IMAGE_SIZE = 56
PATCH_SIZE = 14
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2
#: The widths of the tiny vision tower and decoder (the benchmark's ``tiny`` architecture uses them too).
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
TINY_TEXT = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)

#: The llava-hf chat template (images first, then text), for users of ``processor.apply_chat_template``.
LLAVA_HF_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]

# Words of the prompts the tests, the sample task and MileBench use, so the tiny tokenizer splits them sensibly.
_CORPUS = """
USER: ASSISTANT: A chat between a curious human and an artificial intelligence assistant.
You are a helpful language and vision assistant. You are able to understand the visual content that the user
provides, and assist the user with a variety of tasks using natural language. [INST] <<SYS>> <</SYS>> [/INST]
What colour is the image? Which image is brighter? Answer with one word. Answer with the option's letter.
Choice list: Your answer is: Question: Context: red green blue yellow black white first second third left right
A. B. C. D. E. F. yes no true false zero one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9
The quick brown fox jumps over the lazy dog. Describe the change between the two images. What happened next?
Given the following images, answer the question. image table frame video object person action scene state
"""


def build_tokenizer():
    """A byte-level BPE tokenizer trained on a built-in corpus, with Llama-style ``<s>`` and an ``<image>`` token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS.split("\n") * 4, trainer=trainer)
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        model_max_length=4096,
    )


def build_model(tokenizer, seed: int = 0):
    """A random LlavaForConditionalGeneration whose shapes follow LLaVA-1.5, scaled down."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        **TINY_VISION,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        **TINY_TEXT,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=TOKENS_PER_IMAGE,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    # A larger init than the default 0.02 spreads the logits, so greedy decoding does not tie or stall.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "vision_tower" not in name:
                param.normal_(0.0, 0.15)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model.eval()


def build_processor(tokenizer):
    """The LlavaProcessor of the tiny checkpoint: CLIP preprocessing at 56 px, ``<image>`` expanded to 16 tokens."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_HF_CHAT_TEMPLATE,
    )


def write_tiny_model(directory: str | Path, seed: int = 0) -> Path:
    """Write config, random weights, tokenizer, image processor, processor and chat template to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=seed)
    model.save_pretrained(directory)
    build_processor(tokenizer).save_pretrained(directory)
    return directory
