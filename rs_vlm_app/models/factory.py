"""One factory: a ModelSpec (catalogue name, or a checkpoint with its architecture) -> a LoadedModel.

The model is built by open_clip.create_model(arch, pretrained=None, force_quick_gelu=...) and the
weights are loaded by rs_vlm_app.models.loading, so every failure is one of our own one-line errors.
Errors name ModelSpec's fields (checkpoint, arch, model_config, name), never a front end's options.
Loaded models are kept by rs_vlm_app.models.cache.ModelCache (the only model cache), not here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rs_vlm_app.errors import UserError
from rs_vlm_app.models.catalogue import (
    OPENAI_MEAN,
    OPENAI_STD,
    ModelEntry,
    OpenClipPretrained,
    default_entry,
    get_entry,
)
from rs_vlm_app.models.spec import ModelSpec

log = logging.getLogger(__name__)

FAMILY_WORDS = {"clip": "a CLIP model", "coca": "a CoCa caption model"}


@dataclass(eq=False)
class LoadedModel:
    """A model ready for inference, with what is needed to feed it and to key caches on it.

    The image tower's weights are assigned when first needed (:meth:`load_visual`): a query whose
    tile embeddings are all cached needs only the text tower, and never reads, converts or pages in
    the image tower's weights. ``model`` is always the whole model (it loads them); ``network`` is the
    same module as it stands (its ``visual`` parameters may still be on the meta device), for code
    that runs only the text tower or calls :meth:`load_visual` before images.
    """

    network: object  # torch.nn.Module (open_clip CLIP, CustomTextCLIP or CoCa), in eval mode
    tokenizer: Callable
    family: str
    display_name: str
    image_size: int
    mean: tuple
    std: tuple
    interpolation: str
    context_length: int
    fingerprint: str
    arch: str = ""
    quick_gelu: bool = False
    checkpoint: Path | None = None
    embed_dim: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    entry: ModelEntry | None = field(default=None, repr=False)
    visual_loader: Callable[[], None] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model(self) -> object:
        """The whole model, image tower loaded (see the class docstring)."""
        self.load_visual()
        return self.network

    @property
    def visual_loaded(self) -> bool:
        return self.visual_loader is None

    def load_visual(self) -> None:
        """Assign the image tower's weights if they were deferred (once; thread-safe)."""
        if self.visual_loader is None:
            return
        with self._lock:
            if self.visual_loader is not None:
                started = time.monotonic()
                self.visual_loader()
                self.visual_loader = None
                log.debug("%s: image tower loaded in %.2f s", self.display_name, time.monotonic() - started)


@dataclass(frozen=True)
class _Plan:
    """Everything decided before touching weights (cheap checks only)."""

    display_name: str
    family: str
    quick_gelu: bool | None
    entry: ModelEntry | None = None
    arch: str | None = None
    config: object | None = None  # archs.ModelConfig


def check_model_spec(request: ModelSpec, *, expect_family: str | None = None) -> None:
    """Validate a model spec without loading anything heavy: field combinations, files, catalogue names."""
    _plan(request, expect_family)


def _plan(request: ModelSpec, expect_family: str | None) -> _Plan:
    from rs_vlm_app.models.archs import read_model_config

    if expect_family not in (None, "clip", "coca"):
        raise ValueError(f"expect_family must be 'clip', 'coca' or None, not {expect_family!r}")
    if request.arch and request.model_config:
        raise UserError("arch and model_config both describe the checkpoint's architecture; give one of them")
    if (request.arch or request.model_config) and request.checkpoint is None:
        field_name = "arch" if request.arch else "model_config"
        raise UserError(f"{field_name} describes the weights file given as checkpoint; give the checkpoint too "
                        f"(or a catalogue model name)")
    if request.name and (request.arch or request.model_config):
        raise UserError("a catalogue model name brings its own architecture; leave arch and model_config empty, "
                        "or leave the name empty and describe the checkpoint with them")
    if request.checkpoint is not None:
        checkpoint = Path(request.checkpoint).expanduser()
        if not checkpoint.exists():
            raise UserError("model file not found", path=checkpoint)
        if checkpoint.is_dir():
            raise UserError("is a folder; the checkpoint must be a weights file (.pt, .pth, .bin, .safetensors)",
                            path=checkpoint)
        if not (request.name or request.arch or request.model_config):
            raise UserError(f"the checkpoint {checkpoint.name} needs its architecture: arch (an open_clip name "
                            f"such as ViT-B-32), model_config (a model config JSON file), or the name of the "
                            f"catalogue model it is a copy of")
    if request.model_config is not None:
        config = read_model_config(Path(request.model_config).expanduser())
        plan = _Plan(display_name=f"{Path(request.checkpoint).name} ({config.path.name})", family=config.family,
                     quick_gelu=request.quick_gelu, config=config)
    elif request.arch:
        plan = _Plan(display_name=f"{Path(request.checkpoint).name} ({request.arch})", family="",
                     quick_gelu=request.quick_gelu, arch=request.arch)
    else:
        entry = get_entry(request.name) if request.name else default_entry(expect_family or "clip")
        quick_gelu = entry.quick_gelu if request.quick_gelu is None else request.quick_gelu
        plan = _Plan(display_name=entry.name, family=entry.family, quick_gelu=quick_gelu, entry=entry)
    if plan.family:
        _check_family(plan.display_name, plan.family, expect_family)
    return plan


