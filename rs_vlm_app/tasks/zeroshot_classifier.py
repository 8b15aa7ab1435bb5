"""The zero-shot classifier of the CLIP paper and open_clip: one unit vector per class from a
class-name x template prompt ensemble.

For each class, the text embeddings of all its prompts (one per template) are normalised, averaged
and the mean renormalised; an image belongs to the class whose vector is most similar. Used by
`rsvlm classify` (tasks/classify.py), the zero-shot evaluation and the training hooks, so it lives
here, below all of them; the model is reached only through an ``encode_text`` callable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def fill_template(template: str, classname: str) -> str:
    """``template`` with its placeholder ("{}" or "{c}") replaced by ``classname``."""
    if "{c}" in template:
        return template.replace("{c}", classname)
    if "{}" in template:
        return template.replace("{}", classname)
    raise ValueError(f"template {template!r} has no '{{}}' placeholder for the class name")


def prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """All prompts, class-major: class 0 with every template, then class 1, ..."""
    return [fill_template(t, c) for c in classnames for t in templates]


def classifier_from_prompt_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """(classes, templates, dim) prompt embeddings -> (classes, dim) unit class vectors.

    Each prompt embedding is normalised, the templates of a class averaged, and the mean normalised.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 3:
        raise ValueError(f"need (classes, templates, dim) embeddings, got shape {embeddings.shape}")
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=2, keepdims=True), 1e-12)
    mean = unit.mean(axis=1)
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    return mean / np.where(norms == 0, 1.0, norms)


def build_classifier(
    encode_text: Callable[[list[str]], np.ndarray],
    classnames: Sequence[str],
    templates: Sequence[str] | None = None,
) -> np.ndarray:
    """Class vectors from a text encoder: ``encode_text(list_of_prompts) -> (n, dim)`` array.

    ``templates``: prompt templates with "{}" for the class; None = the shipped remote-sensing set
    (rs_vlm_app.tasks.classes.load_templates).
    """
    if templates is None:
        from rs_vlm_app.tasks.classes import load_templates

        templates = load_templates()
    if not classnames:
        raise ValueError("no class names")
    if not templates:
        raise ValueError("no templates")
    flat = np.asarray(encode_text(prompts(classnames, templates)), dtype=np.float64)
    return classifier_from_prompt_embeddings(flat.reshape(len(classnames), len(templates), -1))
