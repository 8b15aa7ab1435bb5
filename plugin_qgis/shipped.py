"""Files the plugin ships beside its code: .qml styles and the bundled class lists (copied from the
repository's resources/styles and resources/classes when the plugin is built) and the icon."""

from __future__ import annotations

from pathlib import Path

from .jobproto import client

HERE = Path(__file__).resolve().parent


def _resource_folder(name: str) -> Path | None:
    """``<name>/`` of the built plugin, else ../resources/<name>/ of a source checkout."""
    for folder in (HERE / name, HERE.parent / "resources" / name):
        if folder.is_dir():
            return folder
    return None


def style_path(name: str) -> Path:
    """``styles/<name>.qml`` of the built plugin, else ../resources/styles/ of a source checkout."""
    folder = _resource_folder("styles")
    if folder is not None and (folder / f"{name}.qml").is_file():
        return folder / f"{name}.qml"
    raise FileNotFoundError(f"the rs-vlm plugin has no style {name}.qml; reinstall it with `rsvlm qgis install`")


def class_lists() -> list:
    """The bundled class lists (client.ClassListInfo: key, name, label, count), from the shipped copy
    of resources/classes/; empty when the plugin was built without them."""
    folder = _resource_folder("classes")
    return client.bundled_class_lists(folder) if folder is not None else []


def icon_path() -> str:
    return str(HERE / "icon.svg")
