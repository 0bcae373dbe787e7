"""A wheel install works as well as the editable one: built from this tree, installed into a scratch folder, then
``report`` (which reads the paper's tables shipped as package data) and a MileBench task build run from it."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory):
    """The wheel of this tree, installed (without its dependencies, which the venv has) into a scratch folder."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(root)],
        check=True,
    )
    (wheel,) = root.glob("lmms_futuremask-*.whl")
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True
    )
    return wheel, site


def run_from(site: Path, code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Python code run with the wheel's copy first on the path, from a folder outside the repository."""
    environment = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **env}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True, text=True, check=False
    )


@pytest.mark.slow
def test_the_wheel_ships_everything_and_nothing_at_the_top_level(wheel_site):
    wheel, _ = wheel_site
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"lmms_futuremask"}, tops  # no generic top-level model_wrappers package
    for needed in (
        "lmms_futuremask/data/paper_table4_llava15.csv",
        "lmms_futuremask/tasks/milebench/_default_template_yaml",
        "lmms_futuremask/tasks/milebench/milebench_tqa.yaml",
        "lmms_futuremask/tasks/milebench/utils.py",
        "lmms_futuremask/model_wrappers/manifest.py",
        "lmms_futuremask/testing/vlms/qwen.py",
    ):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "lmms_futuremask.model_wrappers.manifest:manifests" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_report_runs_from_the_wheel(wheel_site, tmp_path):
    _, site = wheel_site
    run = tmp_path / "run" / "model"
    run.mkdir(parents=True)
    results = {
        "results": {"milebench_tqa": {"accuracy,none": 0.5}},
        "config": {"model_args": "pretrained=x/llava-1.5-7b-hf"},
    }
    (run / "20260101_000000_results.json").write_text(json.dumps(results))
    code = (
        "import lmms_futuremask, sys; from lmms_futuremask.cli import main\n"
        f"assert lmms_futuremask.__file__.startswith({str(site)!r}), lmms_futuremask.__file__\n"
        f"sys.exit(main(['report', {str(tmp_path / 'run')!r}, '--out', {str(tmp_path / 'report')!r}]))"
    )
    done = run_from(site, code, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "paper: original" in (tmp_path / "report" / "report.md").read_text()  # the packaged Table 4


@pytest.mark.slow
def test_milebench_tasks_build_from_the_wheel(wheel_site, tmp_path):
    from lmms_futuremask.milebench.fake import write_fake_milebench

    _, site = wheel_site
    data = write_fake_milebench(tmp_path / "mb", samples_per_task=1)
    code = (
        "from lmms_eval.tasks import TaskManager, get_task_dict\n"
        "from lmms_futuremask.model_wrappers import manifest\n"
        f"assert manifest.__file__.startswith({str(site)!r}), manifest.__file__\n"
        "manifest.add_task_folder(TaskManager)\n"
        "task = get_task_dict(['milebench_tqa'], TaskManager())['milebench_tqa']\n"
        "print('built', type(task).__name__, len(task.test_docs()))"
    )
    done = run_from(site, code, tmp_path, MILEBENCH_DIR=str(data))
    assert "built MileBenchTask 1" in done.stdout, done.stderr[-2000:]
