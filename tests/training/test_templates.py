"""One zero-shot template set everywhere, and the published sets by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.tasks.classes import load_templates, template_sets
from rs_vlm_app.training.hooks import ZeroShotHook
from rs_vlm_app.training.recipes import resolve_config


def test_published_sets_by_name():
    assert {"remote_sensing", "clip_resisc45", "clip_eurosat", "clip_benchmark_resisc45"} <= set(template_sets())
    resisc = load_templates("clip_resisc45")
    assert len(resisc) == 18 and resisc[0] == "satellite imagery of {}." and resisc[-1] == "aerial view of the {}."
    assert load_templates("clip_eurosat") == ("a centered satellite photo of {}.", "a centered satellite photo of a {}.",
                                              "a centered satellite photo of the {}.")
    assert load_templates("clip_benchmark_resisc45")[0] == "a sattelite image of {}"  # verbatim, as published
    with pytest.raises(UserError, match=r"no such template file or template set \(sets: clip_benchmark_resisc45"):
        load_templates("clip_resisc")


def test_the_training_hook_and_eval_zeroshot_share_the_default_set(shapes, tmp_path):
    hook = ZeroShotHook(Path(shapes["zeroshot"]))
    assert tuple(hook.templates) == load_templates() == load_templates("remote_sensing")
    assert tuple(ZeroShotHook(Path(shapes["zeroshot"]), "clip_eurosat").templates) == load_templates("clip_eurosat")
    own = tmp_path / "mine.txt"
    own.write_text("a photo of {}.\n")
    assert ZeroShotHook(Path(shapes["zeroshot"]), str(own)).templates == ["a photo of {}."]


def test_a_train_config_keeps_a_set_name_and_makes_a_file_absolute(shapes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mine.txt").write_text("a photo of {}.\n")
    base = {"data": str(shapes["train"]), "output_dir": str(tmp_path / "run")}
    assert resolve_config("clip", {**base, "zeroshot_templates": "clip_resisc45"}).zeroshot_templates == "clip_resisc45"
    assert resolve_config("clip", {**base, "zeroshot_templates": "mine.txt"}).zeroshot_templates == str(
        tmp_path / "mine.txt")
