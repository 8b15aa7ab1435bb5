"""CLIP image-text scores in the quality stage, with a tiny open_clip model through rs_vlm_app.models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rs_vlm_app.mpgi import BuildConfig, build_dataset, export_dataset
from tests.mpgi import data
from tests.mpgi.fakechat import user_text
from tests.mpgi.helpers import query

factory = pytest.importorskip("rs_vlm_app.models.factory", reason="needs the models package (CLIP loading)")

SCENES = {"forest": "A dense green forest canopy.", "river": "A winding river between fields.",
          "harbor": "A harbor with ships and cranes."}


def responder(body):
    text = user_text(body)
    if " caption 1 of " not in text:
        return "A description."
    scene = next(s for s in SCENES if f"classified as {s}." in text)
    return SCENES[scene] + (" Short." if "Write short caption" in text else " Long.")


def clip_config(tmp_path, base_url, tiny_clip, min_score):
    config = data.build_config(
        tmp_path / "out", [{"type": "folder", "root": str(data.class_folders(tmp_path / "AID", dict.fromkeys(SCENES, 2)))}],
        data.openai_backend(base_url, "fake"), perspectives=(),
        quality={"duplicates": "off", "length": "off", "contradictions": "off",
                 "clip": {"checkpoint": str(tiny_clip["checkpoint"]), "model_config": str(tiny_clip["config"]),
                          "min_score": min_score, "action": "flag", "device": "cpu", "batch_size": 4}})
    return BuildConfig.from_dict(config)


def test_clip_scores_pair_each_caption_with_its_own_image_and_flag_low_ones(tmp_path, fake_server, tiny_clip):
    from rs_vlm_app.models.encoder import ClipEncoder
    from rs_vlm_app.models.factory import load_model
    from rs_vlm_app.models.spec import ModelSpec

    fake_server.responder = responder
    config = clip_config(tmp_path, fake_server.base_url, tiny_clip, min_score=-1.0)
    build_dataset(config)
    rows = query(config.manifest_path, "SELECT i.path, o.text, o.clip_score, o.verdict FROM outputs o JOIN images i "
                                       "ON i.id = o.image_id WHERE o.stage LIKE 'caption:%' ORDER BY o.image_id, o.stage")
    assert len(rows) == 12 and all(verdict == "keep" for *_, verdict in rows)
    # the scores are the cosine of the model's own embeddings of that image and that caption
    encoder = ClipEncoder(load_model(ModelSpec(checkpoint=tiny_clip["checkpoint"], model_config=tiny_clip["config"]),
                                     device="cpu", expect_family="clip"))
    from PIL import Image

    size = encoder.image_size
    for path, text, score, _ in rows:
        pixels = np.array(Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
        expected = float(encoder.encode_images(pixels[None])[0] @ encoder.encode_texts([text])[0])
        assert score == pytest.approx(expected, abs=1e-4)
    # a threshold between the scores flags exactly the captions below it, with the reason
    scores = sorted(score for _, _, score, _ in rows)
    threshold = (scores[5] + scores[6]) / 2
    config = clip_config(tmp_path / "second", fake_server.base_url, tiny_clip, min_score=threshold)
    build_dataset(config)
    flagged = query(config.manifest_path, "SELECT clip_score, reasons FROM outputs WHERE verdict = 'flag'")
    assert len(flagged) == 6 and all(score < threshold for score, _ in flagged)
    assert json.loads(flagged[0][1])[0]["detail"] == f"CLIP score {flagged[0][0]:.3f} below {threshold:g}"
    line = json.loads((export_dataset(config.output, "jsonl") and (config.output / "export" / "captions.jsonl"))
                      .read_text().splitlines()[0])
    assert all(isinstance(c["clip_score"], float) for c in line["captions"])
