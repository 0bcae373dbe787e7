"""Never silently wrong: bad arguments refused early, failures visible and retried, stale answers never reused,
interrupted runs leave no orphan, a run that computed nothing writes no results, damaged installs repair."""

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image

from lmms_futuremask.cli import main
from lmms_futuremask.experiments.evalrun import OFFLINE_ENV, find_results_file, lmms_eval_command
from lmms_futuremask.experiments.sweep import run_sweep
from lmms_futuremask.milebench.data import MileBenchDataError, load_docs, open_image
from lmms_futuremask.milebench.fake import write_fake_milebench
from lmms_futuremask.runtime.answer_cache import AnswerCache
from lmms_futuremask.runtime.errors import ERROR_MARKER, RunFailed
from lmms_futuremask.runtime.model_args import ModelArgsError, parse_model_args
from lmms_futuremask.validation import UserError

from .helpers import texts

BIN = Path(sys.executable).parent
ENV = {**os.environ, **OFFLINE_ENV}


# -- 1. model_args checked before anything heavy ----------------------------------------------------------------------

BAD_ARGS = [
    ("batch_size=-1", r"batch_size=-1.0 is not valid; batch_size takes an integer >= 1"),
    ("batch_size=0", r"batch_size=0 is not valid; batch_size takes an integer >= 1"),
    ("max_new_tokens=0", r"max_new_tokens=0 is not valid; max_new_tokens takes an integer >= 1"),
    ("mode=future,merge=kernel,merge_kernel=2.5", r"merge_kernel=2.5 is not valid; merge_kernel takes an integer"),
    ("mode=futur", r"unknown mode 'futur'; valid modes are: original, future, future_v2v, future_v2t, mma"),
    ("batch_sise=8", r"unknown argument\(s\) batch_sise; valid model_args are: pretrained, revision, .*attn_impl"),
    ("pretrained=/no/such/checkpoint", r"pretrained='/no/such/checkpoint': no such folder"),
    ("dtype=float8", r"unknown dtype 'float8'; valid values are: auto, bfloat16, float16, float32"),
    ("on_error=ignore", r"unknown on_error 'ignore'; valid values are: record, raise"),
    ("attn_implementation=flash", r"unknown attn_implementation 'flash'; valid values are: sdpa, eager"),
    ("cache_implementation=offloaded", r"unknown cache_implementation 'offloaded'; valid values are: dynamic, static"),
    ("milebench_pad_square=maybe", r"milebench_pad_square='maybe' is not valid; milebench_pad_square takes true or"),
    ("mode=future,merge_pool=max", r"\['merge_pool'\] only apply with merge='kernel'"),
    ("merge=kernel", r"merge='kernel' needs a future mode"),
    ("conv_template=llava_v9", r"unknown conv_template 'llava_v9'; valid templates are: auto, llava_hf"),
]


@pytest.mark.parametrize("arg_string,message", BAD_ARGS, ids=[a for a, _ in BAD_ARGS])
def test_bad_model_args_are_refused_before_the_model_loads(tiny_model_dir, monkeypatch, arg_string, message):
    from lmms_eval.models import get_model

    from lmms_futuremask.runtime.vlm import VLM

    def never(*args, **kwargs):
        raise AssertionError("the model loaded before the model_args were checked")

    monkeypatch.setattr(VLM, "from_pretrained", never)
    cls = get_model("llava_futuremask")
    with pytest.raises(ModelArgsError, match=message):
        cls.create_from_arg_string(f"pretrained={tiny_model_dir},{arg_string}", {"batch_size": "1"})


