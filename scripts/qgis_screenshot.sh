#!/usr/bin/env bash
# docs/images/qgis.png: start the real QGIS desktop under Xvfb with the plugin installed into a
# throw-away profile, ask the panel a query on a sample scene, save the window (see qgis_screenshot.py).
#   bash scripts/qgis_screenshot.sh [OUT.png]     (after scripts/setup.sh --system)
# RSVLM_SHOT_MODEL / RSVLM_SHOT_MODEL_CONFIG choose the model (default: the catalogue's default).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-docs/images/qgis.png}")
python=${RSVLM_APP_PYTHON:-$PWD/.venv/bin/python}
scene=${RSVLM_SHOT_SCENE:-$(realpath -m ../shared/samples/naip_2020_5m.tif)}
[[ -f "$scene" ]] || scene=$(realpath -m ../../shared/samples/naip_2020_5m.tif)
work=$(mktemp -d)
trap 'rm -rf "$work" "$out.tmp.png"' EXIT
"$python" -m rs_vlm_app qgis install --profiles-dir "$work/profiles" >/dev/null
RSVLM_SHOT_SCENE="$scene" RSVLM_SHOT_OUT="$out.tmp.png" HOME="$work" \
  timeout 900 xvfb-run -a -s "-screen 0 1600x1000x24" \
  qgis --profiles-path "$work" --nologo --noversioncheck --code scripts/qgis_screenshot.py
# 256 colours keep the PNG small (< 300 KB) for the docs
"$python" -c "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('RGB').quantize(256).save(sys.argv[2], optimize=True)" \
  "$out.tmp.png" "$out"
rm -f "$out.tmp.png"
echo "wrote $out"
