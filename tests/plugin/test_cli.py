"""The console command and the real lmms-eval CLI, in subprocesses, on the tiny checkpoint."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lmms_futuremask as fm
from lmms_futuremask.experiments.evalrun import find_results_file, scores_of

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.mark.slow
def test_tiny_model_command_writes_a_deterministic_loadable_checkpoint(tmp_path, tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    done = subprocess.run(
        [str(BIN / "lmms-futuremask"), "tiny-model", str(tmp_path / "tiny")], env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (tmp_path / "tiny" / name).exists(), name
    fresh = AutoModelForImageTextToText.from_pretrained(tmp_path / "tiny")
    fixture = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    for (name, a), (_, b) in zip(fresh.state_dict().items(), fixture.state_dict().items(), strict=False):
        assert torch.equal(a, b), name
    processor = AutoProcessor.from_pretrained(tmp_path / "tiny")
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == fresh.config.image_token_id
    assert processor.chat_template


@pytest.mark.slow
def test_lmms_eval_cli_runs_every_mode_on_the_sample_task(tmp_path):
    """The README's main job, shrunk: one real ``lmms-eval`` run per mode, each writing finite scores."""
    done = subprocess.run(
        [
            str(BIN / "lmms-futuremask"),
            "demo",
            "--out",
            str(tmp_path),
            "--docs",
            "5",
            "--tasks",
            "futuremask_sample",
            "--variants",
            ",".join(fm.MODES) + ",future_v2v+merge",
        ],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for mode in [*fm.MODES, "future_v2v+merge"]:
        results_file = find_results_file(tmp_path / "results" / mode)
        scores = scores_of(results_file)
        assert set(scores) >= {"futuremask_sample_colour", "futuremask_sample_choice"}, scores
        assert math.isfinite(scores["futuremask_sample_colour"]["exact_match"])
        assert math.isfinite(scores["futuremask_sample_choice"]["acc"])
        config = json.loads(results_file.read_text())["config"]
        assert f"mode={mode.removesuffix('+merge')}" in config["model_args"]
        assert ("merge=kernel" in config["model_args"]) == mode.endswith("+merge")
        samples = list(results_file.parent.glob("*_samples_futuremask_sample_colour.jsonl"))
        answers = [json.loads(line)["filtered_resps"][0] for line in samples[0].read_text().splitlines()]
        assert len(answers) == 5 and not any(a.startswith("[futuremask-error]") for a in answers)
    assert "| mma |" in done.stdout
    assert "oracle (optimistic)" in done.stdout and (tmp_path / "select" / "routing.yaml").is_file()


def _answers(output_path: Path) -> dict[tuple[str, int], object]:
    answers = {}
    for path in output_path.rglob("*_samples_*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            answers[(path.name.split("_samples_")[1], record["doc_id"])] = record["filtered_resps"]
    return answers


@pytest.mark.slow
def test_data_parallel_run_gives_the_same_answers_as_one_process(tmp_path, tiny_model_dir):
    from lmms_futuremask.experiments.evalrun import lmms_eval_command
    from lmms_futuremask.testing.sample_task import GROUP_NAME, write_sample_task

    task_dir = write_sample_task(tmp_path / "tasks", n_docs=4)
    common = [
        "--model",
        "llava_futuremask",
        "--model_args",
        f"pretrained={tiny_model_dir},mode=future_v2v,device=cpu",
        "--tasks",
        GROUP_NAME,
        "--include_path",
        str(task_dir),
        "--log_samples",
    ]
    # What `accelerate launch --multi_gpu --num_processes 2` runs on GPUs, with accelerate told to stay on the CPU.
    launch = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", "29531", "-m", "lmms_eval"]
    runs = {"one": lmms_eval_command(), "two": launch}
    logs = {}
    for name, command in runs.items():
        done = subprocess.run(
            command + common + ["--output_path", str(tmp_path / name)],
            env={**ENV, "ACCELERATE_USE_CPU": "1"},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        logs[name] = done.stdout + done.stderr
    assert "Running on rank 1" in logs["two"] and "Running on rank 1" not in logs["one"]
    one, two = _answers(tmp_path / "one"), _answers(tmp_path / "two")
    assert len(one) == 8 and one == two
    assert scores_of(find_results_file(tmp_path / "one")) == scores_of(find_results_file(tmp_path / "two"))


def _parsers():
    from lmms_futuremask.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    return parser, subparsers


def test_every_subcommand_and_argument_explains_itself():
    _parser, subparsers = _parsers()
    for name, sub in subparsers.items():
        assert sub.description, name
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings or action.dest}"
    help_text = " ".join(subparsers["sweep"].format_help().split())
    assert "(default: runs/sweep)" in help_text  # defaults are shown


def test_version_and_tasks_commands(capsys):
    from lmms_futuremask.cli import main
    from lmms_futuremask.milebench.catalog import TASKS

    try:
        main(["--version"])
    except SystemExit as stop:
        assert stop.code == 0
    assert capsys.readouterr().out.strip() == f"lmms-futuremask {fm.__version__}"
    assert main(["tasks", "--path"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    yamls = {p.stem for p in (folder / "milebench").glob("milebench_*.yaml")}
    assert {t.task_name for t in TASKS} <= yamls
    assert main(["tasks"]) == 0
    listing = capsys.readouterr().out
    assert all(t.task_name in listing for t in TASKS) and "milebench_paper" in listing


@pytest.mark.slow
def test_lmms_eval_lists_our_models_and_with_the_documented_flag_our_tasks():
    models = subprocess.run([str(BIN / "lmms-eval"), "models"], env=ENV, capture_output=True, text=True)
    names = {line.split()[0] for line in models.stdout.splitlines() if line.strip()}
    assert {"llava_futuremask", "futuremask"} <= names, models.stdout[-2000:] + models.stderr[-2000:]
    folder = subprocess.run([str(BIN / "lmms-futuremask"), "tasks", "--path"], capture_output=True, text=True)
    tasks = subprocess.run(
        [str(BIN / "lmms-eval"), "tasks", "list", "--include-path", folder.stdout.strip()],
        env=ENV,
        capture_output=True,
        text=True,
    )
    listed = {line.strip() for line in tasks.stdout.splitlines()}
    assert {"milebench", "milebench_paper", "milebench_tqa"} <= listed, tasks.stdout[-2000:]