def _check_family(what: str, family: str | None, expect_family: str | None) -> None:
    if expect_family is None or family is None or family == expect_family:
        return
    if expect_family == "clip":
        need = "this needs a CLIP model (CoCa models write captions); the model catalogue lists each model's kind"
    else:
        need = ("this needs a CoCa caption model (a CLIP model cannot write captions); the model catalogue lists "
                "each model's kind")
    raise UserError(f"{what} is {FAMILY_WORDS[family]}; {need}")


def load_model(request: ModelSpec, *, device: str | None = None, precision: str | None = None,
               expect_family: str | None = None) -> LoadedModel:
    """Build the model ``request`` names with its weights, on ``device`` (default: the spec's), in eval mode.

    A new model every call: keep loaded models in a rs_vlm_app.models.cache.ModelCache.

    expect_family "clip" refuses CoCa checkpoints (and "coca" refuses CLIPs): although a CoCa has
    contrastive image and text embeddings, a caption model given where a CLIP is asked for is far
    more often a mistake than a choice, so it is an error, as the captioning issue requires.
    """
    from rs_vlm_app.models import archs
    from rs_vlm_app.models.device import pick_device, resolve_precision
    from rs_vlm_app.models.loading import load_weights, read_state_dict
    from rs_vlm_app.models.open_clip_fixes import weightless_build
    from rs_vlm_app.models.open_clip_import import import_open_clip
    from rs_vlm_app.models.resolve import resolve_checkpoint
    from rs_vlm_app.models.weights_info import describe_state_dict

    open_clip = import_open_clip()

    plan = _plan(request, expect_family)
    device = pick_device(device or request.device)
    precision = resolve_precision(device, precision or request.precision)

    preprocess_cfg: dict = {}
    config_text = ""
    if plan.config is not None:
        arch = archs.register_model_config(plan.config)
        preprocess_cfg = plan.config.preprocess_cfg
        config_text = plan.config.digest
    elif plan.arch:
        arch = archs.check_arch(plan.arch)
    else:
        arch = archs.check_arch(plan.entry.arch)
    family = archs.arch_family(arch)
    _check_family(plan.display_name, family, expect_family)
    cfg = archs.arch_config(arch)
    quick_gelu = plan.quick_gelu if plan.quick_gelu is not None else bool(cfg.get("quick_gelu", False))
    if plan.entry is None and request.quick_gelu is None and not quick_gelu:
        log.info("%s: QuickGELU off; set quick_gelu if these weights were fine-tuned from OpenAI CLIP",
                 plan.display_name)

    if request.checkpoint is not None:
        checkpoint = Path(request.checkpoint).expanduser()
    else:
        checkpoint = resolve_checkpoint(plan.entry, allow_download=request.allow_download)
    state = read_state_dict(checkpoint)
    found = describe_state_dict(state)
    if found.family is not None:
        _check_family(f"{checkpoint}", found.family, expect_family)

    log.info("loading %s (%s%s) from %s", plan.display_name, arch, ", QuickGELU" if quick_gelu else "", checkpoint)
    try:
        # parameters on meta: no random initialisation of weights that are replaced next, and the
        # checkpoint's (memory-mapped) tensors become the model's: no second full copy in memory
        with _quiet_open_clip(), weightless_build():  # it warns "initialized randomly": our weights come next
            model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu, device="cpu",
                                           precision="fp32", pretrained_image=False, pretrained_text=False)
    except Exception as exc:  # a config open_clip cannot build (bad sizes in a user's JSON)
        raise UserError(f"open_clip cannot build architecture {arch}: {' '.join(str(exc).split())[:200]}",
                        path=request.model_config) from None
    # the image tower's weights are checked now and assigned when first needed (LoadedModel.load_visual)
    assign_visual = load_weights(model, state, model_name=plan.display_name, path=checkpoint, defer="visual")
    del state
    model.eval()
    model.requires_grad_(False)
    visual_loader = None
    if assign_visual is None:
        model.to(device)
    else:
        _to_device_without(model, "visual", device)

        def visual_loader() -> None:
            assign_visual()
            model.visual.to(device)

    try:
        tokenizer = _tokenizer(arch)
    except Exception as exc:  # e.g. a Hugging Face tokenizer that is not in the cache
        raise UserError(f"{plan.display_name}: cannot build the tokenizer of {arch}: {exc}") from None
    mean, std, interpolation = _normalisation(plan.entry, arch, preprocess_cfg)
    image_size = model.visual.image_size
    image_size = int(image_size[0] if isinstance(image_size, tuple | list) else image_size)
    return LoadedModel(
        network=model, tokenizer=tokenizer, family=family, display_name=plan.display_name,
        image_size=image_size, mean=mean, std=std, interpolation=interpolation,
        context_length=int(getattr(tokenizer, "context_length", None) or cfg["text_cfg"].get("context_length", 77)),
        fingerprint=fingerprint(checkpoint, arch=arch, quick_gelu=quick_gelu, extra=config_text),
        arch=arch, quick_gelu=quick_gelu, checkpoint=checkpoint, embed_dim=int(cfg["embed_dim"]),
        device=device, precision=precision, entry=plan.entry, visual_loader=visual_loader,
    )


