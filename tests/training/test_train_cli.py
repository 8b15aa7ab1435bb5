"""`rsvlm train`: bad input answered in one line, several processes, and a killed run resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rs_vlm_app.cli import main
from rs_vlm_app.training.metrics_log import read_csv
from tests.training.conftest import REPO, subprocess_env, train_config


def cli_args(shapes, run: Path, model_config: Path, *extra: str, task: str = "clip") -> list[str]:
    return ["train", task, "--data", str(shapes["train"]), "--model-config", str(model_config), "-o", str(run),
            "--batch-size", "16", "--lr", "2e-3", "--wd", "0.1", "--warmup", "3", "--workers", "0",
            "--log-every", "1", "--save-every", "0", "--no-tensorboard", "--device", "cpu", *extra]


def error_line(capsys) -> str:
    """The last stderr line, which must be the only error line."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("rsvlm: error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_csv_with_missing_image_files(shapes, tiny_clip, tmp_path, capsys):
    bad = tmp_path / "train.csv"
    bad.write_text(f"filepath,caption\n{shapes['folder'] / 'images' / 'train_00000.png'},a red circle\n"
                   "images/gone.png,a lake\n")
    args = cli_args(shapes, tmp_path / "run", tiny_clip["config"])
    args[args.index("--data") + 1] = str(bad)
    assert main(args) == 2
    assert error_line(capsys) == (f"rsvlm: error: {bad}: 1 of 2 image files are missing, first on line 3: "
                                  f"images/gone.png (relative paths are read from {tmp_path})")
    assert not (tmp_path / "run").exists()


def test_csv_without_the_caption_column(shapes, tiny_clip, tmp_path, capsys):
    bad = tmp_path / "train.csv"
    bad.write_text("filepath,text\na.png,x\n")
    args = cli_args(shapes, tmp_path / "run", tiny_clip["config"])
    args[args.index("--data") + 1] = str(bad)
    assert main(args) == 2
    assert error_line(capsys) == (f"rsvlm: error: {bad}: no 'caption' column (header: filepath, text); the CSV "
                                  "needs a header with filepath and caption")


def test_captions_longer_than_the_context_are_truncated_and_counted(shapes, tiny_clip, tmp_path, capsys):
    long_caption = " ".join(["a very long description of a red circle in a field"] * 4)  # > 32 tokens
    rows = read_csv(shapes["train"])[:32]
    data = tmp_path / "train.csv"
    lines = ["filepath,caption"]
    for i, row in enumerate(rows):
        caption = long_caption if i % 4 == 0 else row["caption"]
        lines.append(f"{shapes['folder'] / row['filepath']},{caption}")
    data.write_text("\n".join(lines) + "\n")
    args = cli_args(shapes, tmp_path / "run", tiny_clip["config"], "--log-every", "100")
    args[args.index("--data") + 1] = str(data)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "rsvlm: warning: captions longer than the model's context (32 tokens) are truncated: 8 in the last 2 steps" in err
    assert "rsvlm: warning: epoch 1: 8 of 32 captions were longer than 32 tokens and were truncated" in err
    assert [r["truncated_captions"] for r in read_csv(tmp_path / "run" / "train_log.csv")] == ["8"]


def test_init_checkpoint_of_another_architecture(shapes, tiny_clip, tiny_coca, tmp_path, capsys):
    args = cli_args(shapes, tmp_path / "run", tiny_clip["config"], "--init", str(tiny_coca["checkpoint"]))
    assert main(args) == 2
    line = error_line(capsys)
    assert line.startswith(f"rsvlm: error: {tiny_coca['checkpoint']}: --init checkpoint does not fit architecture "
                           "rsvlm-test-tiny-clip (")
    assert "missing keys, first" in line and "unexpected keys, first text.", line
    assert line.endswith("was it trained for another architecture?")


