"""A stand-in CLIP whose answers are known: images embed as their mean colour, texts as the colour
words they contain (no colour word: grey). Pure-colour images and single-colour texts give cosines of
exactly 0 or 1, so classification, search and retrieval over it have exact expected results."""

from __future__ import annotations

import numpy as np

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


class ColourEncoder:
    """The ClipEncoder interface the tasks use: encode_images, encode_texts and cache identity."""

    image_size = 16
    batch_size = 8
    embed_dim = 3
    fingerprint = "test-colour-encoder-v1"
    display_name = "colour encoder (test)"
    device = "cpu"
    precision = "fp32"
    logit_scale = 100.0

    def __init__(self):
        self.images_encoded = 0
        self.texts_encoded = 0

    def preprocess_key(self) -> str:
        return "mean-colour"

    def encode_images(self, tiles: np.ndarray) -> np.ndarray:
        tiles = np.asarray(tiles)
        assert tiles.dtype == np.uint8 and tiles.shape[1:] == (16, 16, 3)
        self.images_encoded += len(tiles)
        mean = tiles.reshape(len(tiles), -1, 3).mean(axis=1)
        mean[np.linalg.norm(mean, axis=1) == 0] = 1.0  # black: grey
        return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)

    def encode_texts(self, texts) -> np.ndarray:
        out = []
        for text in texts:
            vector = np.zeros(3)
            for word, colour in COLOURS.items():
                if word in text.lower():
                    vector += colour
            if not vector.any():
                vector[:] = 1.0
            out.append(vector / np.linalg.norm(vector))
        self.texts_encoded += len(out)
        return np.array(out, dtype=np.float32)