def _to_device_without(model, child: str, device: str) -> None:
    """``model.to(device)`` except its child module ``child`` (whose parameters are on meta and
    cannot be copied; it moves when its weights are assigned). A placeholder holds the child's place
    meanwhile, so the order of the model's modules (and of its state_dict) does not change."""
    import torch

    held = getattr(model, child)
    setattr(model, child, torch.nn.Module())
    try:
        model.to(device)
    finally:
        setattr(model, child, held)


@functools.cache
def _tokenizer(arch: str) -> Callable:
    """open_clip's tokenizer for ``arch``, built once per process (reading its vocabulary takes ~0.5 s)."""
    from rs_vlm_app.models.open_clip_import import import_open_clip

    return import_open_clip().get_tokenizer(arch)


class _DropOpenClipNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or f"{os.sep}open_clip{os.sep}" not in record.pathname


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip logs through the root logger; hide its info/warning notes while we build a model."""
    root = logging.getLogger()
    note_filter = _DropOpenClipNotes()
    root.addFilter(note_filter)
    try:
        yield
    finally:
        root.removeFilter(note_filter)


def _normalisation(entry: ModelEntry | None, arch: str, preprocess_cfg: dict) -> tuple[tuple, tuple, str]:
    mean, std, interpolation = OPENAI_MEAN, OPENAI_STD, "bicubic"
    if entry is not None and isinstance(entry.source, OpenClipPretrained):
        from rs_vlm_app.models.open_clip_import import import_open_clip

        tag_cfg = import_open_clip().pretrained.get_pretrained_cfg(arch, entry.source.tag)
        mean, std = tag_cfg.get("mean", mean), tag_cfg.get("std", std)
        interpolation = tag_cfg.get("interpolation", interpolation)
    if entry is not None:
        mean, std = entry.mean or mean, entry.std or std
    mean, std = preprocess_cfg.get("mean", mean), preprocess_cfg.get("std", std)
    interpolation = preprocess_cfg.get("interpolation", interpolation)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std), str(interpolation)


def fingerprint(path: Path, *, arch: str, quick_gelu: bool, extra: str = "", sample: int = 1 << 20) -> str:
    """Identify weights for caches: file size, three sampled 1 MiB blocks, architecture, QuickGELU.

    Cheap on multi-GB files, stable when a file is copied or moved, different after a re-training.
    """
    digest = hashlib.sha256()
    size = os.path.getsize(path)
    digest.update(f"{size}|{arch}|{int(quick_gelu)}|{extra}".encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - sample // 2), max(0, size - sample)}):
            f.seek(offset)
            digest.update(f.read(sample))
    return digest.hexdigest()[:20]
