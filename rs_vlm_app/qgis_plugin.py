"""Building and installing the QGIS plugin (plugin_qgis/): standard library only.

The plugin runs inside QGIS's own Python and may import only qgis.*, the standard library and the
worker protocol and client. A built plugin folder is therefore self-contained: the plugin's code,
copies of rs_vlm_app/jobs/protocol.py and client.py, the .qml styles of resources/styles, the class
lists of resources/classes and the license.
``install`` puts it into a QGIS profile and records which Python runs the worker.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import rs_vlm_app
from rs_vlm_app.atomic import atomic_path, write_text_atomic
from rs_vlm_app.errors import UserError
from rs_vlm_app.resources import resources_dir

#: the plugin's folder name in QGIS's plugins folder (its Python package name); not ``rs_vlm``, which is
#: the Python API's package (``import rs_vlm``) and would be ambiguous with the checkout on sys.path
PLUGIN_ID = "rsvlm_qgis"
#: the folder name earlier releases installed the plugin under; removed when it is ours
LEGACY_PLUGIN_ID = "rs_vlm"
#: the plugin's display name (metadata.txt ``name``): how a legacy folder is recognised as ours
PLUGIN_NAME = "rs-vlm"
#: what the plugin reads to find the app: <profile>/rs_vlm/app.json
RECORD_FOLDER = "rs_vlm"
RECORD_NAME = "app.json"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", "*.orig", "*.rej", "*~")


def plugin_source_dir() -> Path:
    """plugin_qgis/ of a source checkout, or the copy shipped inside the installed package."""
    package = Path(rs_vlm_app.__file__).resolve().parent
    for candidate in (package.parent / "plugin_qgis", package / "plugin_qgis"):
        if (candidate / "metadata.txt").is_file():
            return candidate
    raise UserError("the QGIS plugin's files are not part of this rs-vlm installation; "
                    "install rs-vlm from a source checkout (pip install -e .)")


def styles_source() -> Path:
    """resources/styles of the checkout or of the installed package."""
    package = Path(rs_vlm_app.__file__).resolve().parent
    for candidate in (package.parent / "resources" / "styles", package / "resources" / "styles"):
        if candidate.is_dir():
            return candidate
    return resources_dir() / "styles"


def protocol_source() -> Path:
    return Path(rs_vlm_app.__file__).resolve().parent / "jobs" / "protocol.py"


#: the app's standard-library modules the plugin carries (plugin_qgis/jobproto.py loads them)
SHIPPED_MODULES = ("protocol.py", "client.py")
#: resource files the plugin carries: the .qml styles and the bundled class lists
SHIPPED_RESOURCES = (("styles", "*.qml"), ("classes", "*.txt"))


def build_plugin(parent: Path) -> Path:
    """Write the self-contained plugin folder ``parent/rsvlm_qgis`` and return it."""
    source = plugin_source_dir()
    target = Path(parent) / PLUGIN_ID
    shutil.copytree(source, target, ignore=_IGNORED)
    for name in SHIPPED_MODULES:
        module = protocol_source().with_name(name)
        if not module.is_file():
            raise UserError(f"rs_vlm_app/jobs/{name} is missing; the plugin cannot talk to the worker without it",
                            path=module)
        shutil.copyfile(module, target / name)
    for folder, pattern in SHIPPED_RESOURCES:
        copy = target / folder
        copy.mkdir(exist_ok=True)
        for path in sorted(styles_source().parent.joinpath(folder).glob(pattern)):
            shutil.copyfile(path, copy / path.name)
    (target / ENGINE_FILE).write_text(json.dumps(engine_requirements(), indent=1) + "\n", encoding="utf-8")
    return target


#: in the built plugin: which rs-vlm (and torch) its "Set up rs-vlm" dialog installs (plugin_qgis/envdetect.py)
ENGINE_FILE = "engine.json"


def engine_requirements() -> dict:
    """The rs-vlm release this plugin belongs to, its torch pins and its minimum Python, for the
    plugin's set-up dialog: from the checkout's pyproject.toml, else this installation's metadata."""
    import re
    from importlib import metadata

    version, deps, requires_python = rs_vlm_app.__version__, [], ""
    pyproject = Path(rs_vlm_app.__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        if project.get("name") == "rs-vlm":
            deps, requires_python = project.get("dependencies", []), project.get("requires-python", "")
    if not deps:
        try:
            deps = [d for d in metadata.requires("rs-vlm") or [] if "extra ==" not in d]
            requires_python = metadata.metadata("rs-vlm").get("Requires-Python", "")
        except metadata.PackageNotFoundError:
            pass
    torch = [d.replace(" ", "") for d in deps if re.match(r"^\s*(torch|torchvision)\s*[=<>!~]", d)]
    minimum = re.search(r">=\s*(\d+\.\d+)", requires_python or "")
    return {"app_version": version, "requirement": f"rs-vlm=={version}", "torch": torch,
            "python_min": minimum.group(1) if minimum else "3.11"}


def package_zip(output: Path) -> Path:
    """The plugin as a zip QGIS installs (Plugins > Manage and Install Plugins > Install from ZIP),
    with one top folder ``rsvlm_qgis/``; written atomically."""
    output = Path(output)
    if output.suffix.lower() != ".zip":
        raise UserError("the plugin package must be a .zip file", path=output)
    with tempfile.TemporaryDirectory(prefix="rsvlm-plugin-") as tmp:
        folder = build_plugin(Path(tmp))
        with atomic_path(output) as partial, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, Path(PLUGIN_ID) / path.relative_to(folder))
    return output


