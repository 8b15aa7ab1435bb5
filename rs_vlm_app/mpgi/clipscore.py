"""CLIP image-text scores for the quality stage (cosine similarity of the L2-normalised embeddings).

The model is loaded through rs_vlm_app.models (catalogue name or checkpoint file), once, on first
use. Each image is read once per page of captions and squashed to the model's square input size
(whole image, no crop: a caption describes all of it).
"""

from __future__ import annotations

import logging

from rs_vlm_app.mpgi.config import ClipFilter, ImageConfig
from rs_vlm_app.mpgi.imagefiles import ImageReadError, load_rgb
from rs_vlm_app.mpgi.records import ImageRecord

log = logging.getLogger(__name__)


class ClipScorer:
    """Callable: [(image record, caption)] -> [score or None]."""

    def __init__(self, config: ClipFilter, image: ImageConfig):
        self.config = config
        self.image = image
        self._encoder = None

    def _load(self):
        if self._encoder is None:
            from rs_vlm_app.models.encoder import ClipEncoder
            from rs_vlm_app.models.factory import load_model
            from rs_vlm_app.models.spec import ModelSpec

            request = ModelSpec(name=self.config.name, checkpoint=self.config.checkpoint, arch=self.config.arch,
                                model_config=self.config.model_config)
            self._encoder = ClipEncoder(load_model(request, device=self.config.device, expect_family="clip"))
        return self._encoder

    def __call__(self, items: list[tuple[ImageRecord, str]]) -> list[float | None]:
        import numpy as np
        from PIL import Image

        encoder = self._load()
        size = int(encoder.image_size)
        paths = list(dict.fromkeys(record.path for record, _ in items))
        pixels, index = [], {}
        for path in paths:
            try:
                picture = load_rgb(path, max_side=max(size * 2, 64), bands=self.image.bands)
            except ImageReadError as exc:
                log.warning("%s: no CLIP score (%s)", path, exc)
                continue
            index[path] = len(pixels)
            pixels.append(np.asarray(picture.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8))
        batch = self.config.batch_size
        image_embeddings = [encoder.encode_images(np.stack(pixels[i:i + batch])) for i in range(0, len(pixels), batch)]
        images = np.concatenate(image_embeddings) if image_embeddings else None
        texts = [text for _, text in items]
        text_embeddings = np.concatenate([encoder.encode_texts(texts[i:i + batch]) for i in range(0, len(texts), batch)])
        scores: list[float | None] = []
        for (record, _), text_embedding in zip(items, text_embeddings, strict=True):
            row = index.get(record.path)
            scores.append(None if row is None else float(np.dot(images[row], text_embedding)))
        return scores
