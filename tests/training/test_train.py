"""Training runs in this process: learning, outputs, saved models, accumulation, cancel and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rs_vlm_app.errors import Cancelled
from rs_vlm_app.training import train
from rs_vlm_app.training.checkpoint import load_state
from rs_vlm_app.training.metrics_log import read_csv
from rs_vlm_app.training.rundir import list_states
from tests.training.conftest import RecordingReporter, train_config
from tests.training.synthetic import write_shards


def load_safetensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def clip_run(shapes, tiny_clip, tmp_path_factory):
    """A tiny CLIP trained 4 epochs x 8 steps on the shapes, evaluated after each epoch."""
    run = tmp_path_factory.mktemp("clip") / "run"
    config = train_config(shapes, run, tiny_clip["config"], epochs=4, batch_size=32, log_every=4, save_every=5,
                          val_data=str(shapes["val"]), val_zeroshot=str(shapes["zeroshot"]), tensorboard=True)
    reporter = RecordingReporter()
    result = train(config, reporter=reporter)
    return config, result, reporter


def evaluate(config, model):
    """Retrieval and zero-shot metrics of ``model`` with the run's evaluation code."""
    import contextlib

    from rs_vlm_app.training import model_setup
    from rs_vlm_app.training.data import read_caption_csv
    from rs_vlm_app.training.hooks import EvalContext, RetrievalHook, ZeroShotHook

    bundle = model_setup.build(config)
    ctx = EvalContext(model=model.eval(), tokenizer=bundle.tokenizer, context_length=bundle.context_length,
                      transform=bundle.eval_transform, device=torch.device("cpu"),
                      autocast=contextlib.nullcontext, batch_size=32, step=0, epoch=0, is_coca=False)
    from pathlib import Path

    metrics = RetrievalHook(read_caption_csv(Path(config.val_data)))(ctx)
    metrics.update(ZeroShotHook(Path(config.val_zeroshot))(ctx))
    return metrics


def test_training_raises_retrieval_and_zero_shot_far_above_chance(clip_run, tiny_clip):
    config, result, _ = clip_run
    before = evaluate(config, tiny_clip["model"])  # the same seeded random init the run started from
    after = result.metrics
    # 8 validation images with 2 captions each, 8 classes: chance is 12.5 % for every R@1 and top-1
    assert after["val/text_to_image_R@1"] >= 75.0
    assert after["val/text_to_image_R@1"] >= before["val/text_to_image_R@1"] + 40.0
    assert after["val/image_to_text_R@1"] >= 75.0
    assert after["zeroshot/top1"] >= 75.0 > before["zeroshot/top1"] + 30.0
    assert after["val/contrastive_loss"] < before["val/contrastive_loss"] - 0.5


def test_run_directory_holds_models_logs_and_checkpoints(clip_run):
    config, result, reporter = clip_run
    run = config.run_dir
    assert result.finished and result.steps == result.total_steps == 32
    for name in ("run.json", "model.safetensors", "epoch_1.safetensors", "epoch_4.safetensors",
                 "model_config.json", "open_clip_config.json", "summary.json", "train_log.csv", "eval_log.csv"):
        assert (run / name).is_file(), name
    assert [step for step, _ in list_states(run)] == [30, 32]  # every 5 steps and epoch ends, newest 2 kept
    train_rows = read_csv(run / "train_log.csv")
    assert [int(r["step"]) for r in train_rows] == list(range(4, 33, 4))
    assert float(train_rows[-1]["contrastive_loss"]) < float(train_rows[0]["contrastive_loss"])
    eval_rows = read_csv(run / "eval_log.csv")
    r1 = [(int(r["step"]), int(r["epoch"])) for r in eval_rows if r["metric"] == "val/text_to_image_R@1"]
    assert r1 == [(8, 1), (16, 2), (24, 3), (32, 4)]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 32 and summary["model"] == "model.safetensors"
    assert json.loads((run / "run.json").read_text())["config"]["lr"] == config.lr
    train_events = [e for e in reporter.events if e[0] == "train"]
    assert train_events[0] == ("train", 1, 32) and train_events[-1] == ("train", 32, 32)
    # TensorBoard events carry the same scalars
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"train/contrastive_loss", "val/text_to_image_R@1", "zeroshot/top1"} <= set(events.Tags()["scalars"])


def test_saved_model_loads_in_plain_open_clip_with_the_same_embeddings(clip_run, tiny_clip):
    import open_clip

    config, result, _ = clip_run
    run = config.run_dir
    trained = open_clip.create_model(config.model_name, pretrained=None)
    trained.load_state_dict(load_state(list_states(run)[-1][1])["model"])  # the model as training left it
    open_clip.add_model_config(run / "model_config.json")
    by_config = open_clip.create_model("model_config", pretrained=str(result.model_path))
    by_folder = open_clip.create_model(f"local-dir:{run}")
    images = torch.rand(4, 3, 64, 64)
    tokens = open_clip.get_tokenizer(config.model_name)(["a red circle", "a blue square", "x", "white"])
    with torch.no_grad():
        expected = trained.eval().encode_image(images), trained.encode_text(tokens)
        for model in (by_config.eval(), by_folder.eval()):
            torch.testing.assert_close(model.encode_image(images), expected[0])
            torch.testing.assert_close(model.encode_text(tokens), expected[1])
    last_epoch = load_safetensors(run / "epoch_4.safetensors")
    final = load_safetensors(run / "model.safetensors")
    assert all(torch.equal(last_epoch[k], final[k]) for k in final)


