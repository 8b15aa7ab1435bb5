"""Zero-shot classification with a class-name x template prompt ensemble.

The classifier of the CLIP paper and open_clip: for each class, the text embeddings of all its
prompts (one per template) are normalised, averaged and the mean renormalised; an image belongs to
the class whose vector is most similar (built by rs_vlm_app.tasks.zeroshot_classifier, shared with
`rsvlm classify`). Metrics: top-1 / top-5 accuracy, per-class accuracy (and its
mean), confusion matrix. Accuracies are percentages (0-100).

Ties count against the image: a true class that scores the same as another class is ranked after
it, and the predicted class of such an image is the best-scoring wrong class. Pure functions over
embeddings; the model is called elsewhere (through ``encode_text`` callables).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rs_vlm_app.evaluation.retrieval import normalize_rows
from rs_vlm_app.tasks.zeroshot_classifier import (  # noqa: F401 - the classifier lives below tasks and evaluation
    build_classifier,
    classifier_from_prompt_embeddings,
    fill_template,
    prompts,
)


@dataclass(frozen=True)
class ZeroShotResult:
    """Accuracies in percent; ``confusion[true, predicted]`` counts images."""

    top_k: dict[int, float]
    per_class: np.ndarray  # (classes,), NaN for a class without images
    confusion: np.ndarray  # (classes, classes) int64
    predictions: np.ndarray  # (images,) predicted class index

    @property
    def top1(self) -> float:
        return self.top_k[1]

    @property
    def mean_per_class(self) -> float:
        """Mean of the per-class accuracies over the classes that have images (balanced accuracy)."""
        present = self.per_class[~np.isnan(self.per_class)]
        return float(present.mean()) if present.size else float("nan")

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}top{k}": v for k, v in self.top_k.items()}
        out[f"{prefix}mean_per_class"] = self.mean_per_class
        return out


def true_class_ranks(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """0-based rank of each image's true class: other classes scoring at least as high."""
    own = logits[np.arange(len(labels)), labels][:, None]
    return (logits >= own).sum(axis=1) - 1


def predict(logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Best class per row; where the maximum is shared and ``labels`` given, the best WRONG class."""
    predictions = logits.argmax(axis=1)
    if labels is None:
        return predictions
    best = logits.max(axis=1, keepdims=True)
    tied = (logits == best).sum(axis=1) > 1
    for row in np.flatnonzero(tied):
        candidates = np.flatnonzero(logits[row] == best[row, 0])
        wrong = candidates[candidates != labels[row]]
        predictions[row] = wrong[0]
    return predictions


def zeroshot_metrics(
    image_embeddings: np.ndarray,
    classifier: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    ks: Sequence[int] = (1, 5),
) -> ZeroShotResult:
    """Top-K accuracy, per-class accuracy and confusion matrix of a zero-shot classifier.

    image_embeddings: (images, dim); classifier: (classes, dim) class vectors; labels: true class
    index per image. Similarity is cosine (both sides are normalised here).
    """
    images = normalize_rows(image_embeddings)
    classes = normalize_rows(classifier)
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = classes.shape[0]
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    logits = images @ classes.T
    ranks = true_class_ranks(logits, labels)
    top_k = {k: (float(100.0 * (ranks < k).mean()) if labels.size else float("nan")) for k in ks}
    predictions = predict(logits, labels)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, 100.0 * np.diag(confusion) / support, np.nan)
    return ZeroShotResult(top_k=top_k, per_class=per_class, confusion=confusion, predictions=predictions)
