#!/usr/bin/env bash
# Set up rs-vlm on a fresh Linux machine: a virtualenv in .venv with the app and every extra.
#   bash scripts/setup.sh             # Python packages only
#   bash scripts/setup.sh --system    # also Debian packages (QGIS, Xvfb, Qt runtime libs); needs root/sudo
# Idempotent: a second run only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [[ "${1:-}" == "--system" ]]; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # qgis + python3-qgis: the plugin's tests run inside Debian's QGIS; xvfb: screenshots;
  # the Qt runtime libraries let PyQt6 run offscreen.
  $SUDO apt-get install -y -qq --no-install-recommends \
    qgis python3-qgis python3-venv xvfb xauth libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned (pyproject.toml says why); everything else resolves from the project's metadata.
.venv/bin/python -m pip install -q -e ".[gui,serving,eval,train,distributed,dev]"
.venv/bin/rsvlm --version

# The QGIS plugin's tests run in QGIS's own Python: a venv over the system one (which has qgis),
# with pytest added. Only where Debian's QGIS is installed (setup.sh --system).
if /usr/bin/python3 -c "import qgis.core" >/dev/null 2>&1; then
  if [[ ! -x .venv-qgis/bin/python ]]; then
    /usr/bin/python3 -m venv --system-site-packages .venv-qgis
  fi
  .venv-qgis/bin/python -m pip install -q "pytest>=8" "pytest-timeout>=2.3"
fi
