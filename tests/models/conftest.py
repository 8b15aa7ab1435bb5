"""Fixtures for the model tests: tiny checkpoints in every layout, a second tiny architecture."""

from __future__ import annotations

import pytest

from tests import tinymodels


@pytest.fixture(scope="session")
def tiny_clip_formats(tiny_clip, tmp_path_factory):
    """The tiny CLIP's weights saved in every layout the loader accepts: {format: path}."""
    folder = tmp_path_factory.mktemp("tiny-clip-formats")
    out = {}
    for fmt in tinymodels.FORMATS + tinymodels.EXTRA_FORMATS:
        suffix = ".safetensors" if fmt == "safetensors" else ".pt"
        out[fmt] = tinymodels.save_checkpoint(tiny_clip["model"], folder / f"tiny_{fmt}{suffix}", fmt)
    return out


@pytest.fixture(scope="session")
def wide_clip(tmp_path_factory):
    """A second tiny CLIP of another size (embed dim 48, width 96): a "wrong architecture"."""
    folder = tmp_path_factory.mktemp("wide-clip")
    config = tinymodels.tiny_config("clip")
    config["embed_dim"] = 48
    config["vision_cfg"]["width"] = 96
    config["text_cfg"]["width"] = 96
    path = tinymodels.write_config(folder, "rsvlm-test-wide-clip", config)
    model = tinymodels.build_model(path, seed=1)
    checkpoint = tinymodels.save_checkpoint(model, folder / "wide_clip.pt", "state_dict")
    return {"config": path, "checkpoint": checkpoint, "model": model}


@pytest.fixture(scope="session")
def selo_parity():
    """../shared/selo/parity: the scene, the tiny model and the reference tile cosines."""
    from tests.conftest import SELO

    folder = SELO / "parity"
    if not (folder / "tiny_clip.pt").is_file():
        pytest.skip(f"SeLo parity material not found in {folder}")
    return folder
