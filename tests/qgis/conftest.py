"""Fixtures for the plugin's tests, which run INSIDE QGIS's own Python (real QGIS, offscreen).

Run with an interpreter that can import qgis (Debian: /usr/bin/python3, or the .venv-qgis that
scripts/setup.sh makes with --system-site-packages): ``.venv-qgis/bin/python -m pytest tests/qgis``.
The rs-vlm worker runs in the app's own environment: $RSVLM_APP_PYTHON, else the checkout's
.venv/bin/python, with PYTHONPATH = this checkout.

QGIS pitfalls handled here: start_app() without its exit hook (exitQgis() after start_app()
segfaults), and every map layer released before the interpreter exits (a layer still referenced
then segfaults too).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from qgis.core import QgsApplication, QgsProject  # noqa: E402
from qgis.testing import start_app  # noqa: E402

QGIS_APP = start_app(cleanup=False)
# QGIS's own Python plugins (processing) live in its data folder
sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))

REPO = Path(__file__).resolve().parents[2]
PLUGIN_ID = "rsvlm_qgis"


def _find_shared() -> Path:
    if os.environ.get("RSVLM_SHARED"):
        return Path(os.environ["RSVLM_SHARED"])
    for base in (REPO.parent, REPO.parent.parent):
        if (base / "shared" / "samples").is_dir():
            return base / "shared"
    return REPO.parent / "shared"


SAMPLES = _find_shared() / "samples"
NAIP = SAMPLES / "naip_2020_5m.tif"
LANDSAT = SAMPLES / "landsat_2020_4326.tif"


def app_python() -> Path | None:
    explicit = os.environ.get("RSVLM_APP_PYTHON")
    if explicit:
        return Path(explicit)
    candidate = REPO / ".venv" / "bin" / "python"
    return candidate if candidate.exists() else None


def app_checkout() -> Path:
    """The rs-vlm checkout the worker imports: this one ($RSVLM_APP_CHECKOUT overrides)."""
    return Path(os.environ.get("RSVLM_APP_CHECKOUT") or REPO)


def app_env() -> dict[str, str]:
    """The environment of commands run in the app's venv: the checkout first, no hub, no QGIS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QGIS", "GDAL_", "PROJ_"))}
    env.update(PYTHONPATH=str(app_checkout()), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def run_app(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m rs_vlm_app ARGS`` (or ``python -c``) in the app's environment."""
    python = app_python()
    proc = subprocess.run([str(python), *args], cwd=app_checkout(), env=app_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def profiles_dir() -> Path:
    """The test QGIS's profiles folder (start_app made a temporary one)."""
    return Path(QgsApplication.qgisSettingsDirPath()).resolve().parent


@pytest.fixture(scope="session")
def need_app():
    python = app_python()
    if python is None or not python.exists():
        pytest.skip("no rs-vlm app environment: set RSVLM_APP_PYTHON or run scripts/setup.sh (.venv)")
    return python


@pytest.fixture(scope="session")
def installed_plugin(need_app):
    """`rsvlm qgis install` into the test QGIS's own profile, then the plugin package imported from
    there, exactly as QGIS imports it."""
    run_app("-m", "rs_vlm_app", "qgis", "install", "--profiles-dir", str(profiles_dir()), "--profile", "default")
    plugins = profiles_dir() / "default" / "python" / "plugins"
    assert (plugins / PLUGIN_ID / "protocol.py").is_file()
    sys.path.insert(0, str(plugins))
    import rsvlm_qgis

    assert Path(rsvlm_qgis.__file__).resolve().parent == (plugins / PLUGIN_ID).resolve()
    return rsvlm_qgis


_KINDS_SCRIPT = (
    "from rs_vlm_app.jobs.specs import JobSpec, spec_kinds\n"
    "kinds = spec_kinds()\n"
    "print(' '.join(sorted(kinds)))\n"
    "print(' '.join(sorted(k for k, cls in kinds.items() if cls.run is not JobSpec.run)))\n"
)


@pytest.fixture(scope="session")
def _kinds(need_app) -> tuple[set[str], set[str]]:
    lines = run_app("-c", _KINDS_SCRIPT).stdout.splitlines()
    return set(lines[0].split()), set(lines[1].split())


@pytest.fixture(scope="session")
def spec_kinds(_kinds) -> set[str]:
    """The job kinds whose specs the app's worker reads."""
    return _kinds[0]


@pytest.fixture(scope="session")
def worker_kinds(_kinds) -> set[str]:
    """The job kinds the app's worker can run (a kind's spec may land before its run())."""
    return _kinds[1]


def need_kind(kinds: set[str], kind: str) -> None:
    if kind not in kinds:
        pytest.skip(f"the rs-vlm worker cannot run {kind!r} jobs yet (it can: {', '.join(sorted(kinds))})")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, need_app):
    """Tiny CLIP and CoCa models with random weights, built by tests/tinymodels.py in the app's
    environment (QGIS's Python has no torch): {"clip": {"checkpoint", "config"}, "coca": {...}}."""
    folder = tmp_path_factory.mktemp("tiny-models")
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from tests import tinymodels\n"
        "out = Path(sys.argv[1]); result = {}\n"
        "for kind, name in (('clip', 'rsvlm-test-tiny-clip'), ('coca', 'rsvlm-test-tiny-coca')):\n"
        "    config = tinymodels.write_config(out / kind, name, tinymodels.tiny_config(kind))\n"
        "    model = tinymodels.build_model(config, seed=0)\n"
        "    ckpt = tinymodels.save_checkpoint(model, out / kind / f'tiny_{kind}.pt', 'state_dict')\n"
        "    result[kind] = {'config': str(config), 'checkpoint': str(ckpt)}\n"
        "print(json.dumps(result))\n"
    )
    proc = run_app("-c", script, str(folder), timeout=600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def iface():
    from tests.qgis.desktop import DesktopInterface

    desktop = DesktopInterface()
    yield desktop
    desktop.bar.clearWidgets()


@pytest.fixture(scope="session")
def plugin(installed_plugin, iface):
    """The plugin as QGIS starts it: classFactory(iface), initGui(); unload() at the end."""
    instance = installed_plugin.classFactory(iface)
    instance.initGui()
    yield instance
    instance.unload()


@pytest.fixture
def configured(plugin, tiny_models, tmp_path):
    """Settings pointing at the tiny CLIP and CoCa on the CPU, results under tmp_path."""
    from qgis.core import QgsSettings

    s = QgsSettings()
    s.setValue("rs_vlm/clip/model", tiny_models["clip"]["checkpoint"])
    s.setValue("rs_vlm/clip/config", tiny_models["clip"]["config"])
    s.setValue("rs_vlm/caption/model", tiny_models["coca"]["checkpoint"])
    s.setValue("rs_vlm/caption/config", tiny_models["coca"]["config"])
    s.setValue("rs_vlm/device", "cpu")
    s.setValue("rs_vlm/output_dir", str(tmp_path / "results"))
    yield tiny_models
    for key in ("clip/model", "clip/config", "caption/model", "caption/config", "device", "output_dir"):
        s.remove(f"rs_vlm/{key}")


@pytest.fixture(autouse=True)
def _release_layers(iface):
    """No layer outlives a test (a layer referenced at interpreter exit crashes QGIS)."""
    yield
    project = QgsProject.instance()
    project.removeAllMapLayers()
    project.layerTreeRoot().removeAllChildren()
    iface.bar.clearWidgets()
    gc.collect()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """The worker's embedding and model caches live in a fresh folder per test."""
    monkeypatch.setenv("RSVLM_CACHE_DIR", str(tmp_path_factory.mktemp("rsvlm-cache")))


def wait_until(predicate, timeout: float = 120.0, step: float = 0.05) -> bool:
    """Process Qt events until ``predicate()`` is true (False after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QgsApplication.processEvents()
        if predicate():
            return True
        time.sleep(step)
    QgsApplication.processEvents()
    return bool(predicate())


def pytest_sessionfinish(session, exitstatus):
    """Drop every layer and Python reference to QGIS objects while QGIS is still alive."""
    project = QgsProject.instance()
    project.removeAllMapLayers()
    project.clear()
    gc.collect()


def area_layer(scene):
    """Two polygons in EPSG:4326 (the scene is in UTM): the scene's west third (selected) and its east
    tip (not selected)."""
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransform,
        QgsFeature,
        QgsGeometry,
        QgsRectangle,
        QgsVectorLayer,
    )

    to_wgs84 = QgsCoordinateTransform(scene.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    box = scene.extent()
    west = QgsRectangle(box.xMinimum(), box.yMinimum(), box.xMinimum() + box.width() / 3, box.yMaximum())
    east = QgsRectangle(box.xMaximum() - box.width() / 10, box.yMinimum(), box.xMaximum(), box.yMaximum())
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", "area", "memory")
    features = []
    for rect in (west, east):
        geometry = QgsGeometry.fromRect(rect)
        geometry.transform(to_wgs84)
        feature = QgsFeature()
        feature.setGeometry(geometry)
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    layer.updateExtents()
    QgsProject.instance().addMapLayer(layer)
    layer.selectByIds([next(layer.getFeatures()).id()])
    return layer


def heat_map_valid_columns(path: str) -> tuple[int, int, int]:
    """(first, last valid column, width) of a heat map's middle row."""
    from qgis.core import QgsRasterLayer

    heat = QgsRasterLayer(str(path), "heat", "gdal")
    block = heat.dataProvider().block(1, heat.extent(), heat.width(), heat.height())
    row = heat.height() // 2
    valid = [c for c in range(heat.width()) if not block.isNoData(row, c)]
    return valid[0], valid[-1], heat.width()

