"""Evaluation during training: hooks called at epoch ends (and every ``eval_every`` steps).

A hook is any object with a ``name`` and ``__call__(EvalContext) -> dict[str, float]``; metric names
are prefixed by the hook (``val/``, ``zeroshot/``). Built in: retrieval and validation loss on a
caption CSV, zero-shot classification on a labelled CSV, semantic localization (SeLo) on an
AIR-SLT-style folder. Further evaluations plug in the same way:
``train(config, reporter=..., extra_hooks=[hook])``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from rs_vlm_app.errors import UserError
from rs_vlm_app.evaluation.retrieval import group_captions, retrieval_metrics
from rs_vlm_app.evaluation.zeroshot import build_classifier, zeroshot_metrics
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled
from rs_vlm_app.tasks.classes import load_templates
from rs_vlm_app.training.data import CaptionTable, ImageRef, read_image, read_label_csv
from rs_vlm_app.training.loader import tokenize_counting
from rs_vlm_app.training.losses import Losses


@dataclass
class EvalContext:
    """What a hook gets: the plain model (eval mode) and how to feed it."""

    model: nn.Module
    tokenizer: Callable
    context_length: int
    transform: Callable
    device: torch.device
    autocast: Callable[[], contextlib.AbstractContextManager]
    batch_size: int
    step: int
    epoch: int
    is_coca: bool
    reporter: Reporter = field(default_factory=NullReporter)


class EvalHook(Protocol):
    name: str

    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        """Evaluate ``ctx.model``; return metric name -> value."""


def batched(items: list, size: int) -> Iterator[list]:
    for begin in range(0, len(items), size):
        yield items[begin: begin + size]


@torch.no_grad()
def encode_images(ctx: EvalContext, refs: list[ImageRef], stage: str = "") -> torch.Tensor:
    """Unit image embeddings (on the CPU, float32) of ``refs``, in order."""
    chunks = []
    for done, batch in enumerate(batched(refs, ctx.batch_size)):
        check_cancelled(ctx.reporter)
        pixels = torch.stack([ctx.transform(read_image(ref)) for ref in batch]).to(ctx.device)
        with ctx.autocast():
            features = ctx.model.encode_image(pixels, normalize=True)
        chunks.append(features.float().cpu())
        if stage:
            ctx.reporter.progress(stage, min((done + 1) * ctx.batch_size, len(refs)), len(refs))
    return torch.cat(chunks)


@torch.no_grad()
def encode_texts(ctx: EvalContext, texts: list[str]) -> torch.Tensor:
    chunks = []
    for batch in batched(texts, ctx.batch_size):
        tokens, _ = tokenize_counting(ctx.tokenizer, batch, ctx.context_length)
        with ctx.autocast():
            features = ctx.model.encode_text(tokens.to(ctx.device), normalize=True)
        chunks.append(features.float().cpu())
    return torch.cat(chunks)


class RetrievalHook:
    """Image<->text retrieval R@1/5/10 and the validation loss on a caption table.

    Rows sharing an image are that image's captions (the RSICD / RSITMD / UCM protocol).
    """

    name = "val"

    def __init__(self, table: CaptionTable):
        self.table = table
        keys = [table.image_key(i) for i in range(len(table))]
        unique, self.text_image = group_captions(keys)
        first = {}
        for row, key in enumerate(keys):
            first.setdefault(key, row)
        self.image_refs = [table.images[first[key]] for key in unique]

    @torch.no_grad()
    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        images = encode_images(ctx, self.image_refs, stage="evaluate retrieval")
        texts = encode_texts(ctx, self.table.captions)
        metrics = retrieval_metrics(images.numpy(), texts.numpy(), self.text_image).as_dict(prefix="val/")
        logit_scale = ctx.model.logit_scale.exp().float().cpu()
        losses = []
        for rows in batched(list(range(len(self.table))), ctx.batch_size):
            losses.append(float(_pair_loss(images[self.text_image[rows]], texts[rows], logit_scale)))
        metrics["val/contrastive_loss"] = float(np.mean(losses))
        if ctx.is_coca:
            metrics["val/caption_loss"] = self._caption_loss(ctx)
        return metrics

    def _caption_loss(self, ctx: EvalContext) -> float:
        """Mean next-token cross-entropy of the captions given their images."""
        total, tokens_seen = 0.0, 0
        rows_of_image: dict[int, list[int]] = {}
        for row, image in enumerate(self.text_image):
            rows_of_image.setdefault(int(image), []).append(row)
        for image_batch in batched(list(range(len(self.image_refs))), ctx.batch_size):
            check_cancelled(ctx.reporter)
            pixels = torch.stack([ctx.transform(read_image(self.image_refs[i])) for i in image_batch]).to(ctx.device)
            with ctx.autocast():
                latent, embs = ctx.model._encode_image(pixels)
            rows = [r for i in image_batch for r in rows_of_image.get(i, [])]
            position = {i: p for p, i in enumerate(image_batch)}
            which = torch.tensor([position[int(self.text_image[r])] for r in rows], device=ctx.device)
            for chunk in batched(list(range(len(rows))), ctx.batch_size):
                tokens, _ = tokenize_counting(ctx.tokenizer, [self.table.captions[rows[c]] for c in chunk],
                                              ctx.context_length)
                tokens = tokens.to(ctx.device)
                index = which[chunk]
                with ctx.autocast():
                    out = ctx.model(None, tokens, image_latent=latent[index], image_embs=embs[index])
                total += float(Losses.caption_token_sum(out["logits"], out["labels"]))
                tokens_seen += Losses.caption_tokens(tokens)
        return total / max(tokens_seen, 1)


def _pair_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    logits = logit_scale * image @ text.T
    labels = torch.arange(len(image))
    return (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2


class ZeroShotHook:
    """Zero-shot classification accuracy on a CSV of image paths and class names."""

    name = "zeroshot"

    def __init__(self, csv_path: Path, templates: str | Path | None = None):
        """``templates``: a shipped template set's name or a template file; None: the default set, the
        same one ``rsvlm classify`` and ``rsvlm eval zeroshot`` use."""
        self.images, labels = read_label_csv(csv_path)
        self.classnames = sorted(set(labels))
        if len(self.classnames) < 2:
            raise UserError("zero-shot evaluation needs at least two classes in the 'label' column", path=csv_path)
        index = {name: i for i, name in enumerate(self.classnames)}
        self.labels = np.array([index[label] for label in labels])
        self.templates = list(load_templates(templates))

    @torch.no_grad()
    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        images = encode_images(ctx, self.images, stage="evaluate zero-shot")
        spoken = [name.replace("_", " ") for name in self.classnames]
        classifier = build_classifier(lambda texts: encode_texts(ctx, texts).numpy(), spoken, self.templates)
        result = zeroshot_metrics(images.numpy(), classifier, self.labels,
                                  ks=tuple(k for k in (1, 5) if k == 1 or k < len(self.classnames)))
        return result.as_dict(prefix="zeroshot/")


class SeloHook:
    """Semantic-localization metrics (Rsu, Ras, Rda, Rmi) of the model being trained, on an AIR-SLT
    layout folder (imgs/, annotations/anno.json); each evaluation's per-sample table is kept in
    ``out_root/step_N/``."""

    name = "selo"

    def __init__(self, data_dir: Path, out_root: Path):
        from rs_vlm_app.evaluation.selo_eval import read_annotations

        self.data_dir = Path(data_dir)
        self.out_root = Path(out_root)
        read_annotations(self.data_dir)  # a bad folder fails before training starts

    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        import tempfile

        from rs_vlm_app.evaluation.selo_eval import evaluate_selo
        from rs_vlm_app.tasks.embedding_cache import EmbeddingCache

        with tempfile.TemporaryDirectory(prefix="rsvlm-selo-") as scratch:
            report = evaluate_selo(self.data_dir, TrainingEncoder(ctx), self.out_root / f"step_{ctx.step}",
                                   reporter=ctx.reporter, cache=EmbeddingCache(Path(scratch)))
        return {f"selo/{name}": float(value) for name, value in report["mean"].items()}


class TrainingEncoder:
    """The model being trained behind the tile-encoder interface localization uses (uint8 tiles at
    the model's input size in, unit float32 embeddings out), fed through the run's eval transform."""

    precision = "fp32"
    logit_scale = 100.0

    def __init__(self, ctx: EvalContext):
        size = ctx.model.visual.image_size
        self.ctx = ctx
        self.batch_size = ctx.batch_size
        self.device = str(ctx.device)
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        self.embed_dim = int(encode_texts(ctx, ["x"]).shape[1])
        self.fingerprint = f"training-step-{ctx.step}"
        self.display_name = f"training step {ctx.step}"

    def preprocess_key(self) -> str:
        return "training-eval-transform"

    @torch.no_grad()
    def encode_images(self, tiles: np.ndarray) -> np.ndarray:
        from PIL import Image

        ctx = self.ctx
        pixels = torch.stack([ctx.transform(Image.fromarray(tile)) for tile in tiles]).to(ctx.device)
        with ctx.autocast():
            features = ctx.model.encode_image(pixels, normalize=True)
        return features.float().cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return encode_texts(self.ctx, list(texts)).numpy()


def finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