def test_a_finished_run_is_not_trained_again(clip_run):
    config, result, _ = clip_run
    reporter = RecordingReporter()
    again = train(config, reporter=reporter)
    assert again.finished and again.steps == 32
    assert not [e for e in reporter.events if e[0] == "train"]
    assert "already finished" in reporter.text()


@pytest.mark.slow
def test_tiny_coca_lowers_its_caption_loss(shapes, tiny_coca, tmp_path):
    config = train_config(shapes, tmp_path / "run", tiny_coca["config"], task="coca", batch_size=8,
                          log_every=4, stop_after_steps=12, val_data=str(shapes["val"]))
    result = train(config, reporter=RecordingReporter())
    assert not result.finished and result.steps == 12
    rows = read_csv(tmp_path / "run" / "train_log.csv")
    caption = [float(r["caption_loss"]) for r in rows]
    assert len(caption) == 3
    assert caption[-1] < caption[0] - 1.0, caption
    assert float(rows[0]["loss"]) == pytest.approx(
        2.0 * caption[0] + 1.0 * float(rows[0]["contrastive_loss"]), rel=1e-5)


def test_gradient_accumulation_equals_one_big_batch(shapes, tiny_clip, tmp_path):
    big = train_config(shapes, tmp_path / "big", tiny_clip["config"], batch_size=16, stop_after_steps=4)
    accumulated = train_config(shapes, tmp_path / "acc", tiny_clip["config"], batch_size=8, grad_accum=2,
                               stop_after_steps=4)
    train(big)
    train(accumulated)
    losses = [[float(r["contrastive_loss"]) for r in read_csv(c.run_dir / "train_log.csv")] for c in (big, accumulated)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    weights = [load_state(list_states(c.run_dir)[-1][1])["model"] for c in (big, accumulated)]
    for key in weights[0]:
        # Adam turns rounding noise in near-zero gradients into updates of up to lr (2e-3) in size
        torch.testing.assert_close(weights[0][key], weights[1][key], atol=1e-4, rtol=1e-4)


def test_cancel_writes_a_checkpoint_and_the_run_continues_to_the_same_end(shapes, tiny_clip, tmp_path):
    config = train_config(shapes, tmp_path / "run", tiny_clip["config"], batch_size=32)
    with pytest.raises(Cancelled):
        train(config, reporter=RecordingReporter(cancel_at=3))
    assert [step for step, _ in list_states(config.run_dir)] == [3]
    assert not (config.run_dir / "model.safetensors").exists()
    reporter = RecordingReporter()
    result = train(config, reporter=reporter)
    assert result.finished and result.steps == 8
    assert "continuing the run" in reporter.text() and "from step 3 of 8" in reporter.text()
    assert [int(r["step"]) for r in read_csv(config.run_dir / "train_log.csv")] == list(range(1, 9))
    reference = train_config(shapes, tmp_path / "reference", tiny_clip["config"], batch_size=32)
    train(reference)
    resumed = load_safetensors(config.run_dir / "model.safetensors")
    straight = load_safetensors(reference.run_dir / "model.safetensors")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], atol=1e-5, rtol=1e-4)


def test_locked_image_tower_does_not_change(shapes, tiny_clip, tmp_path):
    config = train_config(shapes, tmp_path / "run", tiny_clip["config"], lock_image=True, stop_after_steps=3)
    train(config)
    state = load_state(list_states(config.run_dir)[-1][1])["model"]
    initial = tiny_clip["model"].state_dict()
    assert all(torch.equal(state[k], initial[k]) for k in initial if k.startswith("visual."))
    assert not torch.equal(state["text_projection"], initial["text_projection"])


def test_lora_run_saves_a_plain_model(shapes, tiny_clip, tmp_path):
    config = train_config(shapes, tmp_path / "run", tiny_clip["config"], lora_rank=4, epochs=1, batch_size=64)
    reporter = RecordingReporter()
    result = train(config, reporter=reporter)
    saved = load_safetensors(result.model_path)
    initial = tiny_clip["model"].state_dict()
    assert set(saved) == set(initial)
    changed = [k for k in initial if not torch.equal(saved[k], initial[k])]
    assert changed and all(k.endswith(("in_proj_weight", "out_proj.weight")) for k in changed)
    assert "trainable" in reporter.text()


def test_trains_on_webdataset_shards(tiny_clip, tmp_path, shapes):
    write_shards(tmp_path / "shards", 64, per_shard=20)
    config = train_config(shapes, tmp_path / "run", tiny_clip["config"],
                          data=str(tmp_path / "shards" / "shard-{000000..000003}.tar"))
    result = train(config)
    assert result.finished and result.steps == 4  # 64 samples / batch 16


def test_without_tensorboard_metrics_go_to_csv_only(tmp_path, monkeypatch, caplog):
    import logging
    import sys

    from rs_vlm_app.training.metrics_log import MetricsLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with caplog.at_level(logging.INFO, logger="rs_vlm_app"):
        metrics = MetricsLog(tmp_path, enabled=True, tensorboard=True)
    assert "TensorBoard is not installed" in caplog.text
    metrics.train(1, {"epoch": 1, "loss": 2.5})
    metrics.close()
    assert read_csv(tmp_path / "train_log.csv") == [{"step": "1", "epoch": "1", "loss": "2.5"}]
    assert not (tmp_path / "tensorboard").exists()
