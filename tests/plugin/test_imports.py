"""The library imports without lmms-eval (the GPU machine has none): only the adapters and task glue need it."""

import subprocess
import sys

import pytest

MODULES = [
    "lmms_futuremask",
    "lmms_futuremask.attention.integration",
    "lmms_futuremask.attention.merge",
    "lmms_futuremask.attention.backends",
    "lmms_futuremask.attention.segments",
    "lmms_futuremask.runtime.continuation",
    "lmms_futuremask.runtime.runner",
    "lmms_futuremask.experiments.bench",
    "lmms_futuremask.cli",
    "lmms_futuremask.experiments.report",
    "lmms_futuremask.experiments.sweep",
    "lmms_futuremask.experiments.plots",
    "lmms_futuremask.experiments.configs",
    "lmms_futuremask.milebench",
    "lmms_futuremask.milebench.task_hooks",
    "lmms_futuremask.milebench.download",
    "lmms_futuremask.milebench.rescore",
]


@pytest.mark.slow
def test_library_imports_without_lmms_eval():
    code = "import sys; sys.modules['lmms_eval'] = None\n" + "\n".join(f"import {m}" for m in MODULES)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_scoring_and_rescore_import_without_torch():
    """The package root is lazy: scoring a MileBench answer needs neither torch nor transformers."""
    code = (
        "import sys\n"
        "import lmms_futuremask, lmms_futuremask.milebench.scoring, lmms_futuremask.milebench.rescore\n"
        "import lmms_futuremask.experiments.stats\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'lmms_eval') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "assert lmms_futuremask.milebench.scoring.score_prediction\n"
        "assert callable(lmms_futuremask.enable) and 'torch' in sys.modules  # the public API loads on first use\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
