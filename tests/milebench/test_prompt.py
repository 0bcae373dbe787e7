"""Rendered MileBench prompts against expectations derived by hand from the official rules."""

import pytest

from lmms_futuremask.milebench.data import MileBenchDataError, load_docs, open_image
from lmms_futuremask.milebench.fake import write_fake_milebench
from lmms_futuremask.milebench.llava import expand2square
from lmms_futuremask.milebench.prompt import ProtocolSettings, full_prompt, render, truncate


class WordTokenizer:
    """One token per space-separated word (spaces kept on the left of a word), so budgets are easy to count."""

    def __call__(self, text, add_special_tokens=False):
        tokens, word = [], ""
        for char in text:
            if char == " " and word.strip():
                tokens.append(word)
                word = ""
            word += char
        if word:
            tokens.append(word)

        class Out:
            input_ids = tokens

        return Out()

    def decode(self, ids):
        return "".join(ids)


def doc(**overrides):
    base = {
        "milebench_task": "ActionPrediction",
        "sample_id": "7",
        "question_type": "multi-choice",
        "instruction": "Pick one. ",
        "context": "{image#1} then Question: what next?",
        "has_choices": True,
        "choices": ["run", "walk {image#2}"],
        "images": ["a.png", "b.png"],
        "image_dir": "/nowhere",
        "answer": "run",
    }
    return {**base, **overrides}


BIG = ProtocolSettings(max_context_len=10_000, tokens_per_image=5)
WORDS = WordTokenizer()


def encode(text):
    return WORDS(text).input_ids


def render_words(d, settings, notes=None):
    """``(text, kept images)`` of the protocol with the word tokenizer; the sample's notes go to ``notes``."""
    rendered = render(d, encode, WORDS.decode, settings.max_context_len, [settings.tokens_per_image] * len(d["images"]))
    if notes is not None:
        notes.extend(rendered.notes)
    return rendered.text, rendered.images


def truncate_words(instruction, context, n_images, max_context_len, tokens_per_image):
    costs = [tokens_per_image] * n_images
    return truncate(instruction, context, costs, encode, WORDS.decode, max_context_len, tokens_per_image)


def test_choice_block_is_appended_before_placeholders_are_replaced():
    text, kept = render_words(doc(), BIG)
    assert text == (
        "Pick one. \n<image> then Question: what next?\nChoice list: \nA. run\nB. walk <image>\nYour answer is: "
    )
    assert kept == [0, 1]
    assert full_prompt(doc()) == text


def test_gpr1200_options_have_no_letters():
    text, _ = render_words(doc(milebench_task="GPR1200", choices=["x", "y {image#2}"]), BIG)
    assert text.endswith("Choice list: \nx\ny <image>\nYour answer is: ")


def test_tables_share_the_image_index_space():
    d = doc(context="T: {table#1} C: {image#2}", has_choices=False, choices=[], images=["t.png", "c.png"])
    text, kept = render_words(d, BIG)
    assert text == "Pick one. \nT: <image> C: <image>" and kept == [0, 1]


def test_adjacent_images_get_a_newline_after_each():
    d = doc(context="{image#1}{image#2}Difference:", has_choices=False, choices=[])
    text, kept = render_words(d, BIG)
    assert text == "Pick one. \n<image>\n<image>\nDifference:" and kept == [0, 1]


def test_truncation_keeps_the_question_end_and_the_rightmost_images():
    # Fragments right to left: " end" (1 token), " b1 b2" (2), " a1 a2 a3" (3), "" (0). Images cost 4 each.
    context = "<ImageHere> a1 a2 a3<ImageHere> b1 b2<ImageHere> end"
    text, kept = truncate_words("I", context, 3, max_context_len=1 + 11, tokens_per_image=4)
    # budget 11: " end" (1) + image 2 (4) + " b1 b2" (2) + image 1 (4) = 11; " a1 a2 a3" does not fit.
    assert kept == [1, 2]
    assert text == "<ImageHere> b1 b2<ImageHere> end"


def test_truncation_left_truncates_only_the_rightmost_fragment():
    text, kept = truncate_words("I", "<ImageHere> w1 w2 w3 w4 w5", 1, max_context_len=1 + 3, tokens_per_image=4)
    assert text == " w3 w4 w5" and kept == []


