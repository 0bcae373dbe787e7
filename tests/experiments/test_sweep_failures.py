"""Sweeps never silently wrong: stale results rerun, validation before the first run, one sweep per folder,
failed samples retried, no orphan lmms-eval child after SIGTERM."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmms_futuremask.cli import main
from lmms_futuremask.experiments.evalrun import OFFLINE_ENV
from lmms_futuremask.experiments.sweep import run_sweep
from lmms_futuremask.milebench.data import MileBenchDataError, load_docs
from lmms_futuremask.milebench.fake import write_fake_milebench
from lmms_futuremask.validation import UserError

from ..helpers import corrupt_image

BIN = Path(sys.executable).parent
ENV = {**os.environ, **OFFLINE_ENV}


# -- 2, 3, 8, 10. sweeps: failures retried, stale results rerun, validation first ----------------------------------


def _fake_run(calls):
    """A stand-in for one lmms-eval run: writes a results file with one task and no failed sample."""

    def run(model_args, tasks, output_path, log_file, extra, env, model="llava_futuremask", **progress):
        calls.append((model_args, env.get("MILEBENCH_DIR")))
        folder = Path(output_path) / "model"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = f"{len(calls):04d}"
        results = {
            "results": {"milebench_tqa": {"accuracy,none": 0.5, "failed_samples,none": 0}},
            "config": {"model_args": model_args},
        }
        path = folder / f"{stamp}_results.json"
        path.write_text(json.dumps(results))
        return path

    return run


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return write_fake_milebench(root / "a", samples_per_task=2, seed=0), write_fake_milebench(root / "b", 2, seed=1)


@pytest.mark.slow  # indexes every lmms-eval task
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


@pytest.mark.slow  # indexes every lmms-eval task
def test_a_variant_whose_run_failed_is_reported_with_its_reason_and_the_sweep_goes_on(
    tmp_path, tiny_model_dir, two_datasets
):
    calls, lines = [], []
    succeed = _fake_run(calls)

    def run(model_args, *args, **kwargs):
        if "mode=future" in model_args:
            calls.append((model_args, None))
            raise RuntimeError(
                "lmms-eval failed (exit 0); log x:\n2026 | INFO | loading\n"
                "lmms_futuremask.runtime.errors.RunFailed: futuremask: the model fails as a whole\nbye"
            )
        return succeed(model_args, *args, **kwargs)

    runs = run_sweep(
        ["future", "original"],
        "milebench_tqa",
        f"pretrained={tiny_model_dir},device=cpu",
        output_root=tmp_path / "sweep",
        env={"MILEBENCH_DIR": str(two_datasets[0])},
        log=lines.append,
        run=run,
    )
    assert [(r.variant, r.status) for r in runs] == [("future", "failed"), ("original", "complete")]
    failed_line = next(line for line in lines if "FAILED" in line)
    assert "RunFailed: futuremask: the model fails as a whole" in failed_line
    assert not (tmp_path / "sweep" / "future" / "COMPLETE").exists()


@pytest.mark.slow  # indexes every lmms-eval task
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


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["download-milebench", "--parts", "9"], "give part numbers 0-5"),
        (["download-milebench", "--dir", "{file}"], "is a file; give a folder"),
        (["fake-milebench", "{file}"], "is a file; give a folder"),
        (["fake-milebench", "{tmp}/mb", "--samples", "0"], "is not a whole number >= 1"),
        (["sweep", "--model-args", "pretrained=x", "--progress-every", "-3"], "is not a positive number of seconds"),
        (["bench", "--images", "6,x"], "comma-separated list of whole numbers"),
    ],
)
def test_bad_cli_values_are_argparse_errors_not_tracebacks(tmp_path, capsys, argv, says):
    """Checked by argparse itself: one usage line and one error line naming the option, exit 2, nothing done."""
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    argv = [a.format(file=a_file, tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"lmms-futuremask {argv[0]}: error: argument ") and says in err[-1], err
    assert not (tmp_path / "mb").exists()


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


@pytest.mark.slow
def test_failed_samples_make_a_variant_incomplete_and_only_they_are_recomputed(tmp_path, tiny_model_dir):
    data = write_fake_milebench(tmp_path / "MileBench", samples_per_task=6)
    docs = load_docs("TQA", data)
    broken = {docs[1]["images"][0]: None, docs[4]["images"][-1]: None}
    for name in broken:
        path = data / "TQA" / "images" / name
        broken[name] = path.read_bytes()
        corrupt_image(path)
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


def test_each_attempt_appends_to_the_variants_log(tmp_path, monkeypatch):
    """A resumed variant's log keeps the interrupted attempt above the new one (a stand-in lmms-eval that fails)."""
    from lmms_futuremask.experiments import evalrun

    monkeypatch.setattr(evalrun, "lmms_eval_command", lambda: [sys.executable, "-c", "print('attempt output')"])
    log = tmp_path / "lmms-eval.log"
    for _ in range(2):
        with pytest.raises(RuntimeError, match="lmms-eval failed"):
            evalrun.run_lmms_eval("pretrained=x", "milebench_tqa", tmp_path / "out", log)
    lines = log.read_text().splitlines()
    assert lines.count("attempt output") == 2 and sum(line.startswith("=== ") for line in lines) == 2
