"""qgis_process (QGIS's command-line Processing runner) finds the installed plugin, lists and runs
its algorithms. Debian's `qgis_process` wrapper script is broken: the binary is called directly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from qgis.core import QgsRasterLayer, QgsVectorLayer

from tests.qgis.conftest import NAIP, run_app

QGIS_PROCESS = shutil.which("qgis_process.bin") or shutil.which("qgis_process")


@pytest.fixture
def home(tmp_path, need_app):
    """A fresh home folder whose default QGIS profile has the plugin installed by `rsvlm qgis install`."""
    if QGIS_PROCESS is None:
        pytest.skip("qgis_process is not installed")
    home = tmp_path / "home"
    profiles = home / ".local" / "share" / "QGIS" / "QGIS3" / "profiles"
    (profiles / "default").mkdir(parents=True)
    run_app("-m", "rs_vlm_app", "qgis", "install", "--profiles-dir", str(profiles))
    return home


def qgis_process(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QGIS", "XDG_DATA_HOME", "PYTHONPATH"))}
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", RSVLM_CACHE_DIR=str(home / "cache"))
    return subprocess.run([QGIS_PROCESS, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=home)


def test_qgis_process_lists_the_enabled_plugin_and_its_algorithms(home):
    plugins = qgis_process(home, "plugins")
    assert plugins.returncode == 0, plugins.stderr
    assert "* rsvlm_qgis" in plugins.stdout  # installed and enabled
    listing = qgis_process(home, "list")
    assert "rsvlm:localize\tSemantic localization" in listing.stdout
    help_text = qgis_process(home, "help", "rsvlm:localize")
    assert help_text.returncode == 0
    for name in ("INPUT", "QUERY", "HOTSPOT_THRESHOLD", "MODEL", "DEVICE", "OUTPUT_HEATMAP", "OUTPUT_HOTSPOTS"):
        assert name in help_text.stdout


@pytest.mark.slow
def test_qgis_process_runs_a_localization(home, tiny_models, tmp_path):
    out = tmp_path / "out"
    proc = qgis_process(
        home, "--json", "run", "rsvlm:localize", "--",
        f"INPUT={NAIP}", "QUERY=a river", "GRID=256", f"MODEL={tiny_models['clip']['checkpoint']}",
        f"MODEL_CONFIG={tiny_models['clip']['config']}", "DEVICE=2",
        f"OUTPUT_HEATMAP={out / 'river.tif'}", f"OUTPUT_HOTSPOTS={out / 'river.gpkg'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)["results"]
    assert results["OUTPUT_HEATMAP"] == str(out / "river.tif")
    heat = QgsRasterLayer(results["OUTPUT_HEATMAP"], "heat", "gdal")
    assert heat.isValid() and heat.crs().authid() == "EPSG:26914"
    spots = QgsVectorLayer(results["OUTPUT_HOTSPOTS"], "spots", "ogr")
    assert spots.featureCount() == results["HOTSPOT_COUNT"] >= 1
    del heat, spots


def test_qgis_process_reports_a_worker_error_and_fails(home, tmp_path):
    proc = qgis_process(home, "run", "rsvlm:localize", "--", f"INPUT={NAIP}", "QUERY=a river",
                        f"MODEL={tmp_path / 'nowhere.pt'}", f"OUTPUT_HEATMAP={tmp_path / 'h.tif'}",
                        f"OUTPUT_HOTSPOTS={tmp_path / 'h.gpkg'}")
    assert proc.returncode != 0
    assert "nowhere.pt" in proc.stdout + proc.stderr and "not found" in proc.stdout + proc.stderr
    assert not (tmp_path / "h.tif").exists()
