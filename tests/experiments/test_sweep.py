"""Sweep with an interruption and resume, report numbers against lmms-eval's results, PNGs, the inspector."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from lmms_futuremask.cli import main
from lmms_futuremask.experiments.evalrun import OFFLINE_ENV, find_results_file, scores_of
from lmms_futuremask.experiments.report import build_report
from lmms_futuremask.experiments.runs import load_run
from lmms_futuremask.milebench.fake import write_fake_milebench

BIN = Path(sys.executable).parent


def _answer_keys(folder: Path) -> list[str]:
    keys = []
    for path in folder.glob("answers-*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                keys.append(json.loads(line)["key"])
            except json.JSONDecodeError:  # a line the kill cut short; the cache skips it too
                pass
    return keys


@pytest.mark.slow
def test_sweep_interrupted_and_resumed_then_report(tmp_path, tiny_model_dir):
    data = write_fake_milebench(tmp_path / "MileBench", samples_per_task=6)
    out = tmp_path / "sweep"
    command = [str(BIN / "lmms-futuremask"), "sweep", "--variants", "original,future_v2v,future+merge"]
    command += ["--tasks", "milebench_tqa,milebench_clevr_change", "--out", str(out)]
    command += ["--model-args", f"pretrained={tiny_model_dir},device=cpu,max_new_tokens=300"]
    command += ["--", "--gen_kwargs", "min_new_tokens=150"]  # slow enough answers to interrupt mid-variant
    env = {**os.environ, **OFFLINE_ENV, "MILEBENCH_DIR": str(data)}

    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    cache = out / "future_v2v" / "answer_cache"
    deadline = time.time() + 600
    while time.time() < deadline and len(_answer_keys(cache)) < 2:
        assert first.poll() is None, first.stdout.read().decode()[-3000:]
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # interrupt the sweep in the middle of its second variant
    first.wait()
    finished_before = set(_answer_keys(cache))
    assert 2 <= len(finished_before) < 12, "the interruption must land mid-variant"
    assert (out / "original" / "COMPLETE").exists() and not (out / "future_v2v" / "COMPLETE").exists()

    second = subprocess.run(command, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "[sweep 1/3] original: complete, skipped" in second.stdout
    log = (out / "future_v2v" / "lmms-eval.log").read_text()
    assert f"{len(finished_before)} reused, {12 - len(finished_before)} computed" in log
    keys = _answer_keys(cache)
    assert len(keys) == len(set(keys)) == 12  # nothing that had finished was computed again
    assert finished_before <= set(keys)

    # The report's numbers are lmms-eval's numbers.
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    runs = [load_run(out / v) for v in ("original", "future_v2v", "future+merge")]
    report = build_report(runs)
    assert report.variants == ["original", "future_v2v", "future+merge"]
    for run in runs:
        scores = scores_of(find_results_file(run.folder))
        for task, metric in report.columns:
            assert report.cells[(run.variant, task)].value == pytest.approx(scores[task][metric])
    tqa = report.cells[("future_v2v", "milebench_tqa")]
    assert tqa.test == "McNemar" and 0 <= tqa.p <= 1
    assert report.cells[("future+merge", "milebench_clevr_change")].test == "bootstrap"
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| future+merge |" in text and "McNemar" in text
    for png in ("mask_patterns.png", "deltas.png"):
        path = tmp_path / "report" / png
        assert path.stat().st_size > 5000 and Image.open(path).size[0] > 300


def test_attention_inspector_writes_one_png_per_mode(tmp_path, tiny_model_dir):
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        Image.new("RGB", (40, 40), colour).save(tmp_path / f"{i}.png")
    code = main(
        [
            "inspect",
            "--pretrained",
            str(tiny_model_dir),
            "--image",
            str(tmp_path / "0.png"),
            "--image",
            str(tmp_path / "1.png"),
            "--prompt",
            "USER: <image> then <image> which is red? ASSISTANT:",
            "--modes",
            "original,future",
            "--out",
            str(tmp_path / "maps"),
        ]
    )
    assert code == 0
    for mode in ("original", "future"):
        path = tmp_path / "maps" / f"attention_{mode}_layer-1.png"
        assert path.stat().st_size > 5000
    assert (tmp_path / "maps" / "attention_original_layer-1.png").read_bytes() != (
        tmp_path / "maps" / "attention_future_layer-1.png"
    ).read_bytes()