def test_injected_auto_batch_size_and_a_file_as_checkpoint_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ModelArgsError, match="batch_size=auto is not supported"):
        parse_model_args({"pretrained": str(tiny_model_dir), "batch_size": "auto"})
    with pytest.raises(ModelArgsError, match="max_batch_size only applies to --batch_size auto"):
        parse_model_args({"pretrained": str(tiny_model_dir), "max_batch_size": 8})
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelArgsError, match="is a file; give the checkpoint folder"):
        parse_model_args({"pretrained": str(tmp_path / "weights.bin")})
    with pytest.raises(ModelArgsError, match="has no config.json"):
        parse_model_args({"pretrained": str(tmp_path)})
    # A hub id is left to transformers; injected strings from the CLI parse as numbers.
    values = parse_model_args({"pretrained": "llava-hf/llava-1.5-7b-hf", "batch_size": "8", "merge_kernel": None})
    assert values["batch_size"] == 8 and values["pretrained"] == "llava-hf/llava-1.5-7b-hf"


def test_the_guard_above_can_fail(tiny_model_dir, monkeypatch):
    """Valid model_args do reach the model loader (so the refusals above are not an accident of the spy)."""
    from lmms_eval.models import get_model

    from lmms_futuremask.runtime.vlm import VLM

    def reached(*args, **kwargs):
        raise RuntimeError("loader reached")

    monkeypatch.setattr(VLM, "from_pretrained", reached)
    with pytest.raises(RuntimeError, match="loader reached"):
        get_model("llava_futuremask").create_from_arg_string(f"pretrained={tiny_model_dir},batch_size=2", {})


@pytest.mark.slow
def test_cli_run_with_a_bad_batch_size_writes_no_results(tmp_path, tiny_model_dir):
    from lmms_futuremask.testing.sample_task import GROUP_NAME, write_sample_task

    out = tmp_path / "out"
    done = subprocess.run(
        lmms_eval_command()
        + ["--model", "llava_futuremask", "--model_args", f"pretrained={tiny_model_dir},batch_size=-1,device=cpu"]
        + ["--tasks", GROUP_NAME, "--include_path", str(write_sample_task(tmp_path / "tasks", n_docs=2))]
        + ["--output_path", str(out)],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert "batch_size=-1.0 is not valid" in done.stdout + done.stderr
    assert not list(out.rglob("*_results.json"))


# -- 2, 3, 8, 10. sweeps: failures retried, stale results rerun, validation first ----------------------------------


def _fake_run(calls):
    """A stand-in for one lmms-eval run: writes a results file with one task and no failed sample."""

    def run(model_args, tasks, output_path, log_file, extra, env, model="llava_futuremask", **progress):
        calls.append((model_args, env.get("MILEBENCH_DIR")))
        folder = Path(output_path) / "model"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = f"{len(calls):04d}"
        results = {"results": {"milebench_tqa": {"accuracy,none": 0.5, "failed_samples,none": 0}},
                   "config": {"model_args": model_args}}  # fmt: skip
        path = folder / f"{stamp}_results.json"
        path.write_text(json.dumps(results))
        return path

    return run


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return write_fake_milebench(root / "a", samples_per_task=2, seed=0), write_fake_milebench(root / "b", 2, seed=1)


def test_sweep_reruns_a_complete_variant_when_data_or_checkpoint_changed(tmp_path, tiny_model_dir, two_datasets):
    import shutil

    data_a, data_b = two_datasets
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    calls, lines = [], []
    args = dict(tasks="milebench_tqa", model_args=f"pretrained={model},device=cpu", output_root=tmp_path / "sweep")

    def sweep(data):
        return run_sweep(["original"], env={"MILEBENCH_DIR": str(data)}, log=lines.append, run=_fake_run(calls), **args)

    assert sweep(data_a)[0].status == "complete" and len(calls) == 1
    assert sweep(data_a)[0].status == "skipped" and len(calls) == 1  # nothing changed
    assert sweep(data_b)[0].status == "complete" and len(calls) == 2  # other data: run again
    tqa = data_b / "TQA" / "TQA.json"
    tqa.write_text(tqa.read_text().replace("Synthetic", "Edited"))  # a task file changed in place
    assert sweep(data_b)[0].status == "complete" and len(calls) == 3
    (model / "config.json").write_text((model / "config.json").read_text() + " ")  # checkpoint overwritten in place
    assert sweep(data_b)[0].status == "complete" and len(calls) == 4
    assert sweep(data_b)[0].status == "skipped" and len(calls) == 4
    # A COMPLETE whose results file was deleted is not complete.
    for path in (tmp_path / "sweep" / "original" / "lmms-eval").rglob("*_results.json"):
        path.unlink()
    assert sweep(data_b)[0].status == "complete" and len(calls) == 5


def test_sweep_validates_everything_before_the_first_run(tmp_path, tiny_model_dir, two_datasets):
    calls = []
    common = dict(output_root=tmp_path / "sweep", env={"MILEBENCH_DIR": str(two_datasets[0])}, run=_fake_run(calls))
    model_args = f"pretrained={tiny_model_dir}"
    cases = [
        (["original", "futur"], "milebench_tqa", model_args, "unknown mode 'futur'"),
        (["original", "future+pool"], "milebench_tqa", model_args, "use MODE or MODE\\+merge"),
        (["original", "original"], "milebench_tqa", model_args, "lists original more than once"),
        (["original"], "milebench_tqa", model_args + ",mode=future", "must not set mode or merge"),
        (["original"], "milebench_tqa", model_args + ",batch_size=0", "batch_size=0 is not valid"),
        (["original"], "milebench_tqq", model_args, "unknown task\\(s\\) milebench_tqq"),
    ]
    for variants, tasks, args, message in cases:
        with pytest.raises(UserError, match=message):
            run_sweep(variants, tasks, args, **common)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MileBenchDataError, match="lacks 29 MileBench task"):
        run_sweep(["original"], "milebench", model_args, **{**common, "env": {"MILEBENCH_DIR": str(empty)}})
    assert calls == [] and not (tmp_path / "sweep" / "original").exists()


