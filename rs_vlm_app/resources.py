"""Where the shipped data files live (model catalogue, prompts, class lists, styles)."""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def resources_dir() -> Path:
    """The resources/ folder: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "resources", here.parent / "resources"):
        if (candidate / "models.toml").is_file() or (candidate / "prompts").is_dir():
            return candidate
    raise FileNotFoundError(f"rs-vlm resources not found beside {here}; reinstall the package")


def resource(*parts: str) -> Path:
    """Path of one shipped resource file, e.g. ``resource("styles", "heatmap.qml")``."""
    return resources_dir().joinpath(*parts)
