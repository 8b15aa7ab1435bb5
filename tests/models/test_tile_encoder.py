"""The declared seam between tasks and models: every encoder the tasks are given fits TileEncoder,
and a model spec's mistakes are worded in its fields for every front end."""

from __future__ import annotations

import numpy as np
import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.models.cache import ModelCache, ModelLoadError
from rs_vlm_app.models.spec import ModelSpec
from rs_vlm_app.models.tile_encoder import TileCaptioner, TileEncoder
from tests.colour_encoder import ColourEncoder


def test_real_and_stand_in_encoders_fit_the_protocol(tiny_clip, tiny_coca):
    cache = ModelCache()
    clip = cache.clip_encoder(ModelSpec(checkpoint=tiny_clip["checkpoint"], model_config=tiny_clip["config"],
                                        device="cpu"))
    assert isinstance(clip, TileEncoder) and isinstance(ColourEncoder(), TileEncoder)
    assert 0 < clip.logit_scale <= 100.0 and clip.device == "cpu" and clip.precision == "fp32"
    tiles = np.zeros((2, clip.image_size, clip.image_size, 3), np.uint8)
    assert clip.encode_images(tiles).shape == (2, clip.embed_dim)
    captioner = cache.captioner(ModelSpec(checkpoint=tiny_coca["checkpoint"], model_config=tiny_coca["config"],
                                          device="cpu"))
    assert isinstance(captioner, TileCaptioner) and not isinstance(captioner, TileEncoder)
    assert cache.loads == 2


def test_spec_normalises_empty_text_and_paths():
    spec = ModelSpec(name="", arch=" ", checkpoint="w.pt", model_config="")
    assert (spec.name, spec.arch, spec.model_config) == (None, None, None)
    assert str(spec.checkpoint) == "w.pt" and spec.describe() == "w.pt"
    assert spec.replace(batch_size=4).batch_size == 4 and spec.batch_size is None


@pytest.mark.parametrize("spec, words", [
    (ModelSpec(device="tpu"), "device must be one of auto, cpu, cuda, mps (or cuda:N), not 'tpu'"),
    (ModelSpec(batch_size=0), "batch_size must be at least 1, not 0"),
    (ModelSpec(arch="ViT-B-32"), "arch describes the weights file given as checkpoint"),
])
def test_spec_errors_name_fields_not_flags(spec, words):
    with pytest.raises(UserError) as err:
        spec.check("clip")
    assert str(err.value).startswith(words) and "--" not in str(err.value)
    with pytest.raises(ModelLoadError):  # the cache reports the same mistake as a model error
        ModelCache().loaded(spec, "clip")
