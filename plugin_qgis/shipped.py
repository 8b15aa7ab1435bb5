"""Files the plugin ships beside its code: .qml styles (copied from the repository's resources/styles
when the plugin is built) and the icon."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def style_path(name: str) -> Path:
    """``styles/<name>.qml`` of the built plugin, else ../resources/styles/ of a source checkout."""
    for folder in (HERE / "styles", HERE.parent / "resources" / "styles"):
        candidate = folder / f"{name}.qml"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"the rs-vlm plugin has no style {name}.qml; reinstall it with `rsvlm qgis install`")


def icon_path() -> str:
    return str(HERE / "icon.svg")
