"""The demo folder's bookkeeping: resume with the same settings, refuse anything else."""

from __future__ import annotations

import pytest

from rs_vlm_app.demo.pipeline import DemoSettings
from rs_vlm_app.demo.state import DemoState
from rs_vlm_app.errors import UserError


def test_new_and_empty_folders_start_fresh(tmp_path):
    assert DemoState.open(tmp_path / "new", {"a": 1}, fresh=False).stages == {}
    assert DemoState.open(tmp_path, {"a": 1}, fresh=False).stages == {}


def test_finished_stages_are_remembered(tmp_path):
    state = DemoState.open(tmp_path, DemoSettings.quick().to_dict(), fresh=False)
    state.finish("world", {"seconds": 1.5})
    again = DemoState.open(tmp_path, DemoSettings.quick().to_dict(), fresh=False)
    assert again.done("world") == {"seconds": 1.5}
    assert again.done("dataset") is None


def test_other_settings_are_refused_and_fresh_starts_over(tmp_path):
    DemoState.open(tmp_path, DemoSettings.quick().to_dict(), fresh=False).finish("world", {"seconds": 1.0})
    (tmp_path / "world").mkdir()
    with pytest.raises(UserError, match=r"other settings \(epochs, scene_size, tiles, train_size\); add --fresh"):
        DemoState.open(tmp_path, DemoSettings.full().to_dict(), fresh=False)
    state = DemoState.open(tmp_path, DemoSettings.full().to_dict(), fresh=True)
    assert state.stages == {} and not (tmp_path / "world").exists()


def test_a_folder_that_is_not_a_demo_is_never_touched(tmp_path):
    (tmp_path / "thesis.docx").write_text("precious")
    for fresh in (False, True):
        with pytest.raises(UserError, match="is not empty and holds no rsvlm demo"):
            DemoState.open(tmp_path, {"a": 1}, fresh=fresh)
    assert (tmp_path / "thesis.docx").read_text() == "precious"
