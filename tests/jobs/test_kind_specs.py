"""Specs of every kind of job: JSON round-trips and cheap checks that name the file or field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.jobs.specs import ModelSpec, spec_from_dict, spec_kinds
from tests.conftest import SAMPLES

SCENE = SAMPLES / "naip_2020_5m.tif"

EXAMPLES = {
    "caption": {"kind": "caption", "scene": str(SCENE), "out": "/tmp/c.gpkg",
                "model": {"model_config": "/m/coca.json", "checkpoint": "/m/coca.pt", "device": "cpu"},
                "clip_model": {"name": "georsclip-vit-b-32"}, "grid": "224,448@0.5", "bands": [1, 2, 3],
                "decoding": "greedy", "max_len": 12},
    "classify": {"kind": "classify", "scene": str(SCENE), "classes": ["lake", "forest = a dense forest"],
                 "out": "/tmp/cls", "top_k": 2, "pixel": 16, "probabilities": False},
    "search": {"kind": "search", "scenes": [str(SCENE), str(SAMPLES / "naip_2012_5m.tif")],
               "query": "a lake", "out": "/tmp/s.gpkg", "top_k": 5, "crs": "EPSG:4326"},
    "eval-zeroshot": {"kind": "eval-zeroshot", "data": "/data/aid", "out": "/tmp/z", "classes": "aid"},
    "eval-retrieval": {"kind": "eval-retrieval", "data": "/data/rsicd.csv", "out": "/tmp/r",
                       "model": {"name": "remoteclip-vit-b-32", "batch_size": 8}},
    "eval-caption": {"kind": "eval-caption", "pred": "/p.json", "refs": "/r.json", "out": "/tmp/e", "spice": False},
    "dataset-build": {"kind": "dataset-build", "config": "/c/build.yaml", "out": "/tmp/ds", "shard": "2/4"},
    "dataset-export": {"kind": "dataset-export", "dataset": "/tmp/ds", "format": "wds", "exclude_flagged": True},
    "index": {"kind": "index", "archive": "/tmp/archive", "scenes": [str(SCENE)], "scene_lists": ["/l/items.json"],
              "asset": "visual", "grid": "256", "engine": "ray", "workers": 2, "ray_address": "10.0.0.5:6379"},
    "archive-search": {"kind": "archive-search", "archive": "/tmp/archive", "query": "a lake", "out": "/tmp/h.gpkg",
                       "where": "date >= 2020-01-01", "aoi": "/a/aoi.gpkg", "top_k": 50},
    "archive-localize": {"kind": "archive-localize", "archive": "/tmp/archive", "queries": ["a lake", "a road"],
                         "out": "/tmp/loc", "scenes": ["naip_2020_5m"], "hotspot_threshold": 0.7},
    "scene-batch": {"kind": "scene-batch", "job": "classify", "template": {"classes": "aid", "grid": "256"},
                    "out": "/tmp/many", "scene_lists": ["/l/scenes.txt"], "engine": "ray", "workers": 2},
    "fine-tune": {"kind": "fine-tune", "task": "coca", "data": "/d/train.csv", "out": "/tmp/run", "recipe": "rs-coca",
                  "epochs": 2, "lr": 1e-5, "lora_towers": ["image", "decoder"], "precision": "amp_bf16"},
}


def test_every_kind_is_registered():
    assert set(EXAMPLES) | {"localize", "eval-selo"} == set(spec_kinds())


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_specs_survive_a_json_round_trip(kind):
    spec = spec_from_dict(EXAMPLES[kind])
    assert spec.kind == kind
    again = spec_from_dict(json.loads(spec.to_json()))
    assert again == spec
    assert spec.title()


def test_caption_second_model_and_classify_inline_classes_keep_their_types():
    caption = spec_from_dict(EXAMPLES["caption"])
    assert caption.clip_model == ModelSpec(name="georsclip-vit-b-32") and caption.model.checkpoint == Path("/m/coca.pt")
    assert spec_from_dict(EXAMPLES["classify"]).classes == ["lake", "forest = a dense forest"]
    assert spec_from_dict({**EXAMPLES["classify"], "classes": "resisc45"}).classes == "resisc45"


@pytest.mark.parametrize("kind, overrides, words", [
    ("caption", {"decoding": "sample"}, "caption.decoding must be one of 'greedy', 'beam'"),
    ("caption", {"clip_model": {"colour": 1}}, "caption.clip_model has no field 'colour'"),
    ("classify", {"classes": 3}, "classify.classes: 3 fits none of"),
    ("search", {"scenes": str(SCENE)}, "search.scenes must be a list"),
    ("fine-tune", {"task": "vit"}, "fine-tune.task must be one of 'clip', 'coca'"),
    ("fine-tune", {"epochs": 1.5}, "fine-tune.epochs"),
    ("dataset-build", {"shard": 2}, "dataset-build.shard"),
])
def test_bad_fields_are_named(kind, overrides, words):
    with pytest.raises(UserError, match=words):
        spec_from_dict({**EXAMPLES[kind], **overrides})


def test_fine_tune_gives_only_the_settings_set():
    spec = spec_from_dict(EXAMPLES["fine-tune"])
    assert spec.settings() == {"data": "/d/train.csv", "output_dir": "/tmp/run", "recipe": "rs-coca", "epochs": 2,
                               "lr": 1e-5, "lora_towers": ["image", "decoder"], "precision": "amp_bf16"}


def check_error(data: dict) -> str:
    spec = spec_from_dict(data)
    with pytest.raises(UserError) as info:
        spec.check()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_checks_name_the_file_or_field(tmp_path):
    missing = tmp_path / "nope.tif"
    assert check_error({**EXAMPLES["caption"], "model": {}, "clip_model": None, "scene": str(missing),
                        "out": str(tmp_path / "c.gpkg")}).startswith(str(missing))
    assert check_error({**EXAMPLES["caption"], "model": {}, "clip_model": None,
                        "out": str(tmp_path / "c.shp")}).startswith(f"{tmp_path / 'c.shp'}: unknown vector format '.shp'")
    message = check_error({**EXAMPLES["caption"], "model": {}, "clip_model": {"checkpoint": str(tmp_path / "w.pt"),
                                                                                "arch": "ViT-B-32"}})
    assert message == f"clip_model: {tmp_path / 'w.pt'}: model file not found"
    assert "at least two classes" in check_error({**EXAMPLES["classify"], "classes": ["lake"], "out": str(tmp_path)})
    assert "no such class file" in check_error({**EXAMPLES["classify"], "classes": "nope", "out": str(tmp_path)})
    assert "the query is empty" in check_error({**EXAMPLES["search"], "query": "  "})
    assert check_error({**EXAMPLES["search"], "scenes": [str(missing)]}) == f"{missing}: file not found"
    assert str(tmp_path / "aid") in check_error({**EXAMPLES["eval-zeroshot"], "data": str(tmp_path / "aid")})
    assert str(tmp_path / "p.json") in check_error({**EXAMPLES["eval-caption"], "pred": str(tmp_path / "p.json")})
    assert check_error({**EXAMPLES["dataset-build"], "config": str(tmp_path / "b.yaml")}) == (
        f"{tmp_path / 'b.yaml'}: no such configuration file")
    assert check_error({**EXAMPLES["fine-tune"], "data": str(tmp_path / "t.csv")}) == f"{tmp_path / 't.csv'}: no such file"
    assert "recipe" in check_error({**EXAMPLES["fine-tune"], "recipe": "no-such-recipe"})
