"""`rsvlm qgis install | uninstall | package`: what lands in a QGIS profile, and QGIS finding it."""

from __future__ import annotations

import configparser
import json
import zipfile
from pathlib import Path

import pytest
from qgis import utils as qgis_utils

from tests.qgis.conftest import PLUGIN_ID, app_checkout, app_python, run_app

#: every field plugins.qgis.org reads from metadata.txt (the mandatory ones and the recommended ones)
METADATA_FIELDS = ("name", "qgisMinimumVersion", "qgisMaximumVersion", "description", "about", "version",
                   "author", "email", "repository", "tracker", "homepage", "changelog", "category", "icon",
                   "tags", "experimental", "deprecated", "hasProcessingProvider", "supportsQt6", "license")


@pytest.fixture
def profiles(tmp_path):
    root = tmp_path / "QGIS" / "QGIS3" / "profiles"
    (root / "default").mkdir(parents=True)
    return root


def install(profiles: Path, *extra: str, check: bool = True):
    return run_app("-m", "rs_vlm_app", "qgis", "install", "--profiles-dir", str(profiles), *extra, check=check)


def test_install_copies_a_self_contained_plugin_and_records_the_python(need_app, profiles):
    ini = profiles / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[General]\nlocale\\userLocale=de\n\n[PythonPlugins]\nprocessing=true\nrsvlm_qgis=false\n\n"
                   "[qgis]\nx=1\n")
    proc = install(profiles)
    plugin = profiles / "default" / "python" / "plugins" / PLUGIN_ID
    assert str(plugin) in proc.stdout and "earlier release" not in proc.stdout
    assert not plugin.is_symlink()
    for name in ("__init__.py", "metadata.txt", "icon.svg", "LICENSE", "protocol.py", "styles/heatmap.qml",
                 "styles/hotspots.qml", "processing_provider/provider.py"):
        assert (plugin / name).is_file(), name
    # the protocol and client copies are the app's own files, byte for byte; the class lists too
    for name in ("protocol.py", "client.py"):
        assert (plugin / name).read_bytes() == (app_checkout() / "rs_vlm_app/jobs" / name).read_bytes()
    for name in ("aid.txt", "resisc45.txt", "eurosat.txt"):
        assert (plugin / "classes" / name).read_bytes() == (app_checkout() / "resources/classes" / name).read_bytes()
    assert not list(plugin.rglob("__pycache__"))
    record = json.loads((profiles / "default" / "rs_vlm" / "app.json").read_text())
    assert Path(record["python"]).name.startswith("python")
    assert Path(record["python"]).parent == Path(app_python()).parent
    assert record["pythonpath"] == str(app_checkout())
    assert record["mode"] == "copy"
    # enabled, every other line of QGIS's settings kept as it was
    text = ini.read_text()
    assert "rsvlm_qgis=true" in text and "rsvlm_qgis=false" not in text
    assert "locale\\userLocale=de" in text and "processing=true" in text and "[qgis]\nx=1" in text
    # QGIS's own plugin finder accepts it
    found = dict(qgis_utils.findPlugins(str(plugin.parent)))
    assert PLUGIN_ID in found
    assert found[PLUGIN_ID].get("general", "name") == "rs-vlm"


def test_reinstall_replaces_a_copy_with_a_link_and_back(need_app, profiles):
    plugin = profiles / "default" / "python" / "plugins" / PLUGIN_ID
    install(profiles)
    (plugin / "stale.py").write_text("x = 1\n")
    install(profiles, "--link")
    assert plugin.is_symlink()
    assert plugin.resolve() == (app_checkout() / "plugin_qgis").resolve()
    assert json.loads((profiles / "default" / "rs_vlm" / "app.json").read_text())["mode"] == "link"
    install(profiles)
    assert not plugin.is_symlink() and not (plugin / "stale.py").exists()
    assert (app_checkout() / "plugin_qgis" / "metadata.txt").is_file()  # the checkout survived


def test_install_into_a_profiles_path_of_any_name_enables_in_qgis3_ini(need_app, tmp_path):
    """QGIS started with --profiles-path DIR keeps DIR/profiles/NAME/QGIS/QGIS3.ini."""
    profiles = tmp_path / "my-qgis" / "profiles"
    install(profiles)
    assert "rsvlm_qgis=true" in (profiles / "default" / "QGIS" / "QGIS3.ini").read_text()


