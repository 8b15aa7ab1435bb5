"""Training recipes: named sets of TrainConfig defaults shipped as TOML under resources/recipes/.

A recipe fills in settings; options given on the command line win over it. ``--recipe NAME`` picks
a shipped recipe, ``--recipe FILE.toml`` a user's own.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from rs_vlm_app.errors import UserError
from rs_vlm_app.training.config import TrainConfig

#: Settings a recipe may not fix: they belong to one run, not to a method.
_PER_RUN = frozenset({"data", "output_dir", "val_data", "val_zeroshot", "resume", "recipe", "stop_after_steps"})


def recipes_dir() -> Path:
    """resources/recipes inside the installed package or at the top of a source checkout."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here / "resources" / "recipes", here.parent / "resources" / "recipes"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"rs-vlm recipes not found beside {here}; reinstall the package")


def list_recipes() -> dict[str, str]:
    """Shipped recipe names and their one-line descriptions."""
    return {path.stem: _read(path).get("description", "") for path in sorted(recipes_dir().glob("*.toml"))}


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """The TrainConfig settings of a recipe (without its description), checked against TrainConfig."""
    path = Path(name_or_path)
    if path.suffix != ".toml" or not path.is_file():
        shipped = recipes_dir() / f"{name_or_path}.toml"
        if not shipped.is_file():
            known = ", ".join(list_recipes()) or "none"
            raise UserError(f"unknown recipe {name_or_path!r}: not a .toml file and not a shipped recipe ({known})")
        path = shipped
    values = _read(path)
    values.pop("description", None)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for key in values:
        if key not in fields:
            raise UserError(f"unknown setting {key!r} in the recipe", path=path)
        if key in _PER_RUN:
            raise UserError(f"a recipe cannot set {key!r}; give it on the command line", path=path)
    return values


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"not a valid TOML recipe: {exc}", path=path) from None
