"""The library imports without lmms-eval (the GPU machine has none): only the adapters and task glue need it."""

import subprocess
import sys

MODULES = [
    "lmms_futuremask",
    "lmms_futuremask.integration",
    "lmms_futuremask.merge",
    "lmms_futuremask.backends",
    "lmms_futuremask.segments",
    "lmms_futuremask.inference",
    "lmms_futuremask.runner",
    "lmms_futuremask.bench",
    "lmms_futuremask.cli",
    "lmms_futuremask.report",
    "lmms_futuremask.sweep",
    "lmms_futuremask.plots",
    "lmms_futuremask.configs",
    "lmms_futuremask.milebench",
    "lmms_futuremask.milebench.task_hooks",
    "lmms_futuremask.milebench.download",
    "lmms_futuremask.milebench.rescore",
]


def test_library_imports_without_lmms_eval():
    code = "import sys; sys.modules['lmms_eval'] = None\n" + "\n".join(f"import {m}" for m in MODULES)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
