"""The specs the window builds (a question, "Caption tiles", "Classify tiles") are the client's and
the worker's own parser reads them with every value intact: the spec contract covers the GUI too."""

from __future__ import annotations

import pytest

from rs_vlm_app.gui.model_picker import ModelChoice
from rs_vlm_app.jobs.specs import spec_from_dict
from tests.conftest import SAMPLES

SCENE = SAMPLES / "naip_2020_5m.tif"


@pytest.fixture
def submitted(window, monkeypatch):
    """The specs the window hands to its JobManager (no worker starts)."""
    specs: list[tuple[dict, str, bool]] = []

    def submit(spec, title, interactive=True):
        specs.append((spec, title, interactive))
        return type("J", (), {"id": f"j{len(specs)}", "state": "queued", "finished_state": False, "title": title,
                              "kind": spec.get("kind")})()

    monkeypatch.setattr(window.jobs, "submit", submit)
    monkeypatch.setattr(window.jobs_panel, "select", lambda job: None)
    return specs


def test_a_question_is_a_localize_spec_the_worker_reads(window, submitted, tiny_choice):
    window.model_picker.add_custom(tiny_choice)
    assert window.open_scene(SCENE)
    window.ask("  a   lake ")
    ((spec, title, interactive),) = submitted
    back = spec_from_dict(spec)
    assert interactive and title == f"“a lake” on {SCENE.name}"
    assert (back.kind, back.scene, back.queries, back.out) == ("localize", SCENE, ["a lake"], window.results_folder())
    assert str(back.model.checkpoint) == tiny_choice.checkpoint and str(back.model.model_config) == tiny_choice.model_config


def test_tile_jobs_are_caption_and_classify_specs_the_worker_reads(window, submitted, tiny_choice, tmp_path):
    window.model_picker.add_custom(tiny_choice)
    assert window.open_scene(SCENE)
    coca = ModelChoice(checkpoint=str(tmp_path / "coca.pt"), arch="coca_ViT-B-32")
    window.caption_tiles(coca, grid="128", decoding="greedy", clip_score=True)
    window.classify_tiles(["lake", "forest"], grid="224@0.5")
    window.classify_tiles("eurosat")
    caption, named, bundled = (spec_from_dict(spec) for spec, _title, _i in submitted)
    assert (caption.kind, caption.grid, caption.decoding, caption.out.suffix) == ("caption", "128", "greedy", ".gpkg")
    assert str(caption.model.checkpoint) == coca.checkpoint and caption.model.arch == "coca_ViT-B-32"
    assert str(caption.clip_model.checkpoint) == tiny_choice.checkpoint
    assert (named.kind, named.classes, named.grid) == ("classify", ["lake", "forest"], "224@0.5")
    assert (bundled.classes, bundled.grid, bundled.out.name) == ("eurosat", "256", "classes_eurosat")
    assert all(interactive for _spec, _title, interactive in submitted)