def test_install_into_a_named_profile_and_uninstall(need_app, profiles):
    (profiles / "analysis").mkdir()
    install(profiles, "--profile", "analysis", "--no-enable")
    plugin = profiles / "analysis" / "python" / "plugins" / PLUGIN_ID
    assert (plugin / "metadata.txt").is_file()
    assert not (profiles / "analysis" / "QGIS" / "QGIS3.ini").exists()
    proc = run_app("-m", "rs_vlm_app", "qgis", "uninstall", "--profiles-dir", str(profiles), "--profile", "analysis")
    assert "removed" in proc.stdout
    assert not plugin.exists() and not (profiles / "analysis" / "rs_vlm" / "app.json").exists()


def _legacy_folder(profiles: Path, name: str) -> Path:
    """An earlier release's plugin folder ``rs_vlm`` (whose name clashes with the API's ``import rs_vlm``)."""
    legacy = profiles / "default" / "python" / "plugins" / "rs_vlm"
    legacy.mkdir(parents=True)
    (legacy / "metadata.txt").write_text(f"[general]\nname={name}\nversion=0.0.9\n")
    (legacy / "__init__.py").write_text("")
    return legacy


def test_install_and_uninstall_remove_our_legacy_rs_vlm_plugin_folder(need_app, profiles):
    legacy = _legacy_folder(profiles, "rs-vlm")
    ini = profiles / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\nprocessing=true\nrs_vlm=true\n")
    proc = install(profiles)
    assert not legacy.exists()
    assert f"removed the earlier release's plugin folder {legacy}" in proc.stdout
    assert ini.read_text().splitlines() == ["[PythonPlugins]", "processing=true", f"{PLUGIN_ID}=true"]
    # uninstall: the plugin, and a legacy folder that came back (an old installer run again)
    _legacy_folder(profiles, "rs-vlm")
    proc = run_app("-m", "rs_vlm_app", "qgis", "uninstall", "--profiles-dir", str(profiles))
    plugin = profiles / "default" / "python" / "plugins" / PLUGIN_ID
    assert proc.stdout.splitlines() == [f"removed {plugin}", f"removed {legacy}"]
    assert not legacy.exists() and not plugin.exists()


def test_a_foreign_rs_vlm_plugin_folder_is_left_alone(need_app, profiles):
    legacy = _legacy_folder(profiles, "Someone else's plugin")
    proc = install(profiles)
    assert (legacy / "metadata.txt").is_file() and "earlier release" not in proc.stdout
    run_app("-m", "rs_vlm_app", "qgis", "uninstall", "--profiles-dir", str(profiles))
    assert (legacy / "metadata.txt").is_file()


def test_install_into_a_missing_profile_says_which_exist(need_app, profiles):
    proc = install(profiles, "--profile", "nosuch", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("rsvlm: error: ")
    assert "QGIS profile 'nosuch' does not exist" in proc.stderr and "default" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_package_zip_installs_as_one_folder_with_complete_metadata(need_app, tmp_path):
    target = tmp_path / "rsvlm_qgis.zip"
    run_app("-m", "rs_vlm_app", "qgis", "package", "-o", str(target))
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        assert all(n.startswith(f"{PLUGIN_ID}/") for n in names)
        assert f"{PLUGIN_ID}/protocol.py" in names and f"{PLUGIN_ID}/LICENSE" in names
        assert f"{PLUGIN_ID}/client.py" in names and f"{PLUGIN_ID}/classes/aid.txt" in names
        assert not [n for n in names if n.endswith(".pyc")]
        archive.extractall(tmp_path / "plugins")
    metadata = configparser.ConfigParser()
    metadata.read(tmp_path / "plugins" / PLUGIN_ID / "metadata.txt", encoding="utf-8")
    general = metadata["general"]
    missing = [f for f in METADATA_FIELDS if not general.get(f, "").strip()]
    assert not missing
    version = run_app("-c", "import rs_vlm_app; print(rs_vlm_app.__version__)").stdout.strip()
    assert general["version"] == version
    assert (tmp_path / "plugins" / PLUGIN_ID / general["icon"]).is_file()
    assert general["hasProcessingProvider"] == "yes"
    assert general.getboolean("supportsQt6")
    found = dict(qgis_utils.findPlugins(str(tmp_path / "plugins")))
    assert PLUGIN_ID in found


def test_package_refuses_a_name_that_is_not_a_zip(need_app, tmp_path):
    proc = run_app("-m", "rs_vlm_app", "qgis", "package", "-o", str(tmp_path / "plugin.tar"), check=False)
    assert proc.returncode == 2
    assert "must be a .zip" in proc.stderr
    assert not (tmp_path / "plugin.tar").exists()
