"""Runs in a fresh QGIS process (tests/qgis/test_setup.py starts it): a new profile folder, the plugin
installed from the zip with QGIS's own "Install from ZIP" unzip code, then the "Set up rs-vlm"
dialog driven like a user would, and a localization through the plugin's Processing algorithm
with the environment it made. Prints one JSON report as its last stdout line.

usage: python setup_driver.py CONFIG.json   (keys: see ``main``)

The environments it builds reuse the test machine's already installed heavy packages (torch & co.)
through a .pth file written right after the environment is created, so pip finds them satisfied
and installs only rs-vlm's wheel: minutes, not a torch download.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path


def _start_qgis(profile: Path):
    """QGIS as its desktop starts it: settings in <profile>/QGIS/QGIS3.ini, the profile folder as
    qgisSettingsDirPath() (start_app() would use a throw-away one and the user's ~/.config)."""
    from qgis.PyQt.QtCore import QCoreApplication, QSettings

    QCoreApplication.setOrganizationName("QGIS")
    QCoreApplication.setOrganizationDomain("qgis.org")
    QCoreApplication.setApplicationName("QGIS3")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(profile))
    from qgis.core import QgsApplication

    app = QgsApplication([b"qgis"], True, str(profile))
    app.initQgis()
    return app


def main(config: dict, report: dict) -> None:
    profile = Path(config["profile"])
    app = _start_qgis(profile)  # noqa: F841 - kept alive until os._exit
    from qgis.core import QgsApplication, QgsProject, QgsSettings

    report["settings_dir"] = QgsApplication.qgisSettingsDirPath()
    report["settings_file"] = QgsSettings().fileName()

    # -- Plugins > Manage and Install Plugins > Install from ZIP ---------------------------------------
    sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python"))
    sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))
    from pyplugin_installer.unzip import unzip

    plugins = profile / "python" / "plugins"
    unzip(config["zip"], str(plugins))
    report["plugin_files"] = sorted(str(p.relative_to(plugins)) for p in plugins.rglob("*") if p.is_file())
    sys.path.insert(0, str(plugins))
    sys.path.append(config["repo"])  # tests.qgis.desktop only; rsvlm_qgis must stay the profile's plugin
    import qgis.utils

    from tests.qgis.desktop import DesktopInterface

    iface = DesktopInterface()
    qgis.utils.iface = iface
    report["loaded"] = qgis.utils.loadPlugin("rsvlm_qgis") and qgis.utils.startPlugin("rsvlm_qgis")
    plugin = qgis.utils.plugins["rsvlm_qgis"]
    import rsvlm_qgis
    from rsvlm_qgis import envsetup, settings

    report["plugin_path"] = str(Path(rsvlm_qgis.__file__).resolve().parent)
    report["offer"] = iface.messages()
    report["engine_before"] = settings.load_config().python

    # -- the dialog, opened from the offer's button ------------------------------------------------------
    from qgis.PyQt.QtWidgets import QPushButton

    offer_buttons = [b for b in iface.bar.findChildren(QPushButton) if b.text().startswith("Set up rs-vlm")]
    report["offer_buttons"] = len(offer_buttons)
    offer_buttons[0].click()
    dialog = plugin.setup.dialog
    report["detected"] = dialog.wait_detected(60)
    report["builds"] = [dialog.build.itemText(i) for i in range(dialog.build.count())]
    report["installers"] = [dialog.tool.itemData(i) for i in range(dialog.tool.count())]
    envs = Path(dialog.envs_root)

    def env_folders() -> list[str]:
        return sorted(p.name for p in envs.iterdir()) if envs.is_dir() else []

    def run(wheelhouse: str, cancel_at: str = "") -> dict:
        dialog.python.setFilePath(config["base_python"])
        dialog.tool.setCurrentIndex(dialog.tool.findData("pip"))
        dialog.from_wheelhouse.setChecked(True)
        dialog.wheelhouse.setFilePath(wheelhouse)
        started = time.monotonic()
        dialog.start()
        cancelled_at = ""
        if cancel_at:
            from rsvlm_qgis.setup_dialog import _process_until

            _process_until(lambda: cancel_at in dialog.status_text(), 300)
            cancelled_at = dialog.status_text()
            dialog.cancel_button.click()
        result = dialog.wait_finished(900)
        return {"status": result.status if result else "timeout", "message": result.message if result else "",
                "step": result.step if result else "", "python": result.python if result else "",
                "status_text": dialog.status_text(), "progress": dialog.progress.value(),
                "cancelled_at": cancelled_at, "seconds": round(time.monotonic() - started, 1),
                "envs": env_folders(), "engine": settings.load_config().python,
                "origin": settings.load_config().python_origin, "log_tail": (result.log if result else [])[-8:]}

    # 1. a wheelhouse without rs-vlm's wheel: refused before anything is created
    report["empty_wheelhouse"] = run(config["empty_wheelhouse"])

    # every later environment reuses the machine's installed packages (see the module docstring)
    class Reusing(envsetup.Installer):
        def create(self):
            super().create()
            site = next(self.env_dir.glob("lib/python3*/site-packages"))
            for own in [*site.glob("setuptools*"), *site.glob("pkg_resources"), *site.glob("_distutils_hack"),
                        *site.glob("distutils-precedence.pth")]:  # ensurepip's old setuptools would shadow torch's
                if own.is_dir():
                    import shutil

                    shutil.rmtree(own)
                else:
                    own.unlink()
            (site / "rsvlm-test-reuse.pth").write_text(config["reuse_site"] + "\n")

    original = envsetup.Installer
    envsetup.Installer = Reusing

    # 2. cancelled while the environment is being created: its folder goes, nothing recorded
    report["cancelled"] = run(config["wheelhouse"], cancel_at="create the environment")

    # 3. the real set-up
    report["setup"] = run(config["wheelhouse"])
    s = QgsSettings()
    report["recorded"] = {k: str(s.value(f"rs_vlm/engine/{k}", "")) for k in ("python", "env", "summary")}
    first_engine = report["setup"]["engine"]
    marker = envsetup.read_marker(Path(report["recorded"]["env"]))
    report["marker"] = marker

    # 4. a later set-up whose wheelhouse lacks the dependencies: fails, the first engine stays in use
    envsetup.Installer = original  # no reuse: pip must find every wheel in the wheelhouse
    report["missing_wheel"] = run(config["wheelhouse"])
    report["engine_after_failure"] = settings.load_config().python
    dialog.close()

    # -- a localization through the Processing algorithm, on the set-up engine -----------------------------
    import processing
    from processing.core.Processing import Processing

    Processing.initialize()
    out = Path(config["out"])
    result = processing.run("rsvlm:localize", {
        "INPUT": config["scene"], "QUERY": "a river", "MODEL": config["checkpoint"],
        "MODEL_CONFIG": config["model_config"], "DEVICE": 2, "GRID": "256",
        "OUTPUT_HEATMAP": str(out / "heat.tif"), "OUTPUT_HOTSPOTS": str(out / "spots.gpkg")})
    report["localize"] = {"heatmap": result["OUTPUT_HEATMAP"], "hotspots": str(result["OUTPUT_HOTSPOTS"]),
                          "count": result.get("HOTSPOT_COUNT")}
    hello = plugin.service.hello
    report["worker_pid"] = hello.pid if hello is not None else 0
    with open(f"/proc/{report['worker_pid']}/cmdline", "rb") as handle:
        report["worker_argv"] = handle.read().decode().split("\0")[:5]
    report["first_engine"] = first_engine
    plugin_instance = plugin
    qgis.utils.unloadPlugin("rsvlm_qgis")
    del plugin_instance
    QgsProject.instance().removeAllMapLayers()


if __name__ == "__main__":
    config = json.loads(Path(sys.argv[1]).read_text())
    report: dict = {}
    try:
        main(config, report)
    except BaseException:
        report["crash"] = traceback.format_exc()
    sys.stdout.write("\n" + json.dumps(report) + "\n")
    sys.stdout.flush()
    os._exit(0)  # never exitQgis() (it segfaults after this kind of start)
