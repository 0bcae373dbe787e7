"""Tiny random VLM checkpoints (LLaVA, Qwen-VL, Idefics3/SmolVLM, InternVL lineages): each builds offline with its
real processor, expands two images into the visual-token count its processor reports, runs a forward pass, greedy
generation, a left-padded batch, a video where the family takes one, and round-trips through save and
Auto*.from_pretrained.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch

from lmms_futuremask.testing.vlms import FAMILY_MODULES, TinyVLM, build_tiny_vlm, tiny_vlm, write_tiny_vlm

FAMILIES = [
    "llava",
    "llava_next",
    "llava_onevision",
    "llava_next_video",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "idefics3",
    "smolvlm",
    "internvl",
]
VIDEO_FAMILIES = [name for name in FAMILIES if name not in ("llava", "llava_next", "idefics3")]

_BUILT: dict[str, tuple] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _needs(name: str) -> None:
    if name == "smolvlm":
        pytest.importorskip("num2words", reason="SmolVLMProcessor needs num2words")


def built(name: str):
    """``(model, processor)`` of a family at seed 0, built once per test session."""
    _needs(name)
    if name not in _BUILT:
        model, processor = build_tiny_vlm(name, seed=0)
        processor.tokenizer.padding_side = "left"
        _BUILT[name] = (model, processor)
    return _BUILT[name]


def image(seed: int, width: int, height: int):
    """A deterministic noise image (never all one value: Idefics3 drops all-zero tiles as padding)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def two_image_messages():
    return [
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": "Which image is brighter?"},
                {"type": "image"},
                {"type": "text", "text": "Answer with one word."},
            ],
        }
    ]


def one_image_messages():
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the image?"}]}]


def video_messages():
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happened next?"}]}]


def render(processor, messages) -> str:
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def token_ids(processor, tokens) -> list[int]:
    ids = [processor.tokenizer.convert_tokens_to_ids(t) for t in tokens]
    assert processor.tokenizer.unk_token_id not in ids or processor.tokenizer.unk_token_id is None
    return ids


def count_ids(input_ids: torch.Tensor, ids) -> int:
    return int(torch.isin(input_ids, torch.tensor(ids)).sum())


def model_inputs(batch) -> dict:
    return {k: v for k, v in batch.items() if k != "text_replacement_offsets"}


IMAGES = [(40, 32), (64, 48)]  # (width, height)


def test_registry_names_every_family_here():
    for name in FAMILIES:
        spec = tiny_vlm(name)
        assert isinstance(spec, TinyVLM) and spec.name == name
        assert FAMILY_MODULES[name] in ("llava", "qwen", "idefics", "internvl")
        assert spec.visual_tokens and spec.layer_kinds == ("full",)
        assert spec.video == (name in VIDEO_FAMILIES)


