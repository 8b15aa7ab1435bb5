"""Image-text retrieval recall (R@K) with several captions per image.

The protocol of the RS5M / RemoteCLIP / HQRS-CLIP papers and CLIP_benchmark: every image is a
query over all captions and counts as retrieved at K if ANY of its captions is among the K best;
every caption is a query over all images and counts as retrieved at K if its image is among the K
best. Mean recall (mR) is the mean of the six numbers R@1/5/10 in both directions.

All values are percentages (0-100), as the papers print them. Ties are counted against the query:
a positive that scores the same as a negative is ranked after it, so a model whose embeddings are all
equal scores 0, never 100. Pure functions over embeddings; nothing here touches a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
#: rank given to an image that has no caption at all
NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class RetrievalResult:
    """Recall at each K in both directions, in percent, and their mean."""

    image_to_text: dict[int, float]
    text_to_image: dict[int, float]
    n_images: int
    n_texts: int

    @property
    def mean_recall(self) -> float:
        values = [*self.image_to_text.values(), *self.text_to_image.values()]
        return float(np.mean(values)) if values else float("nan")

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat names for logs and CSV files: ``image_to_text_R@1``, ..., ``mean_recall``."""
        out = {f"{prefix}image_to_text_R@{k}": v for k, v in self.image_to_text.items()}
        out.update({f"{prefix}text_to_image_R@{k}": v for k, v in self.text_to_image.items()})
        out[f"{prefix}mean_recall"] = self.mean_recall
        return out


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def image_to_text_ranks(similarity: np.ndarray, text_image: np.ndarray) -> np.ndarray:
    """For each image (row of ``similarity``, images x texts): the 0-based rank of its best caption.

    The rank is the number of OTHER images' captions scoring at least as high as the image's best
    caption. An image without any caption gets the rank NEVER (retrieved at no K).
    """
    n_images, n_texts = similarity.shape
    positive = np.zeros((n_images, n_texts), dtype=bool)
    positive[text_image, np.arange(n_texts)] = True
    best_positive = np.where(positive, similarity, -np.inf).max(axis=1, keepdims=True)
    negatives_above = (~positive & (similarity >= best_positive)).sum(axis=1)
    has_caption = positive.any(axis=1)
    return np.where(has_caption, negatives_above, NEVER)


def text_to_image_ranks(similarity: np.ndarray, text_image: np.ndarray) -> np.ndarray:
    """For each text: the 0-based rank of its image = other images scoring at least as high."""
    scores = similarity.T  # texts x images
    own = scores[np.arange(scores.shape[0]), text_image][:, None]
    return (scores >= own).sum(axis=1) - 1


def retrieval_metrics(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    text_image: Sequence[int] | np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
) -> RetrievalResult:
    """R@K image->text and text->image, in percent.

    image_embeddings: (n_images, dim); text_embeddings: (n_texts, dim); ``text_image[t]`` is the index
    of the image that text ``t`` describes. Embeddings are compared by cosine similarity (normalised
    here, so raw model outputs are fine).
    """
    images = normalize_rows(image_embeddings)
    texts = normalize_rows(text_embeddings)
    text_image = np.asarray(text_image, dtype=np.int64)
    if images.ndim != 2 or texts.ndim != 2 or images.shape[1] != texts.shape[1]:
        raise ValueError(f"embeddings must be 2-D with equal widths, got {images.shape} and {texts.shape}")
    if text_image.shape != (texts.shape[0],):
        raise ValueError(f"need one image index per text: {text_image.shape} for {texts.shape[0]} texts")
    if len(text_image) and (text_image.min() < 0 or text_image.max() >= images.shape[0]):
        raise ValueError("text_image holds an index outside the images")
    similarity = images @ texts.T
    i2t = image_to_text_ranks(similarity, text_image)
    t2i = text_to_image_ranks(similarity, text_image)
    return RetrievalResult(
        image_to_text={k: _percent(i2t < k) for k in ks},
        text_to_image={k: _percent(t2i < k) for k in ks},
        n_images=images.shape[0],
        n_texts=texts.shape[0],
    )


def group_captions(image_keys: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Rows of (image, caption) pairs -> unique images (first-seen order) and each row's image index."""
    index: dict[str, int] = {}
    text_image = np.empty(len(image_keys), dtype=np.int64)
    for row, key in enumerate(image_keys):
        text_image[row] = index.setdefault(key, len(index))
    return list(index), text_image


def _percent(hits: np.ndarray) -> float:
    return float(100.0 * hits.mean()) if hits.size else float("nan")
