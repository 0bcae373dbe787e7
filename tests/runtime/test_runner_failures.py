"""A run that computed nothing writes no results: a model that fails as a whole stops at once; a sample that
fails alone is recorded and the others answered; a pass where every sample failed raises."""

import os
import sys
from pathlib import Path

import pytest

from lmms_futuremask.experiments.evalrun import OFFLINE_ENV, find_results_file
from lmms_futuremask.milebench.fake import write_fake_milebench
from lmms_futuremask.runtime.errors import ERROR_MARKER, RunFailed

from ..helpers import corrupt_image, lmms_eval_cli, texts

BIN = Path(sys.executable).parent
ENV = {**os.environ, **OFFLINE_ENV}


# -- 9. a run that computed nothing writes no results ----------------------------------------------------------------


def test_a_model_that_fails_as_a_whole_stops_at_the_first_sample(tiny_model_dir, monkeypatch):
    from lmms_eval.models import get_model

    from ..helpers import docs, generate_requests

    model = get_model("llava_futuremask").create_from_arg_string(f"pretrained={tiny_model_dir},device=cpu", {})
    model.task_dict = {"toy": {"test": docs()}}
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("kernel failed to compile")

    monkeypatch.setattr(model.vlm.model, "generate", broken)
    with pytest.raises(RunFailed, match=r"the model fails as a whole.*kernel failed to compile"):
        texts(model.generate_until(generate_requests()))
    assert len(calls) == 2  # the first sample, then the probe: no other sample was tried


def test_a_sample_that_fails_alone_is_recorded_after_the_probe_passes(tiny_model_dir, monkeypatch):
    from lmms_eval.models import get_model

    from ..helpers import docs, generate_requests

    model = get_model("llava_futuremask").create_from_arg_string(f"pretrained={tiny_model_dir},device=cpu", {})
    model.task_dict = {"toy": {"test": docs()}}
    real = model.vlm.generate_batch

    def picky(samples, settings):
        if any(s.where == "task toy doc 2" for s in samples):
            raise RuntimeError("this sample breaks the model")
        return real(samples, settings)

    monkeypatch.setattr(model.vlm, "generate_batch", picky)
    answers = texts(model.generate_until(generate_requests()))
    assert answers[2].startswith(ERROR_MARKER) and "this sample breaks the model" in answers[2]
    assert sum(a.startswith(ERROR_MARKER) for a in answers) == 1


@pytest.mark.slow
def test_a_run_where_every_sample_failed_writes_no_results_file(tmp_path, tiny_model_dir):
    data = write_fake_milebench(tmp_path / "MileBench", samples_per_task=2)
    for image in (data / "TQA" / "images").iterdir():
        corrupt_image(image)
    out = tmp_path / "out"
    args = f"pretrained={tiny_model_dir},device=cpu,max_new_tokens=2"
    done = lmms_eval_cli(out, "llava_futuremask", args, "milebench_tqa", "--log_samples", data=data)
    assert "every sample failed (2 of 2); no results are written" in done.stdout + done.stderr
    with pytest.raises(FileNotFoundError):
        find_results_file(out)
