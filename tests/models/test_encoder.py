"""Tile preprocessing and the encoder: the SeLo reference steps, and the reference's cosines."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from PIL import Image
from torchvision import transforms

from rs_vlm_app.errors import UserError
from rs_vlm_app.models.encoder import ClipEncoder
from rs_vlm_app.models.factory import load_model
from rs_vlm_app.models.preprocess import fast_tile_transform, selo_tile_transform
from rs_vlm_app.models.spec import ModelSpec


@pytest.fixture(scope="module")
def scene_rgb(selo_parity):
    return cv2.cvtColor(cv2.imread(str(selo_parity / "visible_scene.png")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def parity_encoder(selo_parity):
    loaded = load_model(ModelSpec(model_config=selo_parity / "tiny_clip.json",
                                     checkpoint=selo_parity / "tiny_clip.pt"), device="cpu")
    return ClipEncoder(loaded, batch_size=16)


def reference_steps(scene_path, row0, row1, col0, col1, tmp_path):
    """The published SeLo code, step for step: cv2 crop and resize, cv2.imwrite JPEG, PIL read, torchvision."""
    source = cv2.imread(str(scene_path))
    crop = cv2.resize(source[row0:row1, col0:col1], (256, 256), interpolation=cv2.INTER_CUBIC)
    jpg = tmp_path / f"{row0}_{row1}_{col0}_{col1}.jpg"
    cv2.imwrite(str(jpg), crop)
    preprocess = transforms.Compose([
        transforms.Resize(size=224, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        lambda image: image.convert("RGB"),
    ])
    return np.asarray(preprocess(Image.open(jpg)))


@pytest.mark.parametrize("window", [(1152, 1408, 128, 384), (384, 1152, 1100, 1868), (768, 1280, 768, 1280)])
def test_selo_transform_equals_the_reference_steps(selo_parity, scene_rgb, tmp_path, window):
    row0, row1, col0, col1 = window
    ours = selo_tile_transform(224)(scene_rgb[row0:row1, col0:col1])
    expected = reference_steps(selo_parity / "visible_scene.png", row0, row1, col0, col1, tmp_path)
    assert ours.dtype == np.uint8 and ours.shape == (224, 224, 3)
    np.testing.assert_array_equal(ours, expected)


def test_encoder_reproduces_the_reference_cosines(selo_parity, scene_rgb, parity_encoder):
    caption = json.loads((selo_parity / "visible_anno.json").read_text())[0]["caption"]
    assert caption == "a large dark lake in the middle of green fields."
    with open(selo_parity / "reference_tiles.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["sample"] == "0"]
    sample = rows[::10]  # windows of all three scales
    transform = selo_tile_transform(parity_encoder.image_size)
    tiles = np.stack([transform(scene_rgb[int(r["row0"]):int(r["row1"]), int(r["col0"]):int(r["col1"])])
                      for r in sample])
    cosines = parity_encoder.encode_images(tiles) @ parity_encoder.encode_texts([caption])[0]
    reference = np.array([float(r["cosine"]) for r in sample])
    assert len(sample) >= 10
    np.testing.assert_allclose(cosines, reference, atol=2e-3)


def test_embeddings_are_unit_float32_and_batching_does_not_change_them(parity_encoder):
    rng = np.random.default_rng(1)
    tiles = rng.integers(0, 256, size=(5, 224, 224, 3), dtype=np.uint8)
    whole = parity_encoder.encode_images(tiles)
    assert whole.dtype == np.float32 and whole.shape == (5, parity_encoder.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    small = ClipEncoder(parity_encoder.loaded, batch_size=2).encode_images(tiles)
    np.testing.assert_allclose(small, whole, atol=1e-5)
    texts = parity_encoder.encode_texts(["a lake", "fields"])
    assert texts.dtype == np.float32 and texts.shape == (2, parity_encoder.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_blank_text_and_wrong_tiles(parity_encoder):
    with pytest.raises(UserError, match="a text query is empty"):
        parity_encoder.encode_texts(["a lake", "   "])
    with pytest.raises(ValueError, match=r"expected uint8 tiles of shape \(B, 224, 224, 3\)"):
        parity_encoder.encode_images(np.zeros((2, 256, 256, 3), dtype=np.uint8))
    with pytest.raises(ValueError):
        parity_encoder.encode_images(np.zeros((2, 224, 224, 3), dtype=np.float32))


def test_long_query_warns(parity_encoder, caplog):
    parity_encoder.encode_texts(["field " * 100])
    assert "the model reads only the first 75" in caplog.text


def test_preprocess_key_and_fingerprint(parity_encoder):
    assert parity_encoder.preprocess_key() == (
        "size=224;mean=0.48145466,0.4578275,0.40821073;std=0.26862954,0.26130258,0.27577711")
    assert len(parity_encoder.fingerprint) == 20


def test_fast_transform_shrinks_with_area_and_enlarges_with_cubic(scene_rgb):
    transform = fast_tile_transform(224)
    big = scene_rgb[0:512, 0:512]
    np.testing.assert_array_equal(transform(big), cv2.resize(big, (224, 224), interpolation=cv2.INTER_AREA))
    small = scene_rgb[0:100, 0:100]
    np.testing.assert_array_equal(transform(small), cv2.resize(small, (224, 224), interpolation=cv2.INTER_CUBIC))
    exact = np.ascontiguousarray(scene_rgb[0:224, 0:224])
    np.testing.assert_array_equal(transform(exact), exact)
    with pytest.raises(ValueError, match="uint8 RGB tile"):
        transform(np.zeros((10, 10), dtype=np.uint8))


def test_fast_transform_averages_instead_of_aliasing():
    """A 1-pixel checkerboard shrunk 4x must come out mid-grey (area averaging), not black or white."""
    board = (np.indices((896, 896)).sum(axis=0) % 2 * 255).astype(np.uint8)
    tile = np.repeat(board[:, :, None], 3, axis=2)
    out = fast_tile_transform(224)(tile)
    assert abs(float(out.mean()) - 127.5) < 1 and out.std() < 2
