"""The plugin runs inside QGIS's Python: it may import only qgis.*, the standard library and the
worker protocol, must never pull torch, open_clip or rasterio into QGIS's process, and must keep to
code that runs on both QGIS 3 (Qt5) and QGIS 4 (Qt6)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.qgis.conftest import NAIP, REPO, app_checkout, app_python, profiles_dir

PLUGIN_SOURCE = REPO / "plugin_qgis"
PROTOCOL = REPO / "rs_vlm_app" / "jobs" / "protocol.py"
CLIENT = REPO / "rs_vlm_app" / "jobs" / "client.py"
#: never in QGIS's process (torch/open_clip crash QGIS; rasterio runs on QGIS's older GDAL)
FORBIDDEN_AT_RUNTIME = ("torch", "open_clip", "rasterio", "transformers", "torchvision", "rs_vlm_app",
                        "safetensors", "pyogrio")


def _imports(path: Path) -> list[tuple[int, str, int]]:
    """(line, module, level) of every import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.lineno, node.module or "", node.level))
    return out


def _allowed(module: str, level: int) -> bool:
    top = module.split(".")[0]
    return level > 0 or top in ("qgis", "__future__") or top in sys.stdlib_module_names


def test_plugin_modules_import_only_qgis_and_the_standard_library():
    files = sorted(PLUGIN_SOURCE.rglob("*.py"))
    assert len(files) >= 10
    bad = [f"{f.relative_to(REPO)}:{line}: import {module}" for f in files
           for line, module, level in _imports(f) if not _allowed(module, level)]
    assert not bad, "plugin modules import outside qgis.* and the standard library:\n" + "\n".join(bad)


def test_the_protocol_the_plugin_ships_is_standard_library_only():
    bad = [f"{line}: {module}" for line, module, level in _imports(PROTOCOL) if not _allowed(module, level)]
    assert not bad


def test_the_client_the_plugin_ships_imports_the_standard_library_and_the_protocol_only():
    imports = _imports(CLIENT)
    bad = [f"{line}: {module}" for line, module, level in imports
           if level == 0 and not _allowed(module, level)]
    relative = {(module, level) for _line, module, level in imports if level > 0}
    assert not bad and relative == {("", 1)}
    assert "from . import protocol" in CLIENT.read_text(encoding="utf-8")


def test_plugin_code_keeps_to_qt6_compatible_spellings():
    """Qt6 removed exec_() and unscoped enums (Qt.AlignLeft); compiled .ui files are not used."""
    problems = []
    for path in sorted(PLUGIN_SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "exec_":
                problems.append(f"{path.name}:{node.lineno}: exec_()")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Qt" \
                    and not isinstance(parents.get(node), ast.Attribute):
                problems.append(f"{path.name}:{node.lineno}: unscoped Qt.{node.attr}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".ui"):
                problems.append(f"{path.name}:{node.lineno}: .ui file {node.value}")
    assert not list(PLUGIN_SOURCE.rglob("*.ui"))
    assert not problems, "\n".join(problems)


RUNTIME_CHECK = r"""
import json, os, pkgutil, sys
from qgis.testing import start_app
app = start_app(cleanup=False)
plugins_dir, repo, python, pythonpath, scene, checkpoint, config, out = sys.argv[1:9]
sys.path.insert(0, repo)
sys.path.insert(0, plugins_dir)  # first: the plugin as installed, not the checkout's
from qgis.core import QgsApplication, QgsProject, QgsSettings
import rsvlm_qgis
from tests.qgis.desktop import DesktopInterface
iface = DesktopInterface()
plugin = rsvlm_qgis.classFactory(iface)
plugin.initGui()
for module in pkgutil.walk_packages(rsvlm_qgis.__path__, "rsvlm_qgis."):
    __import__(module.name)
s = QgsSettings()
s.setValue("rs_vlm/python", python)
s.setValue("rs_vlm/pythonpath", pythonpath)
sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))
from processing.core.Processing import Processing
import processing
Processing.initialize()
result = processing.run("rsvlm:localize", {
    "INPUT": scene, "QUERY": "a river", "MODEL": checkpoint, "MODEL_CONFIG": config, "DEVICE": 2,
    "GRID": "256", "OUTPUT_HEATMAP": os.path.join(out, "heat.tif"), "OUTPUT_HOTSPOTS": os.path.join(out, "spots.gpkg")})
worker_pid = plugin.service.hello.pid
plugin.unload()
import time
for _ in range(100):  # unload stops the persistent worker
    try:
        os.kill(worker_pid, 0)
    except ProcessLookupError:
        break
    time.sleep(0.1)
else:
    raise SystemExit(f"the worker {worker_pid} still runs after unload")
if QgsApplication.processingRegistry().providerById("rsvlm") is not None:
    raise SystemExit("the provider is still registered after unload")
QgsProject.instance().removeAllMapLayers()
forbidden = sorted(m for m in sys.modules if m.split(".")[0] in json.loads(os.environ["FORBIDDEN"]))
print(json.dumps({"forbidden": forbidden, "worker_pid": worker_pid, "our_pid": os.getpid(),
                  "heatmap": result["OUTPUT_HEATMAP"]}))
sys.stdout.flush()
os._exit(0)
"""


@pytest.mark.slow
def test_running_a_job_loads_no_ml_library_into_qgis(installed_plugin, tiny_models, tmp_path):
    """In a fresh QGIS process: load the plugin, start its GUI, import every module, run a
    localization through Processing; the worker did the work with torch, QGIS never imported it."""
    import os

    plugins = profiles_dir() / "default" / "python" / "plugins"
    env = dict(os.environ, FORBIDDEN=json.dumps(FORBIDDEN_AT_RUNTIME), QT_QPA_PLATFORM="offscreen",
               RSVLM_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-c", RUNTIME_CHECK, str(plugins), str(REPO), str(app_python()), str(app_checkout()),
         str(NAIP), tiny_models["clip"]["checkpoint"], tiny_models["clip"]["config"], str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(report["heatmap"]).is_file()
    assert report["worker_pid"] != report["our_pid"]
    assert report["forbidden"] == []