@pytest.mark.parametrize("name", FAMILIES)
def test_config_points_at_the_tokenizer(name):
    model, processor = built(name)
    spec = tiny_vlm(name)
    tokenizer = processor.tokenizer
    assert model.config.get_text_config().vocab_size == len(tokenizer)
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids(spec.visual_tokens[0])
    assert processor.image_token_id == model.config.image_token_id
    if getattr(model.config, "video_token_id", None) is not None:
        assert model.config.video_token_id == tokenizer.convert_tokens_to_ids(spec.visual_tokens[1])
    gen = model.generation_config
    assert gen.pad_token_id == tokenizer.pad_token_id is not None
    assert gen.eos_token_id == tokenizer.eos_token_id is not None
    assert gen.bos_token_id == tokenizer.bos_token_id
    for marker in spec.marker_tokens:
        assert tokenizer.convert_tokens_to_ids(marker) not in (None, tokenizer.unk_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 500_000, n_params


@pytest.mark.parametrize("name", FAMILIES)
def test_two_images_expand_forward_and_generate(name):
    model, processor = built(name)
    spec = tiny_vlm(name)
    prompt = render(processor, two_image_messages())
    if spec.image_placeholder is not None:
        assert prompt.count(spec.image_placeholder) == 2
    images = [image(1, *IMAGES[0]), image(2, *IMAGES[1])]
    batch = processor(text=[prompt], images=images, return_tensors="pt", return_text_replacement_offsets=True)

    # Visual positions in input_ids == what the processor's replacement strings say, image by image.
    replacements = [r["replacement"] for r in batch["text_replacement_offsets"][0] if r["type"] == "image"]
    assert len(replacements) == 2
    per_image = [sum(rep.count(tok) for tok in spec.visual_tokens) for rep in replacements]
    assert all(4 <= n <= 64 for n in per_image), per_image
    visual = token_ids(processor, spec.visual_tokens)
    assert count_ids(batch["input_ids"], visual) == sum(per_image)

    # ... and what `_get_num_multimodal_tokens` predicts from the image sizes alone, in its own units.
    if hasattr(processor, "_get_num_multimodal_tokens"):
        sizes = [(img.height, img.width) for img in images]
        predicted = list(processor._get_num_multimodal_tokens(image_sizes=sizes)["num_image_tokens"])
        unit = spec.extra["num_multimodal_tokens"]
        if unit == "visual":
            assert predicted == per_image
        elif unit == "visual+2":
            assert predicted == [n + 2 for n in per_image]
        else:  # the whole replacement, markers and newlines included
            tokenizer = processor.tokenizer
            assert predicted == [len(tokenizer(rep, add_special_tokens=False)["input_ids"]) for rep in replacements]

    inputs = model_inputs(batch)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == batch["input_ids"].shape
    assert torch.isfinite(logits).all()
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 4 or processor.tokenizer.eos_token_id in out[0].tolist()


@pytest.mark.parametrize("name", FAMILIES)
def test_left_padded_batch_with_different_image_counts(name):
    model, processor = built(name)
    spec = tiny_vlm(name)
    prompts = [render(processor, two_image_messages()), render(processor, one_image_messages())]
    first, second = [image(1, *IMAGES[0]), image(2, *IMAGES[1])], [image(3, 32, 32)]
    images = [first, second] if spec.extra.get("nested_images") else first + second
    batch = processor(text=prompts, images=images, padding=True, return_tensors="pt")
    mask = batch["attention_mask"]
    assert mask.shape[0] == 2 and mask[:, -1].all()
    assert not mask[1, 0] and mask[0].sum() > mask[1].sum()  # the shorter prompt is padded on the left
    visual = token_ids(processor, spec.visual_tokens)
    assert count_ids(batch["input_ids"][0], visual) > count_ids(batch["input_ids"][1], visual) > 0
    with torch.no_grad():
        logits = model(**batch).logits
    assert torch.isfinite(logits[mask.bool()]).all()
    out = model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert out.shape[0] == 2


@pytest.mark.parametrize("name", VIDEO_FAMILIES)
def test_video_input(name):
    model, processor = built(name)
    spec = tiny_vlm(name)
    frames = [image(10 + i, 40, 32) for i in range(4)]
    prompt = render(processor, video_messages())
    batch = processor(text=[prompt], videos=[frames], return_tensors="pt", return_text_replacement_offsets=True)
    replacements = [r["replacement"] for r in batch["text_replacement_offsets"][0] if r["type"] == "video"]
    assert len(replacements) == 1
    expected = sum(replacements[0].count(tok) for tok in spec.visual_tokens)
    assert expected >= 4
    assert count_ids(batch["input_ids"], token_ids(processor, spec.visual_tokens)) == expected
    inputs = model_inputs(batch)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[1] <= batch["input_ids"].shape[1] + 2


@pytest.mark.parametrize("name", FAMILIES)
def test_save_load_round_trip(name, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = built(name)
    write_tiny_vlm(name, tmp_path, seed=0)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    assert type(loaded_processor) is type(processor)
    assert type(loaded_processor.image_processor) is type(processor.image_processor)
    if hasattr(processor, "video_processor"):
        assert type(loaded_processor.video_processor) is type(processor.video_processor)

    prompt = render(processor, two_image_messages())
    assert render(loaded_processor, two_image_messages()) == prompt
    images = [image(1, *IMAGES[0]), image(2, *IMAGES[1])]
    batch = processor(text=[prompt], images=images, return_tensors="pt")
    loaded_batch = loaded_processor(text=[prompt], images=images, return_tensors="pt")
    assert batch.keys() == loaded_batch.keys()
    for key in batch:
        assert torch.equal(torch.as_tensor(batch[key]), torch.as_tensor(loaded_batch[key])), key
    with torch.no_grad():
        expected = model(**batch).logits
        got = loaded(**loaded_batch).logits
    assert torch.equal(expected, got)
    assert loaded.generation_config.eos_token_id == model.generation_config.eos_token_id
    assert loaded.generation_config.pad_token_id == model.generation_config.pad_token_id
