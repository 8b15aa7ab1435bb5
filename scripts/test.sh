#!/usr/bin/env bash
# The whole test suite (after scripts/setup.sh): lint, the engine and GUI tests, the QGIS plugin tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
