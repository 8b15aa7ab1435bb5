"""The screenshot of docs/images/qgis.png: the real QGIS desktop, the rs-vlm panel, a heat map.

Run by QGIS itself (`qgis --code scripts/qgis_screenshot.py`) with the plugin installed in the
profile QGIS starts with; `bash scripts/qgis_screenshot.sh` does all of it under Xvfb. Settings come
from the environment: RSVLM_SHOT_SCENE (a raster), RSVLM_SHOT_QUERY, RSVLM_SHOT_OUT (the .png),
RSVLM_SHOT_MODEL / RSVLM_SHOT_MODEL_CONFIG (optional: the model to use).
"""

import os
import traceback

from qgis.core import QgsApplication, QgsProject, QgsSettings
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

SCENE = os.environ["RSVLM_SHOT_SCENE"]
QUERY = os.environ.get("RSVLM_SHOT_QUERY", "a river crossing fields")
OUT = os.environ["RSVLM_SHOT_OUT"]

state = {"waited": 0, "task": None, "panel": None}


def main():
    settings = QgsSettings()
    for key, variable in (("clip/model", "RSVLM_SHOT_MODEL"), ("clip/config", "RSVLM_SHOT_MODEL_CONFIG")):
        if os.environ.get(variable):
            settings.setValue(f"rs_vlm/{key}", os.environ[variable])
    settings.setValue("rs_vlm/device", "cpu")
    settings.setValue("rs_vlm/grid", os.environ.get("RSVLM_SHOT_GRID", "128,256@0.5"))
    iface.mainWindow().resize(1500, 900)
    layer = iface.addRasterLayer(SCENE, os.path.splitext(os.path.basename(SCENE))[0])
    QgsProject.instance().layerTreeRoot().findLayer(layer.id()).setExpanded(False)
    panel = plugins["rsvlm_qgis"].panel
    panel.show()
    panel.raise_()
    panel.layer_combo.setLayer(layer)
    panel.query.setText(QUERY)
    state["panel"], state["task"] = panel, panel.run_localize()


def poll():
    panel, task = state["panel"], state["task"]
    state["waited"] += 1
    if task is not None and task in panel.tasks and state["waited"] < 2400:
        return
    timer.stop()
    iface.mapCanvas().zoomToFullExtent()
    iface.mapCanvas().refresh()
    QTimer.singleShot(4000, shoot)


def shoot():
    iface.mainWindow().grab().save(OUT)
    print(f"screenshot: {OUT}; panel status: {state['panel'].status.text()}", flush=True)
    QgsApplication.exit(0)


try:
    main()
except Exception:  # a broken setup must end QGIS, not leave it waiting under Xvfb
    traceback.print_exc()
    QgsApplication.exit(1)
else:
    timer = QTimer()
    timer.timeout.connect(poll)
    timer.start(250)
