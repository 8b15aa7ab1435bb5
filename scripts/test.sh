#!/usr/bin/env bash
# The whole test suite (after scripts/setup.sh): lint, the engine and GUI tests, the QGIS plugin tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
# The QGIS plugin's tests, inside QGIS's Python; their worker runs in .venv (docs/qgis.md).
if [[ -x .venv-qgis/bin/python ]]; then
  RSVLM_APP_PYTHON="$PWD/.venv/bin/python" .venv-qgis/bin/python -m pytest -q -p no:cacheprovider tests/qgis
elif /usr/bin/python3 -c "import qgis.core" >/dev/null 2>&1; then
  echo "test.sh: QGIS is installed but .venv-qgis is missing: run scripts/setup.sh first" >&2
  exit 1
else
  echo "test.sh: QGIS plugin tests NOT run (no QGIS here; scripts/setup.sh --system installs it)" >&2
fi
