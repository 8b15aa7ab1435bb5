"""The client's spec builders are checked against the typed specs (rs_vlm_app/jobs/kinds/): every
kind has one, its positional parameters are the kind's required fields, and every field of the kind,
given a non-default value, reaches the worker's own parser (spec_from_dict) intact."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.jobs import client
from rs_vlm_app.jobs.specs import ModelSpec, spec_from_dict, spec_kinds

MODEL = client.model_spec(checkpoint="/models/w.pt", arch="ViT-B-32", device="cpu", precision="fp32", batch_size=4)


def required_fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def sample(name: str, hint: Any, default: Any) -> Any:
    """A JSON value of type ``hint`` that differs from ``default``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return sample(name, next(a for a in args if a is not type(None)), default)
    if origin is Literal:
        return next(a for a in args if a != default)
    if origin is list:
        item = args[0] if args else str
        return [3, 2, 1] if item is int else [f"/data/{name}/a", f"/data/{name}/b"] if item is Path else ["x", "y"]
    if origin is dict:
        return {"grid": "128", "top_k": 2}
    if hint is ModelSpec:
        return MODEL
    if hint is bool:
        return not default if isinstance(default, bool) else True
    if hint is int:
        return (default if isinstance(default, int) else 0) + 2
    if hint is float:
        return 0.25 if default != 0.25 else 0.75
    if hint is Path:
        return f"/data/{name}"
    if hint is str:
        return "a lake" if default != "a lake" else "a road"
    raise AssertionError(f"no sample for {name}: {hint!r}")


KINDS = sorted(spec_kinds())


def test_every_kind_has_a_builder():
    assert sorted(client.SPEC_BUILDERS) == KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_a_builders_positional_parameters_are_the_kinds_required_fields(kind):
    cls = spec_kinds()[kind]
    params = inspect.signature(client.SPEC_BUILDERS[kind]).parameters
    positional = [p.name for p in params.values() if p.default is inspect.Parameter.empty
                  and p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == required_fields(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    assert ("model" in params) == ("model" in names)
    assert set(params) - {"options"} <= names  # a renamed field cannot hide in a builder's signature
    assert any(p.kind is p.VAR_KEYWORD for p in params.values())  # options: declared once, in the kind


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_a_builder_is_given_reaches_the_workers_parser(kind):
    cls = spec_kinds()[kind]
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        values[f.name] = sample(f.name, hints[f.name], default)
    required = [values[name] for name in required_fields(cls)]
    options = {k: v for k, v in values.items() if k not in required_fields(cls)}
    built = client.SPEC_BUILDERS[kind](*required, **options)
    assert built["kind"] == kind
    back = spec_from_dict(built).to_dict()
    for name, value in values.items():
        if value is MODEL:
            assert {k: back[name][k] for k in MODEL} == MODEL, name
        else:
            assert back[name] == value, name


def test_unset_options_are_left_out_so_the_workers_defaults_apply():
    spec = client.localize_spec(Path("/data/s.tif"), ("a lake",), Path("/out"), None, grid=None, cog=None, bands=None)
    assert spec == {"kind": "localize", "scene": "/data/s.tif", "queries": ["a lake"], "out": "/out"}
    back = spec_from_dict(spec)
    defaults = spec_from_dict({"kind": "localize", "scene": "/data/s.tif", "queries": ["a lake"], "out": "/out"})
    assert back == defaults and back.cog is False
    assert client.model_spec("georsclip-vit-b-32", device="cuda", precision=None) == {
        "name": "georsclip-vit-b-32", "device": "cuda"}


def test_a_misspelt_option_is_refused_by_the_worker_not_ignored():
    spec = client.localize_spec("/data/s.tif", ["a lake"], "/out", hotspot_treshold=0.5)
    with pytest.raises(UserError, match="hotspot_treshold"):
        spec_from_dict(spec)


def test_a_classify_spec_takes_a_bundled_list_or_the_names():
    assert client.classify_spec("/s.tif", "aid", "/out")["classes"] == "aid"
    assert spec_from_dict(client.classify_spec("/s.tif", ("lake", "forest = a dense forest"), "/o")).classes == [
        "lake", "forest = a dense forest"]


def test_the_bundled_class_lists_are_read_from_resources_classes():
    from rs_vlm_app.resources import resource
    from rs_vlm_app.tasks.classes import BUILTIN_CLASS_LISTS, load_classes

    lists = client.bundled_class_lists(resource("classes"))
    assert sorted(info.key for info in lists) == sorted(BUILTIN_CLASS_LISTS)
    for info in lists:
        assert info.count == len(load_classes(info.key))  # the task's own count of the same file
        assert info.label.startswith(f"{info.name} ({info.count} ") and info.label.endswith("classes)")
    by_key = {info.key: info for info in lists}
    assert by_key["aid"].label == "AID (30 scene classes)"
    assert by_key["eurosat"].name == "EuroSAT" and by_key["resisc45"].count == 45
