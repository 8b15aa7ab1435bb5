"""Reading a run folder for display: curves from its logs, its state and model from run.json / summary.json."""

from __future__ import annotations

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.training.config import TrainConfig
from rs_vlm_app.training.metrics_log import MetricsLog, read_curves
from rs_vlm_app.training.rundir import describe_run, write_run_json, write_summary


def test_curves_are_every_numeric_column_and_metric_against_steps(tmp_path):
    assert read_curves(tmp_path) == {}
    log = MetricsLog(tmp_path, enabled=True, tensorboard=False)
    log.train(1, {"epoch": 1, "lr": 1e-4, "contrastive_loss": 2.5, "loss": 2.5, "samples_per_s": 30.0})
    log.train(2, {"epoch": 1, "lr": 2e-4, "contrastive_loss": 2.25, "loss": 2.25, "samples_per_s": float("nan")})
    log.evaluation(2, 1, {"retrieval/mean_recall": 41.5, "zeroshot/top1": 12.5})
    curves = read_curves(tmp_path)
    assert curves["loss"] == [(1, 2.5), (2, 2.25)]
    assert curves["lr"] == [(1, 1e-4), (2, 2e-4)]
    assert curves["samples_per_s"] == [(1, 30.0)]  # a NaN is not a point
    assert curves["eval/retrieval/mean_recall"] == [(2, 41.5)] and curves["eval/zeroshot/top1"] == [(2, 12.5)]
    assert "epoch" not in curves and "step" not in curves


def test_describe_run_reads_a_run_and_refuses_other_folders(tmp_path):
    run = tmp_path / "run"
    config = TrainConfig(task="clip", data=str(tmp_path / "train.csv"), output_dir=str(run), epochs=3)
    run.mkdir()
    write_run_json(config, world_size=1)
    info = describe_run(run)
    assert (info.task, info.finished, info.model, info.epochs) == ("clip", False, None, 3)
    (run / "model.safetensors").write_bytes(b"weights")
    (run / "model_config.json").write_text("{}")
    write_summary(run, {"finished": True, "steps": 12, "model": "model.safetensors", "model_config": "model_config.json"})
    info = describe_run(run)
    assert info.finished and info.steps == 12
    assert info.model == run / "model.safetensors" and info.model_config == run / "model_config.json"
    with pytest.raises(UserError, match="holds no rs-vlm training run"):
        describe_run(tmp_path)
    with pytest.raises(UserError, match="no such run folder"):
        describe_run(tmp_path / "nothing")
