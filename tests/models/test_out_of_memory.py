"""Device batching: an out-of-memory halves the batch and retries the same tiles (simulated on the CPU
with torch.cuda.OutOfMemoryError); one tile that does not fit, or a failed device, is one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rs_vlm_app.errors import UserError
from rs_vlm_app.models.captioner import CocaCaptioner
from rs_vlm_app.models.coca_decoder import DecodingOptions
from rs_vlm_app.models.encoder import ClipEncoder
from rs_vlm_app.models.factory import load_model
from rs_vlm_app.models.spec import ModelSpec


@pytest.fixture(scope="module")
def loaded_clip(tiny_clip):
    return load_model(ModelSpec(model_config=tiny_clip["config"], checkpoint=tiny_clip["checkpoint"]), device="cpu")


def tiles(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


class MemoryLimit:
    """Wraps the encoder's image tower (or any batch method): batches over ``limit`` images raise CUDA's OOM."""

    def __init__(self, function, limit: int, error: Exception | None = None):
        self.function, self.limit, self.error, self.sizes = function, limit, error, []

    def __call__(self, x, *args, **kwargs):
        self.sizes.append(len(x))
        if self.error is not None:
            raise self.error
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.function(x, *args, **kwargs)


def test_out_of_memory_halves_the_batch_and_gives_the_same_embeddings(loaded_clip, monkeypatch, caplog):
    batch = tiles(23, loaded_clip.image_size)
    expected = ClipEncoder(loaded_clip, batch_size=32).encode_images(batch)
    encoder = ClipEncoder(loaded_clip, batch_size=32)
    limit = MemoryLimit(loaded_clip.model.encode_image, limit=5)
    monkeypatch.setattr(encoder, "_encode_image", limit)
    got = encoder.encode_images(batch)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert encoder.batch_size == 4  # 32 -> 16 -> 8 -> 4, kept for later batches
    assert limit.sizes[:4] == [23, 16, 8, 4] and set(limit.sizes[4:]) <= {4, 3}
    assert sum(s for s in limit.sizes if s <= 5) == 23  # every tile encoded once after the fallback
    assert "out of cpu memory with 32 tiles a batch; retrying with 16" in caplog.text


def test_one_tile_that_does_not_fit_is_one_line(loaded_clip, monkeypatch):
    encoder = ClipEncoder(loaded_clip, batch_size=4)
    monkeypatch.setattr(encoder, "_encode_image", MemoryLimit(loaded_clip.model.encode_image, limit=0))
    with pytest.raises(UserError, match="does not fit in the cpu device's free memory even one tile at a time"):
        encoder.encode_images(tiles(3, loaded_clip.image_size))


def test_a_failed_gpu_is_one_line_and_other_errors_pass_through(loaded_clip, monkeypatch):
    encoder = ClipEncoder(loaded_clip, batch_size=4)
    encoder.device = "cuda:0"  # as the encoder sees it; the tensors stay on the CPU
    failure = RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors ...")
    monkeypatch.setattr(encoder, "_encode_image", MemoryLimit(loaded_clip.model.encode_image, 99, failure))
    monkeypatch.setattr(encoder, "_to_device", lambda t: torch.zeros(len(t), 3, 2, 2))
    with pytest.raises(UserError) as err:
        encoder.encode_images(tiles(3, loaded_clip.image_size))
    assert str(err.value).startswith("the cuda:0 device failed (CUDA error: an illegal memory access")
    assert "finished tiles are kept" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setattr(encoder, "_encode_image", MemoryLimit(loaded_clip.model.encode_image, 99, ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        encoder.encode_images(tiles(3, loaded_clip.image_size))


def test_the_captioner_falls_back_the_same_way(tiny_coca, monkeypatch):
    loaded = load_model(ModelSpec(model_config=tiny_coca["config"], checkpoint=tiny_coca["checkpoint"]), device="cpu")
    batch = tiles(6, loaded.image_size, seed=1)
    options = DecodingOptions(method="greedy", max_len=6)
    expected = CocaCaptioner(loaded, batch_size=8).caption_tiles(batch, options)
    captioner = CocaCaptioner(loaded, batch_size=8)
    limit = MemoryLimit(captioner.decoder.generate, limit=2)
    monkeypatch.setattr(captioner.decoder, "generate", limit)
    got = captioner.caption_tiles(batch, options)
    assert [c.text for c in got] == [c.text for c in expected]
    assert [c.mean_logprob for c in got] == pytest.approx([c.mean_logprob for c in expected], abs=1e-5)
    assert captioner.batch_size == 2 and limit.sizes[:3] == [6, 4, 2]
