"""Each task parameter is declared once (rs_vlm_app.tasks.options): the job specs, the CLI's options
and the QGIS plugin's Processing parameters must agree with that declaration, default for default."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest

from rs_vlm_app.cli import build_parser
from rs_vlm_app.errors import UserError
from rs_vlm_app.jobs.specs import spec_kinds
from rs_vlm_app.tasks.options import (
    CaptionOptions,
    ClassifyOptions,
    LocalizeOptions,
    SearchOptions,
    check_value,
    declared,
    option,
)

REPO = Path(__file__).resolve().parents[2]
PROVIDER = REPO / "plugin_qgis" / "processing_provider"

#: task options dataclass -> (job kind, CLI command, plugin algorithm module)
TASKS = {
    LocalizeOptions: ("localize", "localize", "localize.py"),
    CaptionOptions: ("caption", "caption", "caption.py"),
    ClassifyOptions: ("classify", "classify", "classify.py"),
    SearchOptions: ("search", "search", "search.py"),
}
#: declared options a front end deliberately does not expose (each with the reason)
NOT_IN_SPEC = {(SearchOptions, "cell")}  # contact sheet cell size: a library-only knob
REQUIRED = {(ClassifyOptions, "classes")}  # a job and a command must name their classes: no default
NOT_IN_CLI = {(SearchOptions, "cell")} | REQUIRED


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    raise AssertionError(f"no command {command}")


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("options_class", list(TASKS), ids=lambda c: c.__name__)
def test_job_spec_defaults_are_the_declared_ones(options_class):
    spec_class = spec_kinds()[TASKS[options_class][0]]
    spec_fields = {f.name: f for f in dataclasses.fields(spec_class)}
    for name, info in declared(options_class).items():
        if (options_class, name) in NOT_IN_SPEC:
            assert name not in spec_fields
            continue
        assert name in spec_fields, f"{spec_class.__name__} lacks the option {name}"
        if (options_class, name) in REQUIRED:
            assert spec_fields[name].default is dataclasses.MISSING
            continue
        assert _plain(spec_fields[name].default) == _plain(info.default), f"{spec_class.__name__}.{name}"


@pytest.mark.parametrize("options_class", list(TASKS), ids=lambda c: c.__name__)
def test_cli_defaults_choices_and_help_are_the_declared_ones(options_class):
    parser = _subparser(TASKS[options_class][1])
    actions = {a.dest: a for a in parser._actions}
    for name, info in declared(options_class).items():
        if (options_class, name) in NOT_IN_CLI:
            continue
        assert name in actions, f"rsvlm {TASKS[options_class][1]} has no option for {name}"
        action = actions[name]
        assert action.default == info.default, f"--{name}"
        if info.choices is not None:
            assert tuple(action.choices) == info.choices
        if name != "aoi":  # --aoi's help is the shared AoI text of task_args
            assert info.help.split("(")[0].strip()[:30].replace("%", "%%") in action.help, f"--{name} help"


def _parameters(module: Path) -> dict[str, dict]:
    """NAME -> keyword values of every QgsProcessingParameter*("NAME", ...) call, and grid defaults."""
    found: dict[str, dict] = {}
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if func.startswith("QgsProcessingParameter") and node.args and isinstance(node.args[0], ast.Constant):
            values = {k.arg: ast.literal_eval(k.value) for k in node.keywords
                      if k.arg in ("defaultValue", "minValue", "maxValue")}
            found[str(node.args[0].value)] = {"kind": func, **values}
        elif func == "add_grid_parameter":
            found["GRID"] = {"kind": "grid", "defaultValue": ast.literal_eval(node.args[0]) if node.args else ""}
    return found


@pytest.mark.parametrize("options_class", list(TASKS), ids=lambda c: c.__name__)
def test_plugin_processing_parameters_agree_with_the_declaration(options_class):
    """Parsed from the plugin's source (QGIS's process must not import rs_vlm_app): a Processing
    number's default is the declared default and its range lies inside the declared range."""
    parameters = _parameters(PROVIDER / TASKS[options_class][2])
    compared = 0
    for name, info in declared(options_class).items():
        parameter = parameters.get(name.upper())
        if parameter is None:
            continue
        if parameter["kind"] == "grid":
            # "" sends no grid: the job then takes the declared default
            assert parameter["defaultValue"] in ("", info.default), "GRID"
        elif parameter["kind"] == "QgsProcessingParameterNumber":
            if "defaultValue" in parameter:
                assert parameter["defaultValue"] == info.default, name
            unset_is_zero = info.default is None and parameter.get("minValue") == 0  # 0 / empty: not given
            if info.minimum is not None and "minValue" in parameter and not unset_is_zero:
                assert parameter["minValue"] >= info.minimum, f"{name}: the plugin allows less than the task"
            if info.maximum is not None and "maxValue" in parameter:
                assert parameter["maxValue"] <= info.maximum, f"{name}: the plugin allows more than the task"
        elif parameter["kind"] == "QgsProcessingParameterBoolean" and "defaultValue" in parameter:
            assert parameter["defaultValue"] == info.default, name
        compared += 1
    assert compared >= 2  # the algorithm declares the task's main parameters


