"""A corrupt newest training checkpoint does not end the run: the one before it is used."""

from __future__ import annotations

import pytest

from rs_vlm_app.errors import Cancelled, UserError
from rs_vlm_app.training import train
from rs_vlm_app.training.checkpoint import load_newest_state
from rs_vlm_app.training.rundir import list_states
from tests.training.conftest import RecordingReporter, train_config


@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(shapes, tiny_clip, tmp_path):
    config = train_config(shapes, tmp_path / "run", tiny_clip["config"], batch_size=32, save_every=2)
    with pytest.raises(Cancelled):
        train(config, reporter=RecordingReporter(cancel_at=5))
    assert [step for step, _ in list_states(config.run_dir)] == [4, 5]
    newest = list_states(config.run_dir)[-1][1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # cut short, as by a disk fault
    reporter = RecordingReporter()
    result = train(config, reporter=reporter)
    assert result.finished and result.steps == 8
    warnings = [m for level, m in reporter.lines if level == "warning"]
    assert any("cannot read the training checkpoint" in m and "step_00000005.pt.corrupt" in m for m in warnings)
    assert "from step 4 of 8" in reporter.text()
    assert (config.run_dir / "checkpoints" / "step_00000005.pt.corrupt").is_file()


def test_no_readable_checkpoint_is_the_newest_ones_error(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (1, 2):
        (folder / f"step_{step:08d}.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"step_00000002.pt: cannot read the training checkpoint"):
        load_newest_state(tmp_path)
    assert load_newest_state(tmp_path / "empty") is None