@pytest.mark.parametrize(("init", "message"), [
    ("weights/nope.pt", "weights/nope.pt: --init: no such checkpoint file"),
    ("laion9000", "--init 'laion9000' is neither a checkpoint file nor an open_clip pretrained tag of "
                  "rsvlm-test-tiny-clip (known: none for this architecture)"),
])
def test_init_that_is_neither_file_nor_tag(shapes, tiny_clip, tmp_path, capsys, init, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(cli_args(shapes, tmp_path / "run", tiny_clip["config"], "--init", init)) == 2
    assert error_line(capsys) == f"rsvlm: error: {message}"


def test_openai_weights_offline_is_one_line(shapes, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    args = ["train", "clip", "--data", str(shapes["train"]), "--model", "ViT-B-32", "--init", "openai",
            "-o", str(tmp_path / "run"), "--device", "cpu"]
    assert main(args) == 2
    line = error_line(capsys)
    assert line.startswith("rsvlm: error: cannot get open_clip's 'openai' weights for ViT-B-32 (offline or not cached")
    assert line.endswith("or pass --init FILE with a checkpoint")


def test_run_directory_holding_a_different_run(shapes, tiny_clip, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(cli_args(shapes, run, tiny_clip["config"], "--stop-after-steps", "1")) == 0
    capsys.readouterr()
    assert main(cli_args(shapes, run, tiny_clip["config"], "--lr", "1e-4")) == 2
    assert error_line(capsys) == (f"rsvlm: error: {run}: already holds a different training run (lr 0.002 -> "
                                  "0.0001); choose another run directory with -o, or give that run's settings "
                                  "to continue it")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"x")
    assert main(cli_args(shapes, other, tiny_clip["config"])) == 2
    assert error_line(capsys) == (f"rsvlm: error: {other}: folder is not empty and holds no rs-vlm training run; "
                                  "choose a new or empty run directory with -o")
    # the same settings continue the run (and --log-every may change)
    assert main(cli_args(shapes, run, tiny_clip["config"], "--stop-after-steps", "2", "--log-every", "5")) == 0
    assert "continuing the run" in capsys.readouterr().err


def test_recipe_of_the_other_task(shapes, tmp_path, capsys):
    args = ["train", "clip", "--data", str(shapes["train"]), "--recipe", "rs-coca", "-o", str(tmp_path / "r")]
    assert main(args) == 2
    assert error_line(capsys) == "rsvlm: error: recipe 'rs-coca' is for `rsvlm train coca`"


def test_recipes_are_listed(capsys):
    assert main(["train", "recipes"]) == 0
    out = capsys.readouterr().out
    assert "hqrs-clip" in out and "rsvlm train coca --recipe rs-coca" in out


def run_cli_subprocess(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rs_vlm_app", *args], env=subprocess_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def load_safetensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
def test_two_processes_follow_the_loss_trajectory_of_one(shapes, tiny_clip, tmp_path):
    from rs_vlm_app.training import train

    one = train_config(shapes, tmp_path / "one", tiny_clip["config"], batch_size=16, stop_after_steps=5)
    train(one)
    two = run_cli_subprocess(cli_args(shapes, tmp_path / "two", tiny_clip["config"], "--batch-size", "8",
                                      "--nproc", "2", "--stop-after-steps", "5"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "run.json").read_text())["world_size"] == 2
    losses = [[float(r["contrastive_loss"]) for r in read_csv(run / "train_log.csv")]
              for run in (tmp_path / "one", tmp_path / "two")]
    assert len(losses[0]) == 5
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    from rs_vlm_app.training.checkpoint import load_state

    states = [load_state(run / "checkpoints" / "step_00000005.pt") for run in (tmp_path / "one", tmp_path / "two")]
    for key, value in states[0]["model"].items():
        np.testing.assert_allclose(states[1]["model"][key].numpy(), value.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_end(shapes, tiny_clip, tmp_path):
    from rs_vlm_app.training import train

    run = tmp_path / "run"
    args = cli_args(shapes, run, tiny_clip["config"], "--batch-size", "32", "--epochs", "2", "--save-every", "3")
    process = subprocess.Popen([sys.executable, "-m", "rs_vlm_app", *args], env=subprocess_env(), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not (run / "checkpoints" / "step_00000003.pt").exists():
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert not (run / "summary.json").exists()

    resumed = run_cli_subprocess(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "continuing the run" in resumed.stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == 16  # 2 epochs x 256 / 32
    assert [int(r["step"]) for r in read_csv(run / "train_log.csv")] == list(range(1, 17))

    reference = train_config(shapes, tmp_path / "reference", tiny_clip["config"], batch_size=32, epochs=2)
    train(reference)
    final, straight = load_safetensors(run / "model.safetensors"), load_safetensors(reference.run_dir / "model.safetensors")
    for key, value in straight.items():
        np.testing.assert_allclose(final[key].numpy(), value.numpy(), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_sigterm_stops_at_a_step_with_a_checkpoint(shapes, tiny_clip, tmp_path):
    run = tmp_path / "run"
    args = cli_args(shapes, run, tiny_clip["config"], "--epochs", "50")
    process = subprocess.Popen([sys.executable, "-m", "rs_vlm_app", *args], env=subprocess_env(), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not (run / "train_log.csv").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 3, err[-3000:]
    assert "stop requested: finishing the current step and writing a checkpoint" in err
    assert "rsvlm: cancelled; finished work is kept, run the same command again to resume" in err
    states = sorted((run / "checkpoints").glob("step_*.pt"))
    assert len(states) == 1
    last_logged = int(read_csv(run / "train_log.csv")[-1]["step"])
    assert states[0].name == f"step_{last_logged:08d}.pt"


def test_selo_evaluation_during_training(shapes, tiny_clip, tmp_path, capsys):
    """--val-selo: Rsu/Ras/Rda/Rmi of the model being trained, logged and kept per evaluation."""
    from tests.conftest import SELO

    selo = tmp_path / "selo"
    (selo / "imgs").mkdir(parents=True)
    (selo / "annotations").mkdir()
    (selo / "imgs" / "visible_scene.png").symlink_to(SELO / "parity" / "visible_scene.png")
    (selo / "annotations" / "anno.json").write_text((SELO / "parity" / "visible_anno.json").read_text())
    run = tmp_path / "run"
    args = cli_args(shapes, run, tiny_clip["config"], "--val-selo", str(selo), "--epochs", "1")
    assert main(args) == 0, capsys.readouterr().err
    rows = read_csv(run / "eval_log.csv")
    selo_rows = {r["metric"]: float(r["value"]) for r in rows if r["metric"].startswith("selo/")}
    assert set(selo_rows) == {"selo/Rsu", "selo/Ras", "selo/Rda", "selo/Rmi"}
    assert all(0.0 <= v <= 1.0 for v in selo_rows.values())
    step = max(int(r["step"]) for r in rows)
    report = json.loads((run / "selo" / f"step_{step}" / "selo_metrics.json").read_text())
    assert [s["caption"] for s in report["per_sample"]] == [
        "a large dark lake in the middle of green fields.", "yellow harvested farmland on the right side."]
    assert report["mean"]["Rmi"] == pytest.approx(selo_rows["selo/Rmi"])


def test_val_selo_folder_without_annotations(shapes, tiny_clip, tmp_path, capsys):
    empty = tmp_path / "noselo"
    empty.mkdir()
    assert main(cli_args(shapes, tmp_path / "run", tiny_clip["config"], "--val-selo", str(empty))) == 2
    assert "no annotations/anno.json here" in error_line(capsys)
    assert not (tmp_path / "run").exists()
