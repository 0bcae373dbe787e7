"""MileBench's official per-sample scorer, re-implemented rule for rule (MileBench/MileBench ``evaluate.py``).

Every quirk is kept on purpose, because the point is to give the number the official evaluator gives:

* normalization deletes a listed punctuation mark when it touches a space anywhere in the text (or when the text has
  a digit-comma-digit), and otherwise turns it into a space; only the first 32 periods not followed by a digit are
  removed (``re.UNICODE`` passed where ``count`` goes); internal spaces are not collapsed;
* multiple choice is the official ``match_choice`` cascade: empty answer -> ``C``; "letter option" regex (first
  character of the match); option text with spaces removed; a bare 1-2 letter answer; else every letter of the
  answer that is an option key; keys past Z are AA..AZ, BA...;
* open-ended is Rouge-L F of the ``rouge==1.0.1`` package; an empty prediction scores 0;
* routing is by task name first (``NeedleInAHaystack``: the answer is one of the prediction's tokens; ``MMCoQA``: the
  answer is a substring), then by question type.

Pure functions, no shared state: safe in lmms-eval's scoring threads.
"""

from __future__ import annotations

import re

from .catalog import BY_TASK_NAME

_PUNCTUATION = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_OFFICIAL_PERIOD_COUNT = 32  # the official call passes re.UNICODE (== 32) as ``count``
_REGEX_SPECIALS = ["\\", ".", "^", "$", "*", "+", "?", "{", "}", "[", "]", "|", "(", ")"]

QUESTION_TYPES = ("multi-choice", "open-ended")


class ScoringError(ValueError):
    """An input on which the official evaluator itself would stop (it has no error handling)."""


def _process_punctuation(text: str) -> str:
    out = text
    strip_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in _PUNCTUATION:
        if strip_all or f"{mark} " in text or f" {mark}" in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_OFFICIAL_PERIOD_COUNT)


def normalize(text: str) -> str:
    """The official ``process()``: whitespace, punctuation and period rules, quotes stripped, lower-cased."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    text = _process_punctuation(text)
    return text.strip("'").strip('"').strip().lower()


def option_key(index: int) -> str:
    """Letter key of the ``index``-th option: A..Z, then AA..AZ, then BA... (unbounded, as upstream)."""
    if index < 26:
        return chr(65 + index)
    if index < 52:
        return "A" + chr(65 + index - 26)
    return "B" + chr(65 + index - 52)


def _as_pattern(text: str) -> str:
    text = normalize(text)
    for char in _REGEX_SPECIALS:
        if char in text:
            text = text.replace(char, "\\" + char)
    return text


def match_choice(answer: str, options: dict[str, str]) -> str:
    """The option key the official cascade extracts from a normalized answer (options: key -> normalized text)."""
    if answer == "":
        return "C"
    try:
        letter_and_text = "(" + "|".join(_as_pattern(f"{k} {v}") for k, v in options.items()) + ")"
        found = re.search(letter_and_text, answer, re.S)
        if found:
            return found.group(0)[0].upper()
        squeezed = {k: _as_pattern(v).replace(" ", "") for k, v in options.items()}
        found = re.search("(" + "|".join(squeezed.values()) + ")", answer.replace(" ", ""), re.S)
        if found:
            for key, pattern in squeezed.items():
                if found[0].strip() == pattern:
                    return key.upper()
        if len(answer) in (1, 2) and answer.upper() in options:
            return answer.upper()
    except Exception:  # noqa: BLE001 - upstream returns the answer itself on any error in the cascade
        return answer
    return "".join(c.upper() for c in answer if c.upper() in options)


def _rouge_l_f(prediction: str, answer: str) -> float:
    from rouge import Rouge

    try:
        return float(Rouge().get_scores(prediction, answer)[0]["rouge-l"]["f"])
    except (ValueError, RecursionError) as error:
        raise ScoringError(f"rouge==1.0.1 cannot score this prediction ({error})") from error


def _folder_of(task: str) -> str:
    return BY_TASK_NAME[task].folder if task in BY_TASK_NAME else task


def score_prediction(
    task: str,
    question_type: str,
    prediction: str,
    answer: str,
    choice_list: list[str] | None = None,
) -> float:
    """The official evaluator's score for one sample: 0/1 accuracy, or Rouge-L F for open-ended tasks.

    ``task`` is the official folder name (``"CLEVR-Change"``) or our task name (``"milebench_clevr_change"``).
    Raises :class:`ScoringError` on the inputs that make the official evaluator stop.
    """
    folder = _folder_of(task)
    gold = normalize(str(answer))
    pred = normalize(str(prediction))
    if "NeedleInAHaystack" in folder:
        return float(gold in pred.split())
    if "MMCoQA" in folder:
        return float(gold in pred)
    if question_type == "open-ended":
        if gold == "":
            raise ScoringError("the reference answer is empty after normalization")
        return 0.0 if pred == "" else _rouge_l_f(pred, gold)
    if question_type == "multi-choice":
        choices = [normalize(str(c)) for c in (choice_list or [])]
        if gold not in choices:
            raise ScoringError(f"the answer {gold!r} is not one of the normalized choices")
        options = {option_key(i): c for i, c in enumerate(choices)}
        return float(match_choice(pred, options) == option_key(choices.index(gold)))
    raise ScoringError(f"unknown question_type {question_type!r}; MileBench uses {', '.join(QUESTION_TYPES)}")


def image_quantity_level(n_images: int) -> str:
    """Few (< 6 images), Medium (6-31) or Many (> 31), from the sample's full image count."""
    if n_images < 6:
        return "Few"
    return "Many" if n_images > 31 else "Medium"
