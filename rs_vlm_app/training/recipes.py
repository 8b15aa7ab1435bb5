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
_PER_RUN = frozenset({"data", "output_dir", "val_data", "val_zeroshot", "val_selo", "resume", "recipe", "stop_after_steps"})


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


#: TrainConfig settings holding file paths (or ``::``-joined lists of them).
_PATH_SETTINGS = ("data", "val_data", "val_zeroshot", "val_selo", "zeroshot_templates", "model_config", "output_dir")


def _is_template_set(name: str) -> bool:
    from rs_vlm_app.tasks.classes import template_sets

    return name in template_sets()


def resolve_config(task: str, given: dict[str, Any]) -> TrainConfig:
    """Defaults <- ``given["recipe"]`` <- the other ``given`` settings, validated; paths made absolute
    so the run's identity does not depend on the working directory."""
    values: dict[str, Any] = {}
    if given.get("recipe"):
        recipe = load_recipe(given["recipe"])
        if recipe.get("task", task) != task:
            raise UserError(f"recipe {given['recipe']!r} is for `rsvlm train {recipe['task']}`")
        values.update(recipe)
    values.update(given)
    values["task"] = task
    for key in _PATH_SETTINGS:
        if values.get(key) and not (key == "zeroshot_templates" and _is_template_set(str(values[key]))):
            values[key] = _absolute(str(values[key]))
    if values.get("init") and Path(values["init"]).expanduser().is_file():
        values["init"] = str(Path(values["init"]).expanduser().resolve())
    return TrainConfig.from_dict(values).validate()


def check_inputs(config: TrainConfig) -> None:
    """Input mistakes answered before torch loads (seconds): data files and columns, the initial
    checkpoint, and a run directory holding another run."""
    from rs_vlm_app.training import rundir
    from rs_vlm_app.training.data import check_caption_source

    check_caption_source(config.data, config.csv_image_key, config.csv_caption_key)
    if config.val_data:
        check_caption_source(config.val_data, config.csv_image_key, config.csv_caption_key)
    if config.val_zeroshot:
        check_caption_source(config.val_zeroshot, "filepath", "label")
    if config.val_selo:
        from rs_vlm_app.evaluation.selo_eval import read_annotations

        read_annotations(Path(config.val_selo))
    init = Path(config.init).expanduser()
    if config.init not in ("none",) and (any(s in config.init for s in "/\\") or init.suffix) and not init.is_file():
        raise UserError("--init: no such checkpoint file", path=config.init)
    rundir.inspect(config)


def _absolute(spec: str) -> str:
    if "::" in spec:
        return "::".join(_absolute(part) for part in spec.split("::"))
    return str(Path(spec).expanduser().absolute())
