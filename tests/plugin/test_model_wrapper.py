"""The lmms-eval adapter in-process: registration, batching, image placement and the per-sample error policy."""

import math

import pytest

from lmms_futuremask.runtime.errors import ERROR_MARKER, SampleError

from ..helpers import GEN, doc_to_visual, docs, generate_requests, make_model, request, texts


def test_registered_through_the_entry_point():
    from lmms_eval.models import get_model

    from lmms_futuremask.model_wrappers.llava_futuremask import LlavaFutureMask

    assert get_model("llava_futuremask") is LlavaFutureMask


def test_model_args_win_over_cli_injected_defaults(tiny_model_dir):
    model = make_model(tiny_model_dir, batch_size=3, mode="future_v2v")
    assert model.batch_size == 3
    from lmms_futuremask import current_mode

    assert current_mode(model.model) == "future_v2v"


@pytest.mark.parametrize("mode", ["original", "future", "mma"])
def test_batched_answers_equal_batch_one(tiny_model_dir, mode):
    one = texts(make_model(tiny_model_dir, mode=mode, batch_size=1).generate_until(generate_requests()))
    four = texts(make_model(tiny_model_dir, mode=mode, batch_size=4).generate_until(generate_requests()))
    assert one == four
    assert all(isinstance(a, str) and not a.startswith(ERROR_MARKER) for a in one)


def test_interleaved_placeholders_are_kept_and_missing_ones_prepended(tiny_model_dir):
    model = make_model(tiny_model_dir)
    vlm = model.vlm
    seen = []
    original_prompt = vlm.prompt

    def spy(sample):
        seen.append(original_prompt(sample))
        return seen[-1]

    vlm.prompt = spy
    texts(model.generate_until(generate_requests(ids=[1, 2])))
    assert "USER: Image 1: <image> Image 2: <image> Which is brighter? ASSISTANT:" in seen
    assert "USER: <image>\n<image>\nDescribe the change. ASSISTANT:" in seen


def test_placeholder_mismatch_is_recorded_with_the_doc_and_others_still_answered(tiny_model_dir):
    model = make_model(tiny_model_dir, batch_size=2)
    bad = request("generate_until", ("<image> only one slot", dict(GEN), doc_to_visual, 4, "toy", "test"))
    answers = texts(model.generate_until([*generate_requests(ids=[0, 1]), bad]))
    assert answers[2].startswith(ERROR_MARKER)
    assert "task toy doc 4" in answers[2] and "1 <image> placeholder(s) but the sample has 3" in answers[2]
    assert not answers[0].startswith(ERROR_MARKER) and not answers[1].startswith(ERROR_MARKER)


def test_unreadable_image_is_recorded_not_empty(tiny_model_dir):
    def broken(doc):
        raise OSError("cannot identify image file 'x.png'")

    model = make_model(tiny_model_dir)
    req = request("generate_until", ("What colour?", dict(GEN), broken, 0, "toy", "test"))
    answer, good = texts(model.generate_until([req, *generate_requests(ids=[1])]))
    assert answer.startswith(ERROR_MARKER) and "x.png" in answer
    assert not good.startswith(ERROR_MARKER)


def test_on_error_raise_names_the_sample(tiny_model_dir):
    model = make_model(tiny_model_dir, on_error="raise")
    bad = request("generate_until", ("<image> <image>", dict(GEN), doc_to_visual, 0, "toy", "test"))
    with pytest.raises(SampleError, match="task toy doc 0"):
        texts(model.generate_until([bad]))


def test_unknown_values_are_clear_errors(tiny_model_dir):
    with pytest.raises(ValueError, match="valid modes are"):
        make_model(tiny_model_dir, mode="futuer")
    with pytest.raises(ValueError, match="valid templates are"):
        make_model(tiny_model_dir, conv_template="llava_v9")
    with pytest.raises(ValueError, match="valid values are: record, raise"):
        make_model(tiny_model_dir, on_error="ignore")


def test_loglikelihood_batched_equals_single_and_prefers_nothing_on_failure(tiny_model_dir):
    reqs = [
        request("loglikelihood", (docs()[i]["question"], cont, doc_to_visual, i, "toy", "test"))
        for i, cont in [(0, " red"), (1, " the first"), (4, " yes")]
    ]
    single = [r.text for r in make_model(tiny_model_dir, mode="future").loglikelihood(reqs)]
    batched = [r.text for r in make_model(tiny_model_dir, mode="future", batch_size=3).loglikelihood(reqs)]
    for (a, greedy_a), (b, greedy_b) in zip(single, batched, strict=False):
        assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b
        assert a < 0 and math.isfinite(a)
    bad = request("loglikelihood", ("<image>", " x", doc_to_visual, 4, "toy", "test"))
    failed, _ = make_model(tiny_model_dir).loglikelihood([bad, reqs[0]])
    assert failed.text[0] == float("-inf") and failed.text[1] is False


def test_static_cache_model_arg_gives_the_same_answers(tiny_model_dir):
    default = texts(make_model(tiny_model_dir, mode="future", batch_size=2).generate_until(generate_requests()))
    static = make_model(tiny_model_dir, mode="future", batch_size=2, cache_implementation="static")
    assert texts(static.generate_until(generate_requests())) == default
