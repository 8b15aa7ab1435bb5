"""Fixtures for training tests: a synthetic shapes dataset, configs, a recording reporter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rs_vlm_app.training.config import TrainConfig
from tests.training import synthetic

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Two busy cores: several torch threads per process slow every step down many times over."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> dict[str, Path]:
    """256 training pairs, a validation CSV (one image per class, two captions each), a zero-shot CSV."""
    folder = tmp_path_factory.mktemp("shapes")
    return {
        "train": synthetic.write_csv_dataset(folder, 256, seed=0),
        "val": synthetic.write_csv_dataset(folder, 8, seed=5, captions_per_image=2, name="val.csv"),
        "zeroshot": synthetic.write_label_csv(folder, 16, seed=7),
        "folder": folder,
    }


def train_config(shapes, run_dir: Path, model_config: Path, **changes) -> TrainConfig:
    values = {
        "task": "clip", "data": str(shapes["train"]), "output_dir": str(run_dir),
        "model_config": str(model_config), "epochs": 1, "batch_size": 16, "lr": 2e-3, "wd": 0.1,
        "warmup": 3, "workers": 0, "log_every": 1, "save_every": 0, "tensorboard": False,
    }
    values.update(changes)
    return TrainConfig(**values)


def subprocess_env() -> dict[str, str]:
    """Environment of an `rsvlm` subprocess: this checkout, one thread per process, no hub."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"  # both: an in-process `rsvlm` may have set MKL's
    env["HF_HUB_OFFLINE"] = "1"
    return env


class RecordingReporter:
    """Keeps every progress event and log line; asks to cancel once ``cancel_at`` steps are done."""

    def __init__(self, cancel_at: int | None = None):
        self.events: list[tuple[str, int, int | None]] = []
        self.lines: list[tuple[str, str]] = []
        self.cancel_at = cancel_at

    def progress(self, stage, done, total=None):
        self.events.append((stage, done, total))

    def log(self, message, level="info"):
        self.lines.append((level, message))

    def cancel_requested(self):
        done = [d for s, d, _ in self.events if s == "train"]
        return self.cancel_at is not None and bool(done) and done[-1] >= self.cancel_at

    def text(self) -> str:
        return "\n".join(message for _, message in self.lines)