def test_the_plugin_parser_sees_a_wrong_default(tmp_path):
    """The comparison above can fail: a copied default that drifted is found."""
    drifted = tmp_path / "localize.py"
    drifted.write_text((PROVIDER / "localize.py").read_text(encoding="utf-8").replace("defaultValue=0.6",
                                                                                       "defaultValue=0.7"))
    assert _parameters(drifted)["HOTSPOT_THRESHOLD"]["defaultValue"] == 0.7 != LocalizeOptions().hotspot_threshold


def test_values_are_checked_once_by_the_options_with_field_names():
    with pytest.raises(UserError, match="^hotspot_threshold must be between 0 and 1, not 1.5$"):
        LocalizeOptions(hotspot_threshold=1.5)
    with pytest.raises(UserError, match="^top_k must be a whole number between 1 and 100000, not 2.5$"):
        SearchOptions(top_k=2.5)
    with pytest.raises(UserError, match="^columns must be a whole number between 1 and 100, not 0$"):
        SearchOptions(columns=0)
    with pytest.raises(UserError, match="^compat must be one of selo, not 'fast'$"):
        LocalizeOptions(compat="fast")
    with pytest.raises(UserError, match="^max_len must be a whole number at least 1, not 0$"):
        CaptionOptions(max_len=0)
    assert LocalizeOptions(grid="256").grid_spec.key() == LocalizeOptions(grid="256").grid  # parsed once, kept as text


def test_option_declares_metadata_and_none_means_the_task_chooses():
    @dataclasses.dataclass(frozen=True)
    class Demo:
        size: float | None = option(None, minimum=1.0, help="pixels")

    (info,) = declared(Demo).values()
    assert (info.name, info.default, info.minimum, info.help) == ("size", None, 1.0, "pixels")
    check_value(info, None)
    with pytest.raises(UserError, match="size must be at least 1"):
        check_value(info, 0.5)


def test_the_archive_search_and_the_front_ends_take_the_declared_search_and_tile_defaults():
    """The archive search and the front ends' own fields (GUI dialogs, the QGIS panel's "best N")
    start from the declared defaults; the panel is parsed from source (QGIS must not import us)."""
    from rs_vlm_app.gui import archive_search, tile_jobs

    top_k = declared(SearchOptions)["top_k"]
    spec_fields = {f.name: f for f in dataclasses.fields(spec_kinds()["archive-search"])}
    assert spec_fields["top_k"].default == top_k.default
    assert top_k == archive_search.TOP_K
    assert tile_jobs.DEFAULT_GRID == declared(CaptionOptions)["grid"].default == declared(ClassifyOptions)["grid"].default

    panel = ast.parse((REPO / "plugin_qgis" / "panel.py").read_text(encoding="utf-8"))
    calls = {}
    for node in ast.walk(panel):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "top_k"):
            calls[node.func.attr] = [ast.literal_eval(a) for a in node.args]
    assert calls["setValue"] == [top_k.default]
    low, high = calls["setRange"]
    assert low >= top_k.minimum and high <= top_k.maximum
