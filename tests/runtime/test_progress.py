"""A running variant reports how far it is: the runner's progress file, read by the sweep while it waits."""

import os
import subprocess
import sys
import textwrap

import pytest

from lmms_futuremask.experiments.evalrun import _wait
from lmms_futuremask.runtime.progress import PROGRESS_ENV, Progress, ProgressFile, read_progress


def test_progress_reads_like_a_clock():
    progress = Progress("generate", total=480, cached=30, done=120, started=1000.0, updated=1723.0)
    # 723 s for 120 samples: 360 more take 2169 s
    assert progress.describe(now=1723.0) == "generate 120/480 samples (30 cached), 0:12:03 elapsed, ETA 0:36:09"
    assert (
        Progress("loglikelihood", 10, 0, 0, 0.0, 0.0).describe(now=5.0) == "loglikelihood 0/10 samples, 0:00:05 elapsed"
    )
    assert "ETA" not in Progress("generate", 4, 0, 4, 0.0, 0.0).describe(now=60.0)


def test_progress_file_only_with_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    ProgressFile("generate", 3, 0).advance(1)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv(PROGRESS_ENV, str(tmp_path / "progress.json"))
    progress = ProgressFile("generate", 3, 1)
    progress.advance(2)
    state = read_progress(tmp_path / "progress.json")
    assert (state.kind, state.done, state.total, state.cached) == ("generate", 2, 3, 1)
    assert read_progress(tmp_path / "missing.json") is None


@pytest.mark.slow
def test_the_waiting_sweep_hears_a_childs_progress(tmp_path):
    """A child that advances through 3 batches while the parent waits, polling every 0.2 s."""
    path = tmp_path / "progress.json"
    child = textwrap.dedent(
        """
        import time
        from lmms_futuremask.runtime.progress import ProgressFile
        progress = ProgressFile("generate", 3, 0)
        for _ in range(3):
            time.sleep(0.6)
            progress.advance(1)
        time.sleep(0.6)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", child], env={**os.environ, PROGRESS_ENV: str(path)})
    heard = []
    _wait(process, path, heard.append, every=0.2)
    assert process.returncode == 0
    done = [line.split()[1] for line in heard]
    assert done == sorted(set(done)) and "3/3" in done and len(done) >= 3, heard  # each change once, in order
    assert all(line.startswith("generate ") and "elapsed" in line for line in heard)
