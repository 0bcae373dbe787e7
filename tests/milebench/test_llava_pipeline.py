"""MileBench inputs identical to the paper's pipeline (MileBench's dataset code + LLaVA's worker), checked against
independent references: pixels by PIL/NumPy, token ids by SentencePiece itself with ``tokenizer_image_token``'s rule,
placeholders and the stop rule by upstream's behaviour."""

import json
import logging
import re

import numpy as np
import pytest
import torch
from PIL import Image

from lmms_futuremask.milebench.data import load_docs
from lmms_futuremask.milebench.fake import write_fake_milebench
from lmms_futuremask.milebench.llava import (
    ChunkCodec,
    LlavaProtocol,
    expand2square,
    mean_colour,
    pil_image_processor,
    pixel_values,
    prompt_ids,
)
from lmms_futuremask.milebench.prompt import ProtocolSettings, full_prompt
from lmms_futuremask.runtime.errors import ERROR_MARKER
from lmms_futuremask.runtime.prompting import CONV_TEMPLATES
from lmms_futuremask.testing.llama_tokenizer import LAYOUTS, llama_tokenizer, train_sentencepiece

from ..helpers import texts

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


# -- pixels ----------------------------------------------------------------------------------------------------------


def reference_pixels(image, size, crop, mean=CLIP_MEAN, std=CLIP_STD):
    """LLaVA-1.5's image path in PIL and NumPy only: RGB, expand2square with the mean colour, PIL bicubic resize of
    the short side, centre crop, rescale by 1/255 (float64, then float32), normalise in float32; ``[3, H, W]``."""
    image = image.convert("RGB")
    width, height = image.size
    if width != height:
        side = max(width, height)
        square = Image.new("RGB", (side, side), tuple(int(x * 255) for x in mean))
        square.paste(image, ((side - width) // 2, (side - height) // 2))
        image = square
    width, height = image.size
    if width <= height:
        new_width, new_height = size, int(size * height / width)
    else:
        new_width, new_height = int(size * width / height), size
    image = image.resize((new_width, new_height), resample=Image.BICUBIC)
    array = np.array(image)
    top, left = (new_height - crop) // 2, (new_width - crop) // 2
    array = array[top : top + crop, left : left + crop]
    array = (array.astype(np.float64) * (1 / 255)).astype(np.float32)
    array = (array - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def images_of_every_kind():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (37, 61, 3), dtype=np.uint8)
    return {
        "wide_rgb": Image.fromarray(noise),
        "tall_rgb": Image.fromarray(np.ascontiguousarray(noise.transpose(1, 0, 2))),
        "square_rgb": Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)),
        "grayscale": Image.fromarray(rng.integers(0, 256, (29, 50), dtype=np.uint8), mode="L"),
        "rgba": Image.fromarray(rng.integers(0, 256, (45, 33, 4), dtype=np.uint8), mode="RGBA"),
        "palette": Image.fromarray(noise).convert("P", palette=Image.ADAPTIVE, colors=16),
    }


