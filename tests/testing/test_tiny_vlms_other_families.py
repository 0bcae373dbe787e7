"""Tiny random VLM checkpoints, second batch: Mistral 3, Gemma 3, PaliGemma, Aya Vision, Llama 4, Janus,
Phi-4-multimodal and Florence-2 (encoder-decoder). Offline; each family is built once per module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmms_futuremask.testing.vlms import tiny_vlm, write_tiny_vlm

torch.set_num_threads(1)

FAMILIES = ["mistral3", "gemma3", "paligemma", "aya_vision", "llama4", "janus", "phi4_multimodal", "florence2"]

#: family -> (image size in px, images in the main prompt, visual tokens per image, {marker token: count per image})
EXPECTED = {
    "mistral3": (64, 2, 16, {"[IMG_BREAK]": 3, "[IMG_END]": 1}),
    "gemma3": (64, 2, 16, {"<start_of_image>": 1, "<end_of_image>": 1}),
    "paligemma": (32, 2, 16, {}),
    "aya_vision": (64, 2, 16, {"<|START_OF_IMG|>": 1, "<|END_OF_IMG|>": 1}),
    "llama4": (
        64,
        2,
        20,
        {
            "<|image_start|>": 1,
            "<|image_end|>": 1,
            "<|image|>": 1,
            "<|tile_x_separator|>": 2,
            "<|tile_y_separator|>": 2,
        },
    ),
    "janus": (32, 2, 16, {"<begin_of_image>": 1, "<end_of_image>": 1}),
    "phi4_multimodal": (64, 2, 545, {}),
    "florence2": (32, 1, 17, {}),
}

#: families whose decoder has sliding / chunked layers: the config attribute holding the window / chunk
WINDOWED = {
    "mistral3": ("sliding_window", {"sliding"}),
    "gemma3": ("sliding_window", {"sliding", "full"}),
    "aya_vision": ("sliding_window", {"sliding", "full"}),
    "llama4": ("attention_chunk_size", {"chunked", "full"}),
}

_KIND = {"sliding_attention": "sliding", "full_attention": "full", "chunked_attention": "chunked"}


def _image(color, size):
    array = np.zeros((size, size, 3), dtype=np.uint8)
    array[...] = color
    array[: size // 2, : size // 2] = 255 - np.asarray(color, dtype=np.uint8)
    return _pil(array)


def _pil(array):
    from PIL import Image

    return Image.fromarray(array)


def _images(name, count):
    size = EXPECTED[name][0]
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    return [_image(colours[i], size) for i in range(count)]


def _messages(n_images: int, question: str = "Which image is brighter?"):
    content = [{"type": "text", "text": question}]
    for i in range(n_images):
        content.append({"type": "image"})
        content.append({"type": "text", "text": f"the {['first', 'second'][i]} image"})
    content.append({"type": "text", "text": "Answer with one word."})
    return [{"role": "user", "content": content}]


def _prompt(name, processor, n_images, question="Which image is brighter?"):
    if name == "paligemma":
        return "<image>" * n_images + question + " Answer with one word."
    if name == "florence2":
        return "<CAPTION>" if question.startswith("Which") else question
    return processor.apply_chat_template(_messages(n_images, question), add_generation_prompt=True, tokenize=False)


def _inputs(processor, prompts, images, **kwargs):
    # Llama 4's image processor returns bfloat16 pixels (as its bf16 checkpoints expect): cast floats to fp32.
    return processor(text=prompts, images=images, return_tensors="pt", **kwargs).to(torch.float32)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    name = request.param
    model, processor = tiny_vlm(name).build(0)
    return name, model, processor


@pytest.fixture(scope="module")
def main_inputs(family):
    name, _model, processor = family
    n_images = EXPECTED[name][1]
    return _inputs(processor, [_prompt(name, processor, n_images)], _images(name, n_images))


def _token_id(processor, token):
    token_id = processor.tokenizer.convert_tokens_to_ids(token)
    assert token_id is not None and token_id != processor.tokenizer.unk_token_id, token
    return token_id


def test_recipe_is_consistent(family):
    name, model, processor = family
    recipe = tiny_vlm(name)
    assert recipe.name == name
    config = model.config
    visual_id = _token_id(processor, recipe.visual_tokens[0])
    if name == "phi4_multimodal":
        assert config.vision_config.image_token_id == visual_id
        assert not hasattr(config, "image_token_id") or config.image_token_id is None
    else:
        assert config.image_token_id == visual_id
    text_config = config.get_text_config()
    assert text_config.vocab_size == len(processor.tokenizer)
    assert model.get_input_embeddings().num_embeddings == len(processor.tokenizer)
    generation = model.generation_config
    assert generation.pad_token_id == processor.tokenizer.pad_token_id
    assert generation.eos_token_id is not None and generation.bos_token_id == processor.tokenizer.bos_token_id
    if name in WINDOWED:
        kinds = {_KIND[kind] for kind in getattr(text_config, "layer_types", None) or ["sliding_attention"]}
        assert kinds == WINDOWED[name][1] == set(recipe.layer_kinds)
    assert config.is_encoder_decoder == (name == "florence2")


def test_two_image_prompt_tokens(family, main_inputs):
    name, model, processor = family
    recipe = tiny_vlm(name)
    _, n_images, per_image, markers = EXPECTED[name]
    ids = main_inputs["input_ids"][0]
    assert int((ids == _token_id(processor, recipe.visual_tokens[0])).sum()) == n_images * per_image
    for marker, count in markers.items():
        assert marker in recipe.marker_tokens
        assert int((ids == _token_id(processor, marker)).sum()) == n_images * count, marker
    if name in ("gemma3", "paligemma"):
        token_type_ids = main_inputs["token_type_ids"][0]
        if name == "gemma3":  # 1 exactly on the soft image tokens
            assert torch.equal(token_type_ids.bool(), ids == model.config.image_token_id)
        else:  # the whole prefix is 0
            assert not token_type_ids.any()
    if name in WINDOWED:
        attribute = WINDOWED[name][0]
        window = getattr(model.config.get_text_config(), attribute)
        assert window is not None and ids.shape[0] > window, (ids.shape[0], window)


def test_forward_and_generate(family, main_inputs):
    _name, model, _processor = family
    with torch.no_grad():
        logits = model(**main_inputs).logits
    assert torch.isfinite(logits).all()
    out = model.generate(**main_inputs, max_new_tokens=4, do_sample=False)
    if model.config.is_encoder_decoder:
        assert 2 <= out.shape[1] <= 5
    else:
        assert out.shape[1] == main_inputs["input_ids"].shape[1] + 4
        assert torch.equal(out[:, : main_inputs["input_ids"].shape[1]], main_inputs["input_ids"])


def test_left_padded_batch(family):
    name, model, processor = family
    n_images = EXPECTED[name][1]
    images = _images(name, n_images + 1)
    first = _prompt(name, processor, n_images)
    second = _prompt(name, processor, 1, "Describe the change between the two images. What happened next?")
    if name in ("gemma3", "paligemma"):
        batch_images = [images[:n_images], images[n_images:]]
    else:
        batch_images = images
    inputs = _inputs(processor, [first, second], batch_images, padding=True)
    mask = inputs["attention_mask"]
    assert mask.shape[0] == 2 and bool((mask[:, -1] == 1).all()) and bool((mask[:, 0] == 0).any())
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[0] == 2


def test_save_load_round_trip(family, main_inputs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

    name, model, processor = family
    write_tiny_vlm(name, tmp_path)
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded_processor) is type(processor)
    assert type(loaded_processor.image_processor) is type(processor.image_processor)
    auto = AutoModelForCausalLM if name == "phi4_multimodal" else AutoModelForImageTextToText
    loaded = auto.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    # Phi4MultimodalProcessor.__init__ has no explicit chat_template argument, so from_pretrained drops it from the
    # processor (transformers 5.x); the tokenizer still carries it.
    template = loaded_processor.chat_template or loaded_processor.tokenizer.chat_template
    assert template == processor.chat_template
    n_images = EXPECTED[name][1]
    inputs = _inputs(loaded_processor, [_prompt(name, processor, n_images)], _images(name, n_images))
    assert inputs.keys() == main_inputs.keys()
    for key in inputs:
        assert torch.equal(inputs[key], main_inputs[key]), key
    with torch.no_grad():
        expected = model(**main_inputs).logits
        got = loaded(**inputs).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_phi4_is_not_image_text_to_text():
    from transformers import AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    assert "phi4_multimodal" not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    for name in ("mistral3", "gemma3", "paligemma", "aya_vision", "llama4", "janus", "florence2"):
        assert name in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    assert AutoModelForImageTextToText is not None
