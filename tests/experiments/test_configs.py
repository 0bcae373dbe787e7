"""configs/: the committed files are what the generator writes, and lmms-eval runs them with --config."""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from lmms_futuremask.experiments.configs import PRESETS, VARIANTS, config_text, paper_script, write_configs
from lmms_futuremask.experiments.evalrun import OFFLINE_ENV, find_results_file, lmms_eval_command
from lmms_futuremask.milebench.fake import write_fake_milebench

REPO = Path(__file__).resolve().parents[2]


def test_committed_configs_match_the_generator(tmp_path):
    for path in write_configs(tmp_path):
        committed = REPO / "configs" / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), f"{committed} is stale: rerun write_configs('configs')"
    assert len(list((REPO / "configs").glob("*/*.yaml"))) == sum(len(p.variants) for p in PRESETS) == 6 * 8 + 1
    assert len(list((REPO / "configs").glob("*/exact/*.yaml"))) == 2 * len(VARIANTS)  # the paper's two models
    assert {p.key for p in PRESETS} >= {"qwen2.5-vl-7b", "llava-onevision-7b", "internvl3-8b", "gemma-3-4b"}
    assert (
        paper_script("llava-1.5-13b", "future_v2t+merge") == "scripts/llava-v1.5-13b/new_eval_future_v2t_kernel_13b.sh"
    )
    for path in (REPO / "configs").rglob("*/*.yaml"):
        config = yaml.safe_load(path.read_text())
        assert set(config) == {"model", "model_args", "tasks", "output_path", "log_samples"}


def run_config(tmp_path, text):
    """Run an lmms-eval ``--config`` file (shrunk for the tiny checkpoints) on two synthetic MileBench samples."""
    text = text.replace("batch_size=8", "batch_size=2,device=cpu,max_new_tokens=4") + "limit: 2\n"
    (tmp_path / "run.yaml").write_text(text)
    env = {**os.environ, **OFFLINE_ENV, "MILEBENCH_DIR": str(write_fake_milebench(tmp_path / "mb", 2))}
    return subprocess.run(
        [*lmms_eval_command(), "--config", "run.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True
    )


@pytest.mark.slow
def test_lmms_eval_runs_a_config_file(tmp_path, tiny_model_dir):
    text = config_text("llava-1.5-7b", "future_v2v+merge", tasks="milebench_tqa", pretrained=str(tiny_model_dir))
    done = run_config(tmp_path, text)
    results = find_results_file(tmp_path / "runs" / "llava-1.5-7b" / "future_v2v_merge")
    assert "milebench_tqa" in results.read_text(), done.stderr[-2000:]
    assert list((tmp_path / "runs" / "llava-1.5-7b" / "future_v2v_merge" / "answer_cache").glob("answers-*.jsonl"))


@pytest.mark.slow
def test_lmms_eval_runs_a_futuremask_config_file(tmp_path):
    from lmms_futuremask.testing.vlms import write_tiny_vlm

    path = write_tiny_vlm("qwen2_5_vl", tmp_path / "qwen")
    text = config_text("qwen2.5-vl-7b", "future_v2v", tasks="milebench_tqa", pretrained=str(path))
    assert "model: futuremask\n" in text
    done = run_config(tmp_path, text)
    results = find_results_file(tmp_path / "runs" / "qwen2.5-vl-7b" / "future_v2v")
    assert "milebench_tqa" in results.read_text(), done.stderr[-2000:]
