#!/usr/bin/env bash
# The main job on the embedded default: a tiny random LLaVA checkpoint and a small synthetic image task,
# evaluated by the real lmms-eval CLI with llava_futuremask once per mode; prints the score table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
exec .venv/bin/lmms-futuremask demo --out runs/demo "$@"
