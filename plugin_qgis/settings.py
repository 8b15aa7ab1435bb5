"""The plugin's settings: which Python runs the rs-vlm worker, default models, device, output folder.

Where the interpreter comes from, first match wins:
1. the value the user set in rs-vlm's settings (QgsSettings key ``rs_vlm/python``);
2. the newer of: the environment the "Set up rs-vlm" dialog made (``rs_vlm/engine/python``,
   recorded only after its worker answered) and the one ``rsvlm qgis install`` recorded in
   ``<profile>/rs_vlm/app.json``;
3. the interpreter of an ``rsvlm`` script found on PATH (its ``#!`` line, or the venv beside it).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsSettings

PREFIX = "rs_vlm/"
DEVICES = ("auto", "cpu", "cuda", "mps")
#: suffixes that make a model field a checkpoint file rather than a catalogue name
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
INSTALL_RECORD = "app.json"


@dataclass(frozen=True)
class ModelChoice:
    """A model as the user names it: a catalogue name or a checkpoint file, with an optional open_clip
    architecture name and model config (JSON) for custom checkpoints."""

    model: str = ""
    arch: str = ""
    config: str = ""

    def is_file(self) -> bool:
        text = self.model.strip()
        return bool(text) and (text.lower().endswith(CHECKPOINT_SUFFIXES) or os.sep in text or "/" in text
                               or Path(text).expanduser().is_file())

    def to_spec(self, device: str) -> dict:
        """The job spec's ``model`` object (rs_vlm_app.models.spec.ModelSpec), built by the shared client."""
        from .jobproto import client

        text = self.model.strip()
        as_file = bool(text) and self.is_file()
        return client.model_spec(
            name=None if as_file else (text or None),
            checkpoint=str(Path(text).expanduser()) if as_file else None,
            arch=self.arch.strip() or None,
            model_config=str(Path(self.config.strip()).expanduser()) if self.config.strip() else None,
            device=device or "auto")

    def describe(self) -> str:
        text = self.model.strip()
        if not text:
            return "the catalogue's default"
        return Path(text).name if self.is_file() else text


@dataclass(frozen=True)
class AppConfig:
    """Everything the plugin needs to start and drive the worker."""

    python: str = ""
    pythonpath: str = ""         # an rs-vlm source checkout, when the app is not installed in `python`
    python_origin: str = ""      # "settings", "install", "path" or "" (none found)
    clip: ModelChoice = field(default_factory=ModelChoice)
    captioner: ModelChoice = field(default_factory=ModelChoice)
    device: str = "auto"
    grid: str = ""               # tile grid for panel runs ("" = the worker's default, the SeLo grid)
    output_dir: str = ""

    def results_dir(self) -> Path:
        """Where panel results go: the configured folder, else beside the project, else ~/rs-vlm-results."""
        if self.output_dir.strip():
            return Path(self.output_dir.strip()).expanduser()
        home = QgsProject.instance().homePath()
        if home:
            return Path(home) / "rs-vlm-results"
        return Path.home() / "rs-vlm-results"


def profile_dir() -> Path:
    """The active QGIS profile's folder."""
    return Path(QgsApplication.qgisSettingsDirPath())


def install_record_path() -> Path:
    return profile_dir() / "rs_vlm" / INSTALL_RECORD