def test_placeholders_follow_upstream_where_it_answers_and_refuse_where_it_crashes():
    """MileBench's dataset code pops images from the end of the list after each fragment, right to left."""
    notes = []
    # More images than placeholders: one extra image goes first, any further ones are dropped (images 0 and 1 here).
    d = doc(context="{image#1} then Question: what next?", choices=["run", "walk"], images=["a", "b", "c", "d"])
    text, kept = render_words(d, BIG, notes)
    assert text.startswith("Pick one. \n<image>\n<image>\n then") and kept == [2, 3]  # with the CLEVR newline fix
    assert notes == ["more images than placeholders (upstream: one extra image placed first, the rest dropped)"]
    # A placeholder numbered beyond the images stays as text, and the sample is answered.
    notes.clear()
    text, kept = render_words(
        doc(context="{image#1} and {image#3} Question?", choices=["a", "b {image#2}"]), BIG, notes
    )
    assert "{image#3}" in text and text.count("<image>") == 2 and kept == [0, 1]
    assert notes == ["a placeholder numbered beyond the images (upstream: left in the text as is)"]
    # A placeholder used twice leaves a slot without an image: upstream's LLaVA crashes, we refuse naming the sample.
    with pytest.raises(MileBenchDataError, match="ActionPrediction sample 7: 3 image slot\\(s\\) but 2 image"):
        render_words(doc(context="{image#1} {image#1}"), BIG)
    # ... unless truncation keeps only as many slots as images, in which case upstream answers too.
    # Budget 24: fragments "\nYour answer is: " (4 tokens) + image (5) + " y...b " (6) + image (5) + " x " (2) = 22;
    # the next image would not fit (27 > 24), so the leftmost slot is never reached.
    small = ProtocolSettings(max_context_len=len(encode("Pick one. ")) + 24, tokens_per_image=5)
    text, kept = render_words(doc(context="{image#1} x {image#1} y", choices=["a", "b {image#2}"]), small)
    assert text.count("<image>") == 2 and kept == [0, 1] and text.startswith("Pick one. \n x <image>")


def test_pad_to_square_centres_on_the_fill_colour():
    from PIL import Image

    image = Image.new("RGB", (4, 2), (255, 0, 0))
    square = expand2square(image, (122, 116, 104))
    assert square.size == (4, 4)
    assert square.getpixel((0, 0)) == (122, 116, 104) and square.getpixel((0, 1)) == (255, 0, 0)
    assert square.getpixel((3, 2)) == (255, 0, 0) and square.getpixel((3, 3)) == (122, 116, 104)


def test_fake_milebench_round_trips_through_the_loader(tmp_path):
    root = write_fake_milebench(tmp_path, samples_per_task=3)
    from lmms_futuremask.milebench import TASKS

    for task in TASKS:
        docs = load_docs(task.folder, root)
        assert len(docs) == 3
        for d in docs:
            text, kept = render_words(d, ProtocolSettings(4096, 16))
            assert text.count("<image>") == len(kept)
            open_image(d, kept[-1] if kept else 0)
    needle = load_docs("TextNeedleInAHaystack", root)
    assert all(d["image_quantity_level"] == "Many" for d in needle)
    assert {d["question_type"] for t in TASKS for d in load_docs(t.folder, root)} == {"multi-choice", "open-ended"}


def test_bad_data_gives_errors_that_name_the_fix(tmp_path):
    with pytest.raises(
        MileBenchDataError, match=r"does not exist. Download it with `lmms-futuremask download-milebench"
    ):
        load_docs("TQA", tmp_path / "absent")
    root = write_fake_milebench(tmp_path / "mb", samples_per_task=1)
    (root / "TQA" / "TQA.json").unlink()
    with pytest.raises(MileBenchDataError, match=r"milebench_tqa: expected .*TQA.json, which is missing"):
        load_docs("TQA", root)
    (root / "ActionLocalization").rename(root / "action_localization")
    with pytest.raises(MileBenchDataError, match="older MileBench release"):
        load_docs("ActionLocalization", root)
    (root / "DocVQA" / "DocVQA.json").write_text("{not json")
    with pytest.raises(MileBenchDataError, match=r"DocVQA.json: not valid JSON"):
        load_docs("DocVQA", root)
    d = load_docs("OCR-VQA", root)[0]
    (root / "OCR-VQA" / "images" / d["images"][0]).write_bytes(b"not a png")
    with pytest.raises(MileBenchDataError, match=f"OCR-VQA sample {d['sample_id']}: cannot read image"):
        open_image(d, 0)
