#!/usr/bin/env bash
# Create .venv at the repo root (once) and install the package with its test extra into it.
# Re-installs only when setup.cfg or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.lmms-futuremask-$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "[setup] installing lmms-futuremask and its dependencies into .venv (first time: a few minutes)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[test]"
    rm -f .venv/.lmms-futuremask-*
    touch "$stamp"
fi