def profiles_dir(platform: str = sys.platform, env: dict | None = None, home: Path | None = None) -> Path:
    """QGIS 3's folder of user profiles on this system."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    if platform.startswith("win"):
        base = Path(env["APPDATA"]) if env.get("APPDATA") else home / "AppData" / "Roaming"
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(env["XDG_DATA_HOME"]) if env.get("XDG_DATA_HOME") else home / ".local" / "share"
    return base / "QGIS" / "QGIS3" / "profiles"


def app_pythonpath() -> str:
    """The folder to put on the worker's PYTHONPATH: this checkout when rs_vlm_app is not installed in
    a site-packages folder (a source checkout or an editable install), else ''."""
    root = Path(rs_vlm_app.__file__).resolve().parent.parent
    if root.name in ("site-packages", "dist-packages"):
        return ""
    return str(root)


@dataclass
class Installed:
    plugin: Path          # <profile>/python/plugins/rsvlm_qgis
    record: Path          # <profile>/rs_vlm/app.json
    python: str
    enabled_in: Path | None
    linked: bool
    legacy_removed: Path | None = None   # an earlier release's <profile>/python/plugins/rs_vlm, removed


def install(profile: str = "default", profiles: Path | None = None, link: bool = False, enable: bool = True,
            python: str | None = None) -> Installed:
    """Install the plugin into QGIS profile ``profile`` and record this Python for its worker."""
    if not profile or any(sep in profile for sep in ("/", "\\")) or profile in (".", ".."):
        raise UserError(f"invalid QGIS profile name {profile!r}")
    profiles = Path(profiles) if profiles is not None else profiles_dir()
    profile_dir = profiles / profile
    if not profile_dir.is_dir() and profile != "default":
        known = sorted(p.name for p in profiles.iterdir() if p.is_dir()) if profiles.is_dir() else []
        hint = f"; profiles there: {', '.join(known)}" if known else ""
        raise UserError(f"QGIS profile {profile!r} does not exist{hint} (start QGIS once, or use "
                        "Settings > User Profiles > New Profile)", path=profile_dir)
    plugins = profile_dir / "python" / "plugins"
    target = plugins / PLUGIN_ID
    try:
        plugins.mkdir(parents=True, exist_ok=True)
        if link:
            _replace_with_link(target, plugin_source_dir())
        else:
            _replace_with_copy(target)
        legacy = remove_legacy_plugin(profile_dir)
        record = profile_dir / RECORD_FOLDER / RECORD_NAME
        python = python or sys.executable
        write_text_atomic(record, json.dumps({
            "python": python,
            "pythonpath": app_pythonpath(),
            "app_version": rs_vlm_app.__version__,
            "plugin": str(target),
            "mode": "link" if link else "copy",
            "installed": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }, indent=1) + "\n")
        ini = None
        if enable:
            ini = profile_dir / "QGIS" / "QGIS3.ini"  # QGIS 3 names it so in every profile folder
            enable_plugin(ini, PLUGIN_ID)
    except OSError as exc:
        raise UserError(f"cannot install the plugin ({exc.strerror or exc})", path=getattr(exc, "filename", None)
                        or target) from None
    return Installed(target, record, python, ini, link, legacy)


def uninstall(profile: str = "default", profiles: Path | None = None) -> list[Path]:
    """Remove the plugin (and an earlier release's ``rs_vlm`` plugin folder, when it is ours) and its
    record from a profile; the removed plugin folders, none when nothing was installed."""
    profiles = Path(profiles) if profiles is not None else profiles_dir()
    profile_dir = profiles / profile
    target = profile_dir / "python" / "plugins" / PLUGIN_ID
    removed = []
    try:
        if _remove_path(target):
            removed.append(target)
        legacy = remove_legacy_plugin(profile_dir)
        if legacy is not None:
            removed.append(legacy)
        record = profile_dir / RECORD_FOLDER / RECORD_NAME
        if record.is_file():
            record.unlink()
    except OSError as exc:
        raise UserError(f"cannot remove the plugin ({exc.strerror or exc})", path=getattr(exc, "filename", None)
                        or target) from None
    return removed


def _remove_path(path: Path) -> bool:
    """Remove a file, a link (never what it points to) or a folder; False when there was nothing."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    else:
        return False
    return True


def is_our_plugin(folder: Path) -> bool:
    """Whether a plugin folder holds rs-vlm's plugin (its metadata.txt ``name`` is ``rs-vlm``)."""
    import configparser

    metadata = configparser.ConfigParser(interpolation=None)
    try:
        metadata.read(Path(folder) / "metadata.txt", encoding="utf-8")
    except (OSError, UnicodeDecodeError, configparser.Error):
        return False
    return metadata.get("general", "name", fallback="").strip() == PLUGIN_NAME


def remove_legacy_plugin(profile_dir: Path) -> Path | None:
    """Remove ``<profile>/python/plugins/rs_vlm`` (the folder name of earlier releases) when it is rs-vlm's
    plugin, and its entry in the profile's QGIS3.ini; another plugin of that name is left alone."""
    legacy = Path(profile_dir) / "python" / "plugins" / LEGACY_PLUGIN_ID
    if not (legacy.is_symlink() or legacy.exists()) or not is_our_plugin(legacy):
        return None
    _remove_path(legacy)
    ini = Path(profile_dir) / "QGIS" / "QGIS3.ini"
    if ini.is_file():
        disable_plugin(ini, LEGACY_PLUGIN_ID)
    return legacy


def _replace_with_copy(target: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{PLUGIN_ID}.", dir=target.parent))
    try:
        built = build_plugin(staging)
        old = None
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            old = target.with_name(f".{PLUGIN_ID}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(built, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_with_link(target: Path, source: Path) -> None:
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    try:
        target.symlink_to(source, target_is_directory=True)
    except OSError as exc:
        raise UserError(f"cannot link the plugin ({exc.strerror or exc}); install a copy instead (without --link)",
                        path=target) from None


def disable_plugin(ini: Path, plugin_id: str) -> None:
    """Drop ``<plugin_id>=...`` from the ``[PythonPlugins]`` section of a QGIS settings file, every other
    line kept as it was."""
    lines = ini.read_text(encoding="utf-8").splitlines()
    out, in_section = [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            in_section = stripped == "[PythonPlugins]"
        elif in_section and stripped.split("=", 1)[0].strip() == plugin_id:
            continue
        out.append(line)
    if out != lines:
        write_text_atomic(ini, "\n".join(out) + "\n")


def enable_plugin(ini: Path, plugin_id: str) -> None:
    """Set ``[PythonPlugins] <plugin_id>=true`` in a QGIS settings file, leaving every other line as it
    was (QGIS writes its .ini in Qt's own format, which configparser would rewrite)."""
    lines = ini.read_text(encoding="utf-8").splitlines() if ini.is_file() else []
    out: list[str] = []
    in_section = found_section = done = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if in_section and not done:
                out.append(f"{plugin_id}=true")
                done = True
            in_section = stripped == "[PythonPlugins]"
            found_section |= in_section
        elif in_section and stripped.split("=", 1)[0].strip() == plugin_id:
            if not done:
                out.append(f"{plugin_id}=true")
                done = True
            continue
        out.append(line)
    if not done:
        if not found_section:
            if out and out[-1].strip():
                out.append("")
            out.append("[PythonPlugins]")
        out.append(f"{plugin_id}=true")
    ini.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(ini, "\n".join(out) + "\n")
