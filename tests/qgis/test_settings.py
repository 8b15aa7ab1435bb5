"""Where the plugin finds the app's Python, the worker's clean environment, the settings dialog
and its "Test connection" against a real worker."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from qgis.core import QgsSettings

from tests.qgis.conftest import app_checkout, app_python, profiles_dir, wait_until


@pytest.fixture
def rs(installed_plugin):
    """The installed plugin's modules."""
    import rsvlm_qgis.appenv  # noqa: F401 - loads the submodules onto the package
    import rsvlm_qgis.settings  # noqa: F401 - makes installed_plugin.settings available

    return installed_plugin


@pytest.fixture
def clean_python_setting():
    s = QgsSettings()
    saved = {k: s.value(f"rs_vlm/{k}") for k in ("python", "pythonpath")}
    s.remove("rs_vlm/python")
    s.remove("rs_vlm/pythonpath")
    yield
    for key, value in saved.items():
        if value:
            s.setValue(f"rs_vlm/{key}", value)
        else:
            s.remove(f"rs_vlm/{key}")


def _script(path: Path, first_line: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{first_line}\nimport sys\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_the_python_recorded_by_install_is_used(rs, clean_python_setting):
    record = json.loads((profiles_dir() / "default" / "rs_vlm" / "app.json").read_text())
    config = rs.settings.load_config()
    assert config.python == record["python"] == str(app_python())
    assert config.pythonpath == str(app_checkout())
    assert config.python_origin == "install"


def test_a_python_chosen_in_settings_wins_and_reset_returns_to_the_recorded_one(rs, clean_python_setting, tmp_path):
    chosen = _script(tmp_path / "env" / "bin" / "python3", "#!/bin/sh")
    config = rs.settings.load_config()
    from dataclasses import replace

    rs.settings.save_config(replace(config, python=str(chosen), pythonpath="", python_origin="settings"))
    assert rs.settings.load_config().python == str(chosen)
    assert rs.settings.load_config().python_origin == "settings"
    rs.settings.save_config(replace(rs.settings.load_config(), python_origin="install"))
    assert rs.settings.load_config().python == str(app_python())


def test_rsvlm_on_path_gives_its_interpreter(rs, tmp_path, monkeypatch):
    venv = tmp_path / "venv" / "bin"
    python = _script(venv / "python", "#!/bin/sh")
    _script(venv / "rsvlm", f"#!{python}")
    monkeypatch.setenv("PATH", f"{venv}{os.pathsep}{os.environ['PATH']}")
    assert rs.settings.python_on_path() == str(python)
    # a script installed elsewhere names its interpreter in its #! line
    other = _script(tmp_path / "bin" / "rsvlm", "#!/opt/rs-vlm/bin/python3.11")
    assert rs.settings.python_of_script(other) == "/opt/rs-vlm/bin/python3.11"
    env_style = _script(tmp_path / "bin2" / "rsvlm", "#!/usr/bin/env python3")
    assert rs.settings.python_of_script(env_style) == (__import__("shutil").which("python3") or "")


def test_model_choice_becomes_the_job_specs_model(rs, tmp_path):
    choice = rs.settings.ModelChoice
    assert choice("GeoRSCLIP-ViT-B-32").to_spec("cuda") == {"name": "GeoRSCLIP-ViT-B-32", "device": "cuda"}
    ckpt = tmp_path / "w.safetensors"
    ckpt.write_bytes(b"")
    spec = choice(str(ckpt), "ViT-B-32", "").to_spec("cpu")
    assert spec == {"checkpoint": str(ckpt), "arch": "ViT-B-32", "device": "cpu"}
    assert choice("").to_spec("auto") == {"device": "auto"}
    assert choice("").describe() == "the catalogue's default"


def test_worker_environment_drops_qgis_python_gdal_proj_and_library_paths(rs):
    base = {
        "HOME": "/home/u", "PATH": "/usr/bin", "LANG": "C.UTF-8", "RSVLM_CACHE_DIR": "/c",
        "PYTHONPATH": "/usr/share/qgis/python", "PYTHONHOME": "/x", "GDAL_DATA": "/usr/share/gdal",
        "GDAL_DRIVER_PATH": "/q", "PROJ_LIB": "/usr/share/proj", "PROJ_DATA": "/p", "LD_LIBRARY_PATH": "/opt/qgis/lib",
        "QT_PLUGIN_PATH": "/qt", "QGIS_PREFIX_PATH": "/usr", "CPL_DEBUG": "ON",
    }
    env = rs.appenv.worker_environment(base, pythonpath="/src/rs-vlm")
    for gone in ("PYTHONHOME", "GDAL_DATA", "GDAL_DRIVER_PATH", "PROJ_LIB", "PROJ_DATA", "LD_LIBRARY_PATH",
                 "QT_PLUGIN_PATH", "QGIS_PREFIX_PATH", "CPL_DEBUG"):
        assert gone not in env
    assert env["PYTHONPATH"] == "/src/rs-vlm"
    assert env["HOME"] == "/home/u" and env["PATH"] == "/usr/bin" and env["RSVLM_CACHE_DIR"] == "/c"
    assert "PYTHONPATH" not in rs.appenv.worker_environment(base)
    win = rs.appenv.worker_environment({"Path": r"C:\OSGeo4W\bin;C:\Windows;C:\OSGeo4W\apps\qgis\bin;C:\venv\Scripts"},
                                       qgis_prefix=r"C:\OSGeo4W", platform="win32")
    assert win["Path"] == r"C:\Windows;C:\venv\Scripts"


def test_test_connection_shows_the_workers_versions_and_device(rs, clean_python_setting, iface):
    from rsvlm_qgis.settings_dialog import SettingsDialog

    dialog = SettingsDialog(iface.mainWindow())
    widget = dialog.widget
    assert widget.python.filePath() == str(app_python())
    assert "rsvlm qgis install" in widget.origin.text()
    widget.test_button.click()
    text = widget.wait_for_test(300)
    assert "✔" in text, text
    assert "rs-vlm 0.1.0" in text and "Python 3." in text and "torch " in text
    assert "device: cpu" in text
    dialog.deleteLater()


@pytest.mark.parametrize("python, expected", [
    (sys.executable, "cannot run rs-vlm (No module named 'rs_vlm_app')"),
    ("/nonexistent/bin/python", "does not exist"),
    ("/tmp", "is not an executable program"),
    ("", "no rs-vlm Python is configured"),
])
def test_test_connection_with_a_wrong_python_says_what_is_wrong(rs, clean_python_setting, iface, python, expected):
    """QGIS's own Python (no rs-vlm in it), a missing file, a folder, nothing at all."""
    from rsvlm_qgis.settings_dialog import SettingsDialog

    dialog = SettingsDialog(iface.mainWindow())
    widget = dialog.widget
    widget.python.setFilePath(python)
    widget.pythonpath.setFilePath("")
    widget.test_button.click()
    assert wait_until(lambda: widget.test_button.isEnabled(), timeout=120)
    text = widget.wait_for_test(1)
    assert "✖" in text and expected in text, text
    dialog.deleteLater()
