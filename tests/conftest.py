"""Shared fixtures: paths to ../shared data and tiny open_clip models with random weights."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests import tinymodels

REPO = Path(__file__).resolve().parents[1]

def _find_shared() -> Path:
    """../shared beside the checkout (also from a git worktree one level deeper); RSVLM_SHARED overrides."""
    if os.environ.get("RSVLM_SHARED"):
        return Path(os.environ["RSVLM_SHARED"])
    for base in (REPO.parent, REPO.parent.parent):
        if (base / "shared" / "samples").is_dir():
            return base / "shared"
    return REPO.parent / "shared"


SHARED = _find_shared()
SAMPLES = SHARED / "samples"
SELO = SHARED / "selo"

# Never reach a model hub from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own rs-vlm cache (models, embeddings) and Hugging Face hub cache, never the user's."""
    cache = tmp_path_factory.mktemp("rsvlm-cache")
    monkeypatch.setenv("RSVLM_CACHE_DIR", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-hub-cache")))
    return cache


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny CLIP: its config file and a plain state_dict checkpoint (random weights, seed 0)."""
    folder = tmp_path_factory.mktemp("tiny-clip")
    config = tinymodels.write_config(folder, "rsvlm-test-tiny-clip", tinymodels.tiny_config("clip"))
    model = tinymodels.build_model(config, seed=0)
    checkpoint = tinymodels.save_checkpoint(model, folder / "tiny_clip.pt", "state_dict")
    return {"config": config, "checkpoint": checkpoint, "model": model}


@pytest.fixture(scope="session")
def tiny_coca(tmp_path_factory):
    """A tiny CoCa: its config file and a plain state_dict checkpoint (random weights, seed 0)."""
    folder = tmp_path_factory.mktemp("tiny-coca")
    config = tinymodels.write_config(folder, "rsvlm-test-tiny-coca", tinymodels.tiny_config("coca"))
    model = tinymodels.build_model(config, seed=0)
    checkpoint = tinymodels.save_checkpoint(model, folder / "tiny_coca.pt", "state_dict")
    return {"config": config, "checkpoint": checkpoint, "model": model}


@pytest.fixture(scope="session")
def taught_coca(tmp_path_factory):
    """A tiny CoCa taught to caption every image with one fixed sentence (tests/taught_coca.py)."""
    from tests.taught_coca import teach_coca

    return teach_coca(tmp_path_factory.mktemp("taught-coca"))


# tests/qgis/ run inside QGIS's own Python (scripts/test.sh runs them with .venv-qgis); the
# project's venv cannot import qgis, so its run leaves them out.
if importlib.util.find_spec("qgis") is None:
    collect_ignore = ["qgis"]