@pytest.mark.parametrize("size", [336, 56])
def test_pixels_are_bit_identical_to_llavas_pil_numpy_path(size):
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(  # llava-hf's settings (336) and the tiny checkpoint's (56)
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    pil = pil_image_processor(processor)
    assert type(pil).__name__ == "CLIPImageProcessorPil"
    differs_on_default_path = False
    for name, image in images_of_every_kind().items():
        square = expand2square(image.convert("RGB"), mean_colour(pil))
        ours = pixel_values([square], pil, pad=False)[0]
        expected = reference_pixels(image, size, size)
        assert ours.dtype == torch.float32 and torch.equal(ours, expected), name
        default = processor(images=[square], return_tensors="pt")["pixel_values"][0]
        differs_on_default_path |= not torch.equal(default, expected)
    assert differs_on_default_path, "the guard: transformers 5's default path must differ, or this test proves nothing"


def test_the_protocol_sample_carries_the_reference_pixels(tmp_path, tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    data = write_fake_milebench(tmp_path / "mb", samples_per_task=1)
    doc = load_docs("CLEVR-Change", data)[0]
    images = images_of_every_kind()
    for index, name in enumerate(("wide_rgb", "palette")):
        images[name].save(data / "CLEVR-Change" / "images" / doc["images"][index])
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    protocol = LlavaProtocol.for_model(model, processor, ProtocolSettings(4096, 16), "llava_llama_2")
    sample = protocol.sample(load_docs("CLEVR-Change", data)[0], "doc")
    expected = torch.stack([reference_pixels(images[n], 56, 56) for n in ("wide_rgb", "palette")])
    assert torch.equal(sample.pixel_values, expected)


# -- token ids -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentencepiece_model(tmp_path_factory):
    import sentencepiece as spm

    path = train_sentencepiece(tmp_path_factory.mktemp("sp"))
    return spm.SentencePieceProcessor(model_file=str(path)), path


def slow_decode(sp, ids):
    """The slow LLaMA tokenizer's plain-text decoding (transformers 4.37 ``convert_tokens_to_string``): the first
    piece loses its "▁", then SentencePiece itself decodes the pieces."""
    pieces = [sp.id_to_piece(i) for i in ids]
    if pieces and pieces[0].startswith("▁"):
        pieces[0] = pieces[0][1:]
    return sp.decode_pieces(pieces) if pieces else ""


def upstream_ids(doc, sp, max_context_len, tokens_per_image, image_token_id):
    """MileBench's dataset item, LLaVA's worker and ``tokenizer_image_token``, transcribed, with SentencePiece as the
    tokenizer; each image position expanded to ``tokens_per_image`` copies of ``image_token_id``."""
    instruction, context = doc["instruction"], doc["context"]
    if doc["has_choices"]:
        context += "\nChoice list: \n" + "\n".join(
            (f"{chr(65 + i)}. " if doc["milebench_task"] != "GPR1200" else "") + c for i, c in enumerate(doc["choices"])
        )
        context += "\nYour answer is: "
    for i in range(len(doc["images"])):
        context = context.replace(f"{{image#{i + 1}}}", "<ImageHere>").replace(f"{{table#{i + 1}}}", "<ImageHere>")
    raw = list(doc["images"])
    length = max_context_len - len(sp.encode(instruction))
    past, chunks, images, image_start = 0, [], [], False
    for fragment in context.split("<ImageHere>")[::-1]:
        ids = sp.encode(fragment)
        if len(ids) + past > length:
            if not chunks:
                chunks.insert(0, ids[-length:])
            break
        image_start = False
        chunks.insert(0, ids)
        past += len(ids)
        if tokens_per_image + past > length:
            break
        if raw:
            image_start = True
            images.insert(0, raw.pop(-1))
            past += tokens_per_image
    text = "".join(slow_decode(sp, c) + "<ImageHere>" for c in chunks[:-1]) + slow_decode(sp, chunks[-1])
    question = instruction + "\n" + (("<ImageHere>" if image_start else "") + text)
    question = question.replace("<ImageHere><ImageHere>", "<ImageHere>\n<ImageHere>\n").replace(
        "<ImageHere>", "<image>"
    )
    prompt = CONV_TEMPLATES["llava_llama_2"](question)
    prompt_chunks = [[1, *sp.encode(chunk)] for chunk in prompt.split("<image>")]
    ids = [prompt_chunks[0][0]]
    for index, chunk in enumerate(prompt_chunks):
        if index:
            ids += [image_token_id] * tokens_per_image
        ids += chunk[1:]
    return ids, images


def shape_docs(data):
    """Nine task shapes: frames, CLEVR-Change, slides, GPR1200, MMCoQA, steps, needles, text over the budget."""
    docs = [load_docs(task, data)[i] for task, i in [("ActionSequence", 2), ("CLEVR-Change", 0), ("SlideVQA", 1)]]
    docs += [load_docs("GPR1200", data)[0], load_docs("MMCoQA", data)[0], load_docs("StateChange", data)[1]]
    docs += [load_docs("TextNeedleInAHaystack", data)[0], load_docs("ImageNeedleInAHaystack", data)[1]]
    spaced = dict(docs[0], context=" Context: {image#1} Question: {image#2}  what  is next? ", has_choices=False)
    spaced["images"] = docs[0]["images"][:2]
    long_text = dict(spaced, context="word " * 300 + "{image#1} {image#2} end")
    return [*docs, spaced, long_text]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("budget", [4096, 120, 60])
def test_prompt_ids_follow_tokenizer_image_token_in_both_tokenizer_layouts(
    tmp_path, sentencepiece_model, layout, budget
):
    from transformers import CLIPImageProcessor

    from lmms_futuremask.milebench.prompt import render

    sp, path = sentencepiece_model
    tokenizer = llama_tokenizer(path, layout)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    data = write_fake_milebench(tmp_path / "mb", samples_per_task=3)
    codec = ChunkCodec(tokenizer)
    assert codec.sentencepiece
    pixels = pil_image_processor(CLIPImageProcessor(size={"shortest_edge": 14}, crop_size={"height": 14, "width": 14}))
    protocol = LlavaProtocol(codec, pixels, ProtocolSettings(budget, 7, pad_square=True), "llava_llama_2", image_id, 1)
    for doc in shape_docs(data):
        expected_ids, expected_images = upstream_ids(doc, sp, budget, 7, image_id)
        sample = protocol.sample(doc, "doc")
        assert sample.input_ids == expected_ids, (doc["milebench_task"], doc["context"][:40])
        kept = render(doc, codec.encode, codec.decode, budget, [7] * len(doc["images"])).images
        assert [doc["images"][i] for i in kept] == expected_images and len(sample.images) == len(kept)
        assert sample.pixel_values is None or sample.pixel_values.shape == (len(kept), 3, 14, 14)


def test_the_two_tokenizer_layouts_really_differ_on_a_whole_prompt(sentencepiece_model):
    """Guard for the test above: encoding a prompt whole gives ``tokenizer_image_token``'s ids in the ``Prepend``
    layout only; the ``Metaspace`` layout loses the "▁" after each image. Chunk-wise ids are right in both."""
    sp, path = sentencepiece_model
    prompt = "USER: <image>\nQuestion: what is it? <image> Context: two ASSISTANT:"
    expected = [1]
    for index, chunk in enumerate(prompt.split("<image>")):
        expected += ([-200] if index else []) + sp.encode(chunk)  # tokenizer_image_token with one slot per image
    whole = {}
    for layout in LAYOUTS:
        tokenizer = llama_tokenizer(path, layout)
        image_id = tokenizer.convert_tokens_to_ids("<image>")
        ids = [-200 if i == image_id else i for i in tokenizer(prompt).input_ids]
        whole[layout] = ids == expected
        chunked = prompt_ids(prompt, ChunkCodec(tokenizer), 1, image_id, 1)
        assert [-200 if i == image_id else i for i in chunked] == expected, layout
    assert whole == {"prepend": True, "metaspace": False}


def test_truncated_fragments_decode_as_sentencepiece_decodes_them(sentencepiece_model):
    """Every left cut of a text with double spaces, digits and characters only byte pieces spell (cut inside their
    bytes too) decodes as the slow tokenizer did, and the reference is not trivially met: Python's own UTF-8
    replacement and a plain one-space strip each differ from it on some cut."""
    sp, path = sentencepiece_model
    codec = ChunkCodec(llama_tokenizer(path, "metaspace"))
    text = "ab 你好  end café 😀x  what  is 1998?"
    ids = codec.encode(text)
    assert ids == sp.encode(text)
    cuts = [ids[k:] for k in range(len(ids))]
    assert [codec.decode(cut) for cut in cuts] == [slow_decode(sp, cut) for cut in cuts]

    def naive(cut):
        data = "".join(sp.id_to_piece(i) for i in cut).replace("▁", " ")
        data = re.sub(r"<0x([0-9A-F]{2})>", lambda m: chr(int(m.group(1), 16)), data).encode("latin-1", "ignore")
        return data.decode("utf-8", errors="replace").removeprefix(" ")

    assert any(naive(cut) != slow_decode(sp, cut) for cut in cuts)


# -- the stop rule ---------------------------------------------------------------------------------------------------


def test_generation_stops_at_bos_under_the_milebench_protocol(tmp_path, tiny_model_dir):
    from lmms_eval.api.instance import Instance
    from lmms_eval.models import get_model

    data = write_fake_milebench(tmp_path / "mb", samples_per_task=1)
    model = get_model("llava_futuremask").create_from_arg_string(f"pretrained={tiny_model_dir},device=cpu", {})
    docs = load_docs("TQA", data)
    model.task_dict = {"milebench_tqa": {"test": docs}, "toy": {"test": [{"q": "What colour?"}]}}
    bos = model.tokenizer.bos_token_id
    steps = []

    def force_bos(module, args, output):
        steps.append(1)
        output[..., bos] += 1e4  # the model now always emits <s>

    handle = model.model.lm_head.register_forward_hook(force_bos)
    gen = {"max_new_tokens": 5, "min_new_tokens": 1, "until": []}

    def request(task, prompt, visual):
        args = (prompt, dict(gen), visual, 0, task, "test")
        return Instance("generate_until", args, idx=0, metadata={"task": task, "doc_id": 0, "repeats": 1})

    try:
        (answer,) = texts(model.generate_until([request("milebench_tqa", full_prompt(docs[0]), None)]))
        assert len(steps) == 1 and answer == ""  # <s> ended the answer at once, min_new_tokens=1 notwithstanding
        steps.clear()
        texts(model.generate_until([request("toy", "What colour?", lambda doc: [])]))
        assert len(steps) == 5  # other tasks do not stop at <s>
    finally:
        handle.remove()


# -- placeholders through the adapter ----------------------------------------------------------------------------------


def test_placeholder_quirks_are_answered_counted_and_only_the_crash_refused(tmp_path, tiny_model_dir, caplog):
    from lmms_eval.api.instance import Instance
    from lmms_eval.models import get_model

    from lmms_futuremask.milebench.task_hooks import process_results

    data = write_fake_milebench(tmp_path / "mb", samples_per_task=4)
    docs = load_docs("TQA", data)
    docs[0] = dict(docs[0], context="{image#1} Question: what?")  # more images than slots
    docs[1] = dict(docs[1], context=docs[1]["context"] + " {image#9}")  # a number beyond the images
    docs[2] = dict(docs[2], context="{image#1} and {image#1} again", images=docs[2]["images"][:1])  # a slot used twice
    cache = tmp_path / "cache"
    model = get_model("llava_futuremask").create_from_arg_string(
        f"pretrained={tiny_model_dir},device=cpu,answer_cache={cache}", {}
    )
    model.task_dict = {"milebench_tqa": {"test": docs}}

    def requests():
        args = [
            (full_prompt(docs[i]), {"max_new_tokens": 3, "until": []}, None, i, "milebench_tqa", "test")
            for i in range(4)
        ]
        return [
            Instance("generate_until", a, idx=0, metadata={"task": a[4], "doc_id": a[3], "repeats": 1}) for a in args
        ]

    with caplog.at_level(logging.WARNING, logger="lmms_futuremask"):
        answers = texts(model.generate_until(requests()))
    failed = [
        process_results(doc, [answer])["failed_samples"]["failed"] for doc, answer in zip(docs, answers, strict=False)
    ]
    assert failed == [False, False, True, False]
    assert answers[2].startswith(ERROR_MARKER) and "upstream's LLaVA crashes here" in answers[2]
    assert "1 sample(s): more images than placeholders" in caplog.text
    assert "1 sample(s): a placeholder numbered beyond the images" in caplog.text
    assert json.dumps(answers)  # plain strings
    caplog.clear()  # a resumed pass: three answers from the cache, which still count their quirks
    with caplog.at_level(logging.INFO, logger="lmms_futuremask"):
        assert texts(model.generate_until(requests())) == answers
    assert ": 3 reused, " in caplog.text  # the cache's counts over both passes
    assert "1 sample(s): more images than placeholders" in caplog.text
    assert "1 sample(s): a placeholder numbered beyond the images" in caplog.text
