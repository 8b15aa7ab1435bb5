"""The job specs the plugin writes are the app's specs: every one is read back by the worker's own
parser (rs_vlm_app.jobs.specs.spec_from_dict, in the app's environment) with the values intact.

A renamed or retyped field in rs_vlm_app/jobs/kinds/ fails here, not in a user's QGIS."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.qgis.conftest import NAIP, app_checkout, app_env, app_python, need_kind

READ_BACK = (
    "import json, sys\n"
    "from rs_vlm_app.errors import UserError\n"
    "from rs_vlm_app.jobs.specs import spec_from_dict\n"
    "answers = []\n"
    "for spec in json.load(sys.stdin):\n"
    "    try:\n"
    "        answers.append(spec_from_dict(spec).to_dict())\n"
    "    except UserError as exc:\n"
    "        answers.append({'refused': str(exc)})\n"
    "print(json.dumps(answers))\n"
)


def read_back(specs: list[dict]) -> list[dict]:
    """The specs as the worker reads them (``{"refused": message}`` for one it refuses)."""
    proc = subprocess.run([str(app_python()), "-c", READ_BACK], input=json.dumps(specs), cwd=app_checkout(),
                          env=app_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def plugin_specs(installed_plugin):
    from rsvlm_qgis import specs

    return specs


@pytest.fixture(scope="module")
def model(installed_plugin, tmp_path_factory):
    from rsvlm_qgis.settings import ModelChoice

    folder = tmp_path_factory.mktemp("weights")
    (folder / "w.pt").write_bytes(b"")
    (folder / "c.json").write_text("{}")
    return ModelChoice(str(folder / "w.pt"), "ViT-B-32", str(folder / "c.json")).to_spec("cpu")


def test_a_model_choice_is_the_apps_model_object(plugin_specs, model, tmp_path):
    (back,) = read_back([plugin_specs.localize(str(NAIP), ["a lake"], tmp_path, model)])
    for key in ("checkpoint", "arch", "model_config", "device"):
        assert back["model"][key] == model[key]
    from rsvlm_qgis.settings import ModelChoice

    (named,) = read_back([plugin_specs.localize(str(NAIP), ["a lake"], tmp_path,
                                                ModelChoice("georsclip-vit-b-32").to_spec(""))])
    assert named["model"]["name"] == "georsclip-vit-b-32" and named["model"]["device"] == "auto"


def test_localize_spec_with_every_option(plugin_specs, model, tmp_path):
    spec = plugin_specs.localize(str(NAIP), ["a lake", "a road"], tmp_path / "out", model, grid="256,512@0.25",
                                 hotspot_threshold=0.7, min_valid=0.25, bands=[3, 2, 1], compat="selo",
                                 heatmap_pixel=4.0, cog=True)
    (back,) = read_back([spec])
    assert back["kind"] == "localize"
    assert back["scene"] == str(NAIP) and back["out"] == str(tmp_path / "out")
    assert back["queries"] == ["a lake", "a road"]
    assert (back["grid"], back["compat"], back["bands"]) == ("256,512@0.25", "selo", [3, 2, 1])
    assert (back["hotspot_threshold"], back["min_valid"], back["heatmap_pixel"], back["cog"]) == (0.7, 0.25, 4.0, True)


def test_unset_localize_options_take_the_workers_defaults(plugin_specs, model, tmp_path):
    (back,) = read_back([plugin_specs.localize(str(NAIP), ["a lake"], tmp_path, model)])
    assert back["grid"] == "selo" and back["bands"] is None and back["heatmap_pixel"] is None
    assert back["min_valid"] == 0.5 and back["hotspot_threshold"] == 0.6 and back["cog"] is False


def test_caption_spec(plugin_specs, model, spec_kinds, tmp_path):
    need_kind(spec_kinds, "caption")
    spec = plugin_specs.caption(str(NAIP), tmp_path / "c.gpkg", model, grid="256", decoding="greedy", beams=2,
                                max_len=12, clip_model=model, bands=[1, 2, 3])
    (back,) = read_back([spec])
    assert back["kind"] == "caption" and back["out"] == str(tmp_path / "c.gpkg")
    assert (back["grid"], back["decoding"], back["beams"], back["max_len"], back["bands"]) == (
        "256", "greedy", 2, 12, [1, 2, 3])
    assert back["clip_model"]["checkpoint"] == model["checkpoint"]


def test_classify_spec(plugin_specs, model, spec_kinds, tmp_path):
    need_kind(spec_kinds, "classify")
    spec = plugin_specs.classify(str(NAIP), "aid", tmp_path / "cls", model, top_k=2, grid="128",
                                 bands=[1, 2, 3], probabilities=False)
    (back,) = read_back([spec])
    assert back["kind"] == "classify" and back["classes"] == "aid" and back["out"] == str(tmp_path / "cls")
    assert (back["top_k"], back["grid"], back["bands"], back["probabilities"]) == (2, "128", [1, 2, 3], False)
    (named,) = read_back([plugin_specs.classify(str(NAIP), ["lake", "forest = a dense forest"], tmp_path, model)])
    assert named["classes"] == ["lake", "forest = a dense forest"]


def test_search_spec(plugin_specs, model, spec_kinds, tmp_path):
    need_kind(spec_kinds, "search")
    spec = plugin_specs.search([str(NAIP), str(NAIP)], "a lake", tmp_path / "s.gpkg", model, top_k=5, grid="256",
                               contact_sheet=False, bands=[4, 3, 2])
    (back,) = read_back([spec])
    assert back["kind"] == "search" and back["scenes"] == [str(NAIP), str(NAIP)] and back["query"] == "a lake"
    assert (back["top_k"], back["grid"], back["contact_sheet"], back["bands"]) == (5, "256", False, [4, 3, 2])


def test_dataset_build_spec(plugin_specs, spec_kinds, tmp_path):
    need_kind(spec_kinds, "dataset-build")
    back, bare = read_back([plugin_specs.dataset_build(str(tmp_path / "build.yaml"), out=str(tmp_path / "ds"),
                                                       shard="2/4"),
                            plugin_specs.dataset_build(str(tmp_path / "build.yaml"))])
    assert back == {"kind": "dataset-build", "config": str(tmp_path / "build.yaml"), "out": str(tmp_path / "ds"),
                    "shard": "2/4", "engine": "local", "workers": None, "ray_address": None}
    assert bare["out"] is None and bare["shard"] is None


def test_fine_tune_spec(plugin_specs, spec_kinds, tmp_path):
    need_kind(spec_kinds, "fine-tune")
    spec = plugin_specs.fine_tune("coca", str(tmp_path / "train.csv"), str(tmp_path / "run"), recipe="rs-coca",
                                  arch="coca_ViT-B-32", model_config=None, init="none", epochs=2, batch_size=4,
                                  lr=1e-5, lora_rank=8, device="cpu", val_data=str(tmp_path / "val.csv"))
    (back,) = read_back([spec])
    assert (back["task"], back["data"], back["out"], back["recipe"]) == (
        "coca", str(tmp_path / "train.csv"), str(tmp_path / "run"), "rs-coca")
    assert (back["arch"], back["init"], back["epochs"], back["batch_size"], back["lr"], back["lora_rank"]) == (
        "coca_ViT-B-32", "none", 2, 4, 1e-5, 8)
    assert back["device"] == "cpu" and back["val_data"] == str(tmp_path / "val.csv")
    assert back["model_config"] is None and back["wd"] is None  # unset: the recipe decides


def test_the_worker_refuses_a_field_it_does_not_know(plugin_specs, model, tmp_path):
    """The check above can fail: an unknown field is refused, not ignored."""
    spec = dict(plugin_specs.localize(str(NAIP), ["a lake"], tmp_path, model), hotspot_treshold=0.5)
    (back,) = read_back([spec])
    assert "hotspot_treshold" in back["refused"]
