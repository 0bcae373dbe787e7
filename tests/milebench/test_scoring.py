"""The scorer against the official evaluator's rules, on hand-worked cases (MileBench evaluate.py)."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from lmms_futuremask.milebench import image_quantity_level, score_prediction
from lmms_futuremask.milebench.scoring import ScoringError, match_choice, normalize, option_key


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("3.5 cm.", "3.5 cm"),
        ("U.S.A.", "usa"),
        ("e.g. this", "eg this"),
        ("1.", "1"),
        (".5", ".5"),
        ("a.b.c", "abc"),
        ("1,000 dogs; cats.", "1000 dogs cats"),  # digit,digit anywhere: every listed mark is deleted
        ("x-ray/ct", "x ray ct"),  # marks touching no space become spaces
        ("Hello, World.", "hello world"),
        ("(A) cat", "a cat"),
        ("well - yes", "well  yes"),  # internal spaces are not collapsed
        ("don't", "don't"),
        ("'quoted'", "quoted"),
        ("Line\none\tTAB ", "line one tab"),
        ("a" + " ." * 40 + " z", "a" + " " * 32 + " ." * 8 + " z"),  # only the first 32 periods go
    ],
)
def test_normalize_follows_the_official_process(raw, expected):
    assert normalize(raw) == expected


def test_option_keys_past_z():
    assert [option_key(i) for i in (0, 25, 26, 51, 52, 53)] == ["A", "Z", "AA", "AZ", "BA", "BB"]


def options(*texts):
    return {option_key(i): normalize(t) for i, t in enumerate(texts)}


@pytest.mark.parametrize(
    "answer,opts,expected",
    [
        ("", options("red", "green", "blue"), "C"),  # empty answer maps to C
        ("b green", options("red", "green", "blue"), "B"),  # letter + option text
        ("banana cat", options("a dog", "cat"), "B"),  # no word boundaries: "b cat" is inside "banana cat"
        ("the cats", options("cat", "cats"), "A"),  # spaces removed, first alternative at the leftmost match
        ("opt27", options(*[f"opt{i}" for i in range(30)]), "C"),  # GPR1200-like: opt2 matches first
        ("aa opt26", options(*[f"opt{i}" for i in range(30)]), "A"),  # step 1 returns one character only
        ("it is 3.5", options("2.5", "3.5"), ""),  # escaped option never equals the matched text
        ("b 3.5", options("2.5", "3.5"), "B"),
        ("d", options("w", "x", "y", "z"), "D"),  # bare letter
        ("ab", options(*[f"o{i}" for i in range(30)]), "AB"),  # two-letter bare key
        ("the answer is b", options("red", "green", "blue", "pink"), "AB"),  # fallback keeps every key letter
        ("zzz", options("red", "green"), ""),
    ],
)
def test_match_choice_cascade(answer, opts, expected):
    assert match_choice(answer, opts) == expected


def test_multi_choice_scores_by_letter_of_the_gold_text():
    choices = ["The red one.", "The green one.", "The blue one."]
    assert score_prediction("ActionPrediction", "multi-choice", "B. The green one.", "The green one.", choices) == 1
    assert score_prediction("ActionPrediction", "multi-choice", "A", "The green one.", choices) == 0
    assert score_prediction("ActionPrediction", "multi-choice", "", "The blue one.", choices) == 1  # '' -> C
    with pytest.raises(ScoringError, match="not one of the normalized choices"):
        score_prediction("ActionPrediction", "multi-choice", "A", "purple", choices)


def test_routing_by_task_name_before_question_type():
    # Needle: the answer must be one whole token of the prediction, whatever the question type says.
    assert score_prediction("TextNeedleInAHaystack", "open-ended", "The password is 7421.", "7421") == 1
    assert score_prediction("milebench_text_needle_in_a_haystack", "open-ended", "password 74210", "7421") == 0
    assert score_prediction("ImageNeedleInAHaystack", "open-ended", "red apple", "red apple") == 0  # multi-word
    # MMCoQA: substring.
    assert score_prediction("MMCoQA", "open-ended", "It is in Parisian France", "paris") == 1
    assert score_prediction("milebench_mmcoqa", "multi-choice", "London", "Paris") == 0


def test_open_ended_is_rouge_l_f_of_rouge_1_0_1():
    # LCS "cat sat" of 3 distinct words each side: r = p = 2/3, f = 2pr / (p + r + 1e-8).
    expected = 2 * (2 / 3) * (2 / 3) / (4 / 3 + 1e-8)
    assert score_prediction("CLEVR-Change", "open-ended", "A cat sat.", "The cat sat.") == pytest.approx(expected)
    assert score_prediction("Spot-the-Diff", "open-ended", "", "the car moved") == 0.0
    assert score_prediction("Spot-the-Diff", "open-ended", "the car moved", "The car moved.") == pytest.approx(1.0)
    with pytest.raises(ScoringError, match="rouge"):
        score_prediction("IEdit", "open-ended", "." * 40, "a caption")  # periods past the 32nd survive


def test_unknown_question_type_is_an_error():
    with pytest.raises(ScoringError, match="question_type"):
        score_prediction("ALFRED", "yes-no", "yes", "yes")


def test_image_quantity_levels():
    assert [image_quantity_level(n) for n in (1, 5, 6, 31, 32, 109)] == [
        "Few",
        "Few",
        "Medium",
        "Medium",
        "Many",
        "Many",
    ]


def test_thread_safe_like_lmms_eval_scoring_threads():
    cases = [
        ("CLEVR-Change", "open-ended", f"the {w} block moved left", "the red block moved", None)
        for w in ["red", "blue", "green", "small", "large"] * 40
    ] + [("TQA", "multi-choice", f"{k}", "two", ["one", "two", "three"]) for k in "ABC" * 60]
    serial = [score_prediction(*c) for c in cases]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda c: score_prediction(*c), cases)) == serial