def read_install_record() -> dict:
    """What ``rsvlm qgis install`` recorded for this profile ({} when nothing or unreadable)."""
    try:
        data = json.loads(install_record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def python_of_script(script: str | Path) -> str:
    """The interpreter an installed console script runs with ('' when it cannot be told)."""
    script = Path(script)
    for name in ("python.exe", "python3", "python"):  # a venv: bin/rsvlm beside bin/python
        candidate = script.parent / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    try:
        with open(script, "rb") as handle:
            first = handle.readline(1024).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    if not first.startswith("#!"):
        return ""
    words = first[2:].split()
    if not words:
        return ""
    if Path(words[0]).name == "env" and len(words) > 1:
        return shutil.which(words[-1]) or ""
    return words[0]


def python_on_path() -> str:
    """The interpreter of an ``rsvlm`` command on PATH ('' when none)."""
    script = shutil.which("rsvlm")
    return python_of_script(script) if script else ""


def load_config() -> AppConfig:
    """The current settings, the interpreter resolved as described in this module's docstring."""
    s = QgsSettings()
    python = _text(s, "python")
    pythonpath = _text(s, "pythonpath")
    origin = "settings" if python else ""
    if not python:
        python, pythonpath, origin = detected_python()
    device = _text(s, "device") or "auto"
    return AppConfig(
        python=python,
        pythonpath=pythonpath,
        python_origin=origin,
        clip=ModelChoice(_text(s, "clip/model"), _text(s, "clip/arch"), _text(s, "clip/config")),
        captioner=ModelChoice(_text(s, "caption/model"), _text(s, "caption/arch"), _text(s, "caption/config")),
        device=device if device in DEVICES or device.startswith("cuda:") else "auto",
        grid=_text(s, "grid"),
        output_dir=_text(s, "output_dir"),
    )


def save_config(config: AppConfig) -> None:
    """Store the user's choices. The interpreter is pinned only when the user chose it
    (``python_origin == "settings"``); otherwise it stays detected, so a later ``rsvlm qgis install``
    still updates it."""
    s = QgsSettings()
    if config.python_origin == "settings" and config.python:
        s.setValue(PREFIX + "python", config.python)
        s.setValue(PREFIX + "pythonpath", config.pythonpath)
    else:
        s.remove(PREFIX + "python")
        s.remove(PREFIX + "pythonpath")
    for key, choice in (("clip", config.clip), ("caption", config.captioner)):
        s.setValue(f"{PREFIX}{key}/model", choice.model)
        s.setValue(f"{PREFIX}{key}/arch", choice.arch)
        s.setValue(f"{PREFIX}{key}/config", choice.config)
    s.setValue(PREFIX + "device", config.device)
    s.setValue(PREFIX + "grid", config.grid)
    s.setValue(PREFIX + "output_dir", config.output_dir)


def detected_python() -> tuple[str, str, str]:
    """(python, pythonpath, origin) ignoring the user's own setting: the newer of the set-up
    dialog's environment and the install record, then PATH."""
    record = read_install_record()
    engine = setup_engine()
    if engine.get("python") and (not record.get("python") or engine["installed"] >= str(record.get("installed") or "")):
        return engine["python"], "", "setup"
    if record.get("python"):
        return str(record["python"]), str(record.get("pythonpath") or ""), "install"
    python = python_on_path()
    return python, "", "path" if python else ""


ENGINE_KEYS = ("python", "env", "installed", "summary")


def setup_engine() -> dict[str, str]:
    """What the set-up dialog recorded: python, env (its folder), installed (UTC, ISO), summary
    (the worker's hello in one line); {} when it never succeeded."""
    s = QgsSettings()
    engine = {key: _text(s, f"engine/{key}") for key in ENGINE_KEYS}
    return engine if engine["python"] else {}


def record_engine(python: str, env_dir: str, summary: str) -> None:
    """Make the environment the set-up dialog just built (and whose worker answered) the engine.
    A Python the user had chosen by hand is forgotten: setting up is choosing anew."""
    s = QgsSettings()
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for key, value in zip(ENGINE_KEYS, (python, env_dir, now, summary), strict=True):
        s.setValue(f"{PREFIX}engine/{key}", value)
    s.remove(PREFIX + "python")
    s.remove(PREFIX + "pythonpath")
    s.sync()


def set_value(key: str, value) -> None:
    QgsSettings().setValue(PREFIX + key, value)


def value(key: str, default: str = "") -> str:
    return _text(QgsSettings(), key) or default


def _text(s: QgsSettings, key: str) -> str:
    raw = s.value(PREFIX + key, "")
    return "" if raw is None else str(raw).strip()
