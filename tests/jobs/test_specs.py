"""Job specs: typed validation, JSON round-trips, the registry of kinds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.jobs.specs import ModelSpec, load_spec, spec_from_dict, spec_kinds
from tests.conftest import REPO, SAMPLES

SCENE = SAMPLES / "naip_2020_5m.tif"


def localize_dict(**overrides):
    data = {"kind": "localize", "scene": str(SCENE), "queries": ["a lake", "a road"], "out": "/tmp/out",
            "model": {"model_config": "/m/cfg.json", "checkpoint": "/m/w.pt", "device": "cpu"},
            "grid": "256,512@0.25", "bands": [1, 2, 3]}
    data.update(overrides)
    return data


def test_known_kinds_include_localize_and_selo_evaluation():
    kinds = spec_kinds()
    assert {"localize", "eval-selo"} <= set(kinds)
    assert all(cls.kind == kind for kind, cls in kinds.items())


def test_a_spec_survives_a_json_round_trip():
    spec = spec_from_dict(localize_dict())
    assert spec.scene == SCENE and isinstance(spec.out, Path)
    assert spec.model == ModelSpec(model_config=Path("/m/cfg.json"), checkpoint=Path("/m/w.pt"), device="cpu")
    again = spec_from_dict(json.loads(spec.to_json()))
    assert again == spec
    assert json.loads(spec.to_json())["kind"] == "localize"


def test_defaults_fill_missing_optional_fields():
    spec = spec_from_dict({"kind": "localize", "scene": "s.tif", "queries": ["x"], "out": "o"})
    assert spec.model == ModelSpec() and spec.min_valid == 0.5 and spec.compat is None


@pytest.mark.parametrize("overrides, words", [
    ({"queries": "a lake"}, "localize.queries must be a list"),
    ({"queries": ["ok", 3]}, r"localize.queries\[1\] must be a string"),
    ({"min_valid": "half"}, "localize.min_valid must be a number"),
    ({"cog": 1}, "localize.cog must be true or false"),
    ({"bands": [1, 2.5, 3]}, r"localize.bands\[1\] must be a whole number"),
    ({"compat": "published"}, "localize.compat"),
    ({"model": {"checkpoint": 5}}, "localize.model.checkpoint must be a file path"),
    ({"model": {"device": "gpu", "colour": "red"}}, "localize.model has no field 'colour'"),
    ({"speed": "fast"}, "localize has no field 'speed'"),
])
def test_bad_fields_are_named_in_one_readable_line(overrides, words):
    with pytest.raises(UserError, match=words) as info:
        spec_from_dict(localize_dict(**overrides))
    assert "\n" not in str(info.value)


def test_missing_required_field():
    data = localize_dict()
    del data["out"]
    with pytest.raises(UserError, match="localize needs 'out'"):
        spec_from_dict(data)


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(UserError, match="unknown job kind 'paint'.*localize"):
        spec_from_dict({"kind": "paint"})
    with pytest.raises(UserError, match="JSON object"):
        spec_from_dict(["localize"])


def test_load_spec_names_the_file(tmp_path):
    bad = tmp_path / "job.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match=r"job.json: not valid JSON"):
        load_spec(bad)
    with pytest.raises(UserError, match="job spec file not found"):
        load_spec(tmp_path / "missing.json")
    bad.write_text(json.dumps(localize_dict(queries=7)))
    with pytest.raises(UserError, match=r"job.json: job spec: localize.queries"):
        load_spec(bad)


def test_model_spec_checks_values_before_loading(tmp_path):
    with pytest.raises(UserError, match="device must be one of"):
        ModelSpec(device="tpu").check()
    with pytest.raises(UserError, match="precision must be one of"):
        ModelSpec(precision="int3").check()
    with pytest.raises(UserError, match="w.pt: model file not found"):
        ModelSpec(checkpoint=tmp_path / "w.pt").check()
    ModelSpec(device="cuda:1", precision="bf16").check()


def test_localize_check_catches_input_mistakes_before_any_model(tmp_path):
    spec = spec_from_dict(localize_dict(out=str(tmp_path / "out"), model={}))
    spec.queries = ["a lake", "   "]
    with pytest.raises(UserError, match="query 2 is empty"):
        spec.check()
    spec = spec_from_dict(localize_dict(scene=str(tmp_path / "gone.tif"), out=str(tmp_path / "o"), model={}))
    with pytest.raises(UserError, match="gone.tif: file not found"):
        spec.check()
    spec = spec_from_dict(localize_dict(hotspot_threshold=1.5, out=str(tmp_path / "o"), model={}))
    with pytest.raises(UserError, match="hotspot_threshold must be between 0 and 1"):
        spec.check()


def test_kind_modules_import_no_heavy_library():
    code = ("import sys; from rs_vlm_app.jobs.specs import spec_kinds; spec_kinds(); "
            "heavy = [m for m in ('torch', 'open_clip', 'rasterio', 'PyQt6') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