def test_cli_user_errors_are_one_line_and_exit_2(tmp_path, capsys, tiny_model_dir):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert main(["sweep", "--variants", "original,futur", "--model-args", f"pretrained={tiny_model_dir}"]) == 2
    assert main(["sweep", "--model-args", f"pretrained={tiny_model_dir},mode=future", "--out", str(tmp_path)]) == 2
    assert main(["sweep", "--model-args", f"pretrained={tiny_model_dir}", "--out", str(a_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("lmms-futuremask sweep: ") for line in err), err
    assert "unknown mode 'futur'" in err[0] and "must not set mode" in err[1] and "is a file" in err[2]


def _fake_results(folder: Path, model_args: str) -> Path:
    folder.mkdir(parents=True)
    results = {"results": {"milebench_tqa": {"accuracy,none": 0.5}}, "config": {"model_args": model_args}}
    (folder / "20260101_000000_results.json").write_text(json.dumps(results))
    return folder


def test_report_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    a = _fake_results(tmp_path / "a", "pretrained=org/model-a,mode=future")
    b = _fake_results(tmp_path / "b", "pretrained=org/model-b,mode=original")
    c = _fake_results(tmp_path / "c", "pretrained=org/model-a,mode=future")
    (tmp_path / "file").write_text("x")
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "r1")]) == 2
    assert main(["report", str(a), str(c), "--out", str(tmp_path / "r2")]) == 2
    assert main(["report", str(a), "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("lmms-futuremask report: ") for line in err), err
    assert "one model at a time" in err[0] and "same variant (future)" in err[1] and "is a file" in err[2]


def test_two_sweeps_into_one_folder_are_refused(tmp_path):
    from lmms_futuremask.experiments.sweep import sweep_lock

    with sweep_lock(tmp_path), pytest.raises(UserError, match=f"another sweep is writing into .* \\(pid {os.getpid()}"):
        with sweep_lock(tmp_path):
            pass
    with sweep_lock(tmp_path):  # released: a later sweep may write there
        pass


def _corrupt(path: Path) -> None:
    path.write_bytes(b"not an image")


@pytest.mark.slow
def test_failed_samples_make_a_variant_incomplete_and_only_they_are_recomputed(tmp_path, tiny_model_dir):
    data = write_fake_milebench(tmp_path / "MileBench", samples_per_task=6)
    docs = load_docs("TQA", data)
    broken = {docs[1]["images"][0]: None, docs[4]["images"][-1]: None}
    for name in broken:
        path = data / "TQA" / "images" / name
        broken[name] = path.read_bytes()
        _corrupt(path)
    command = [str(BIN / "lmms-futuremask"), "sweep", "--variants", "future_v2v", "--tasks", "milebench_tqa"]
    command += ["--model-args", f"pretrained={tiny_model_dir},device=cpu,max_new_tokens=3,batch_size=2"]
    command += ["--out", str(tmp_path / "sweep")]
    env = {**ENV, "MILEBENCH_DIR": str(data)}
    first = subprocess.run(command, env=env, capture_output=True, text=True)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "with 2 failed sample(s) (milebench_tqa 2)" in first.stdout and "rerun to retry" in first.stdout
    folder = tmp_path / "sweep" / "future_v2v"
    assert (folder / "INCOMPLETE").exists() and not (folder / "COMPLETE").exists()
    assert main(["report", str(tmp_path / "sweep"), "--out", str(tmp_path / "report")]) == 0
    assert "[2 failed]" in (tmp_path / "report" / "report.md").read_text()
    (row,) = csv.DictReader(open(tmp_path / "report" / "report.csv"))
    assert row["failed"] == "2"

    for name, content in broken.items():  # the data are fixed
        (data / "TQA" / "images" / name).write_bytes(content)
    second = subprocess.run(command, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 failed samples" in second.stdout
    assert "4 reused, 2 computed" in (folder / "lmms-eval.log").read_text()
    assert (folder / "COMPLETE").exists() and not (folder / "INCOMPLETE").exists()


# -- 3b. a checkpoint overwritten in place ----------------------------------------------------------------------------


def test_answer_cache_does_not_reuse_answers_of_an_overwritten_checkpoint(tmp_path, caplog):
    from lmms_eval.models import get_model

    from lmms_futuremask.testing.tiny import write_tiny_model

    from .test_model_wrapper import docs, generate_requests

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


# -- 4, 5. download: repair, links, containment -----------------------------------------------------------------------


def _archives(tmp_path: Path, data: Path) -> Path:
    from lmms_futuremask.milebench import TASKS

    archives = tmp_path / "archives"
    archives.mkdir()
    folders = [t.folder for t in TASKS]
    for i in range(6):
        with tarfile.open(archives / f"MileBench_part{i}.tar.gz", "w:gz") as tar:
            for folder in folders[i::6]:
                tar.add(data / folder, arcname=f"MileBench/{folder}")
    return archives


def test_download_repairs_a_deleted_task_and_a_truncated_json(tmp_path, capsys):
    import shutil

    archives = _archives(tmp_path, write_fake_milebench(tmp_path / "src", samples_per_task=1))
    target = tmp_path / "MileBench"
    command = ["download-milebench", "--dir", str(target), "--source", str(archives)]
    assert main(command) == 0
    shutil.rmtree(target / "ALFRED")
    shutil.rmtree(target / "TQA")
    json_file = target / "DocVQA" / "DocVQA.json"
    json_file.write_text(json_file.read_text()[:50])
    # The error a run gets names every missing task at once, and the command that repairs them.
    with pytest.raises(
        MileBenchDataError, match="ALFRED.json, which is missing.* 1 other task\\(s\\) are missing too: TQA"
    ):
        load_docs("ALFRED", target)
    capsys.readouterr()
    assert main(command) == 0
    out = capsys.readouterr().out
    for task in ("ALFRED", "TQA", "DocVQA"):
        assert f"extracting again to repair {task}" in out
        assert load_docs(task, target)
    assert "all 29 tasks verified" in out
    assert not list(target.glob(".extract-*"))


def test_archives_with_links_are_refused_and_leave_no_staging_folder(tmp_path, capsys):
    data = write_fake_milebench(tmp_path / "src", samples_per_task=1)
    archives = _archives(tmp_path, data)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    part = archives / "MileBench_part0.tar.gz"
    with tarfile.open(part, "w:gz") as tar:  # ALFRED's first image becomes a link that escapes once moved
        tar.add(data / "ALFRED" / "ALFRED.json", arcname="MileBench/ALFRED/ALFRED.json")
        link = tarfile.TarInfo(f"MileBench/ALFRED/images/{load_docs('ALFRED', data)[0]['images'][0]}")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../secret.png"
        tar.addfile(link)
    target = tmp_path / "MileBench"
    assert main(["download-milebench", "--dir", str(target), "--source", str(archives), "--parts", "0"]) == 2
    err = capsys.readouterr().err
    assert "is a link (symbolic)" in err and "refused" in err
    assert not list(target.glob(".extract-*")) and not (target / "ALFRED").exists()


def test_a_damaged_local_archive_is_not_to_be_deleted_by_the_user(tmp_path, capsys):
    archives = _archives(tmp_path, write_fake_milebench(tmp_path / "src", samples_per_task=1))
    part = archives / "MileBench_part0.tar.gz"
    part.write_bytes(part.read_bytes()[:200])
    target = tmp_path / "MileBench"
    assert main(["download-milebench", "--dir", str(target), "--source", str(archives), "--parts", "0"]) == 2
    err = capsys.readouterr().err
    assert "replace it in --source" in err and "delete" not in err
    assert part.exists() and not list(target.glob(".extract-*"))


def test_an_image_outside_its_task_folder_is_refused(tmp_path):
    from lmms_futuremask.milebench.download import check_task

    data = write_fake_milebench(tmp_path / "mb", samples_per_task=1)
    Image.new("RGB", (8, 8)).save(data / "outside.png")
    path = data / "TQA" / "TQA.json"
    content = json.loads(path.read_text())
    content["data"][0]["task_instance"]["images_path"][0] = "../../outside.png"
    path.write_text(json.dumps(content))
    doc = load_docs("TQA", data)[0]
    with pytest.raises(MileBenchDataError, match="outside .*TQA/images"):
        open_image(doc, 0)
    check = check_task("TQA", data)
    assert not check.ok and "lead outside" in check.detail


def test_wide_and_oversized_images_name_their_file(tmp_path, caplog, monkeypatch):
    import numpy as np
    from PIL import Image as PILImage

    data = write_fake_milebench(tmp_path / "mb", samples_per_task=1)
    doc = load_docs("TQA", data)[0]
    path = data / "TQA" / "images" / doc["images"][0]
    PILImage.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(path)  # 16-bit grey
    with caplog.at_level(logging.WARNING, logger="lmms_futuremask.milebench"):
        image = open_image(doc, 0)
    assert image.mode == "RGB" and str(path) in caplog.text and "16-bit" in caplog.text
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(MileBenchDataError, match=f"image {path} is too large for PIL"):
        open_image(doc, 0)


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


# -- 7. no orphan child after SIGTERM ---------------------------------------------------------------------------------


def _child_pid(log: Path, deadline: float) -> int:
    while time.time() < deadline:
        if log.exists():
            for line in log.read_text().splitlines():
                if line.startswith("=== ") and " lmms-eval pid " in line:
                    return int(line.split(" lmms-eval pid ")[1].split(":")[0])
        time.sleep(0.1)
    raise AssertionError("the sweep never started lmms-eval")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")


@pytest.mark.slow
def test_sigterm_to_a_sweep_stops_its_lmms_eval_child(tmp_path, tiny_model_dir):
    data = write_fake_milebench(tmp_path / "MileBench", samples_per_task=4)
    out = tmp_path / "sweep"
    command = [str(BIN / "lmms-futuremask"), "sweep", "--variants", "original", "--tasks", "milebench_tqa"]
    command += ["--model-args", f"pretrained={tiny_model_dir},device=cpu,max_new_tokens=400", "--out", str(out)]
    command += ["--", "--gen_kwargs", "min_new_tokens=400"]
    sweep = subprocess.Popen(command, env={**ENV, "MILEBENCH_DIR": str(data)}, stdout=subprocess.PIPE, text=True)
    child = _child_pid(out / "original" / "lmms-eval.log", time.time() + 300)
    time.sleep(3)
    assert _alive(child)
    sweep.send_signal(signal.SIGTERM)
    assert sweep.wait(timeout=120) == 128 + signal.SIGTERM
    deadline = time.time() + 30
    while _alive(child) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(child), "lmms-eval kept running after the sweep was terminated"
    assert not (out / "original" / "COMPLETE").exists()
    # The log of the interrupted attempt is kept when the sweep resumes.
    first_log = (out / "original" / "lmms-eval.log").read_text()
    assert f"lmms-eval pid {child}" in first_log


# -- 9. a run that computed nothing writes no results ----------------------------------------------------------------


def test_a_model_that_fails_as_a_whole_stops_at_the_first_sample(tiny_model_dir, monkeypatch):
    from lmms_eval.models import get_model

    from .test_model_wrapper import docs, generate_requests

    model = get_model("llava_futuremask").create_from_arg_string(f"pretrained={tiny_model_dir},device=cpu", {})
    model.task_dict = {"toy": {"test": docs()}}
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("kernel failed to compile")

    monkeypatch.setattr(model.vlm.model, "generate", broken)
    with pytest.raises(RunFailed, match="the model fails as a whole.*kernel failed to compile"):
        texts(model.generate_until(generate_requests()))
    assert len(calls) == 2  # the first sample, then the probe: no other sample was tried


def test_a_sample_that_fails_alone_is_recorded_after_the_probe_passes(tiny_model_dir, monkeypatch):
    from lmms_eval.models import get_model

    from .test_model_wrapper import docs, generate_requests

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
        _corrupt(image)
    out = tmp_path / "out"
    done = subprocess.run(
        lmms_eval_command()
        + ["--model", "llava_futuremask", "--model_args", f"pretrained={tiny_model_dir},device=cpu,max_new_tokens=2"]
        + ["--tasks", "milebench_tqa", "--output_path", str(out), "--log_samples"],
        env={**ENV, "MILEBENCH_DIR": str(data)},
        capture_output=True,
        text=True,
    )
    assert "every sample failed (2 of 2); no results are written" in done.stdout + done.stderr
    with pytest.raises(FileNotFoundError):
        find_results_file(out)


# -- 10. rescore against other data ------------------------------------------------------------------------------------


def test_rescore_against_data_with_fewer_samples_says_what_differs(tmp_path, capsys):
    from lmms_futuremask.milebench.rescore import rescore_logs

    big = write_fake_milebench(tmp_path / "big", samples_per_task=4)
    small = write_fake_milebench(tmp_path / "small", samples_per_task=2, seed=5)
    logs = tmp_path / "logs"
    logs.mkdir()
    records = [
        {"doc_id": i, "target": d["answer"], "filtered_resps": ["A"]} for i, d in enumerate(load_docs("TQA", big))
    ]
    (logs / "x_samples_milebench_tqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert rescore_logs(logs, big)["milebench_tqa"]["samples"] == 4  # the data the run used: fine
    with pytest.raises(MileBenchDataError, match="4 sample\\(s\\) differ.*doc 2 is not one of its 2 samples"):
        rescore_logs(logs, small)
    assert main(["rescore", str(logs), "--data-dir", str(small)]) == 2
    assert "does not match the MileBench data" in capsys.readouterr().err
