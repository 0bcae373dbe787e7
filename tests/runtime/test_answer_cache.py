"""The answer cache reuses an answer only for unchanged data, checkpoint and settings, and loses no acknowledged
answer to a cut or garbled line."""

import logging
import os
import sys
from pathlib import Path

from lmms_futuremask.experiments.evalrun import OFFLINE_ENV
from lmms_futuremask.runtime.answer_cache import AnswerCache

from ..helpers import texts

BIN = Path(sys.executable).parent
ENV = {**os.environ, **OFFLINE_ENV}


# -- 3b. a checkpoint overwritten in place ----------------------------------------------------------------------------


def test_answer_cache_does_not_reuse_answers_of_an_overwritten_checkpoint(tmp_path, caplog):
    from lmms_eval.models import get_model

    from lmms_futuremask.testing.tiny import write_tiny_model

    from ..helpers import docs, generate_requests

    model_dir = write_tiny_model(tmp_path / "model", seed=0)

    def answers(**extra):
        args = ",".join(f"{k}={v}" for k, v in {"pretrained": model_dir, "device": "cpu", **extra}.items())
        model = get_model("llava_futuremask").create_from_arg_string(args, {})
        model.task_dict = {"toy": {"test": docs()}}
        return texts(model.generate_until(generate_requests())), model

    cache = tmp_path / "cache"
    first, _ = answers(answer_cache=cache)
    again, model = answers(answer_cache=cache)
    assert again == first and "5 reused, 0 computed" in model.runner.answer_cache.summary()
    write_tiny_model(model_dir, seed=1)  # a fine-tune saved over the same folder
    fresh, _ = answers()
    cached, model = answers(answer_cache=cache)
    assert "0 reused, 5 computed" in model.runner.answer_cache.summary()
    assert cached == fresh != first


# -- 6. the answer cache's tail ---------------------------------------------------------------------------------------


def test_a_cut_or_garbled_cache_line_loses_no_acknowledged_answer(tmp_path, caplog):
    cache = AnswerCache(tmp_path, {"model": "x"})
    cache.put("a", "first")
    cache.put("b", "second")
    with cache.path.open("ab") as handle:
        handle.write(b'{"key": "c", "ans')  # cut short by a power loss: never acknowledged
    with caplog.at_level(logging.WARNING, logger="lmms_futuremask"):
        reloaded = AnswerCache(tmp_path, {"model": "x"})
    assert reloaded.answers == {"a": "first", "b": "second"}
    assert f"{cache.path} line 3 is damaged" in caplog.text
    reloaded.put("d", "fourth")  # lands on a fresh line, not glued to the cut one
    with cache.path.open("ab") as handle:
        handle.write(b"\xff\xfe garbage \x80")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lmms_futuremask"):
        final = AnswerCache(tmp_path, {"model": "x"})
    assert final.answers == {"a": "first", "b": "second", "d": "fourth"}
    assert "line 5 is damaged (UnicodeDecodeError)" in caplog.text
    final.put("e", "fifth")
    assert AnswerCache(tmp_path, {"model": "x"}).answers["e"] == "fifth"


def test_the_cache_key_changes_with_every_input_of_an_answer(tmp_path):
    from lmms_futuremask.runtime.answer_cache import request_key

    base = ("generate", "task", 3, "prompt", [("max_new_tokens", 4)], "data-1")
    variants = [
        ("loglikelihood", *base[1:]),
        (base[0], "task2", *base[2:]),
        (*base[:2], 4, *base[3:]),
        (*base[:3], "prompt!", *base[4:]),
        (*base[:4], [("max_new_tokens", 5)], base[5]),
        (*base[:5], "data-2"),
    ]
    keys = {request_key(*v) for v in variants}
    assert len(keys) == len(variants) and request_key(*base) not in keys
    assert AnswerCache(tmp_path, {"a": 1}).path != AnswerCache(tmp_path, {"a": 2}).path
