"""Build the model a run trains: architecture, initial weights, tokenizer and image transforms.

The initial-weights step (:func:`initial_weights`) is the one place that reads a user's checkpoint
or open_clip's pretrained weights; it will move onto rs_vlm_app.models (the catalogue and the safe
loaders) once that package lands.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rs_vlm_app.errors import UserError
from rs_vlm_app.training.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class ModelBundle:
    """The model and everything a run needs to feed it."""

    model: nn.Module
    model_name: str
    model_cfg: dict[str, Any]  # the open_clip model config the model was built from
    preprocess_cfg: dict[str, Any]
    tokenizer: Callable
    context_length: int
    train_transform: Callable
    eval_transform: Callable


def register_config(config: TrainConfig) -> None:
    """Make a custom architecture (``--model-config FILE.json``) known to open_clip."""
    import open_clip

    if config.model_config:
        path = Path(config.model_config)
        if not path.is_file():
            raise UserError("no such model config file", path=path)
        open_clip.add_model_config(path)


def architecture_config(config: TrainConfig) -> dict[str, Any]:
    """The open_clip model config of the run (QuickGELU recorded when forced)."""
    import open_clip

    register_config(config)
    model_cfg = open_clip.get_model_config(config.model_name)
    if model_cfg is None:
        raise UserError(
            f"unknown architecture {config.model_name!r}: not an open_clip model name "
            "(see open_clip.list_models()) and no --model-config given"
        )
    model_cfg = copy.deepcopy(model_cfg)
    if "init_logit_bias" in model_cfg:
        raise UserError(f"{config.model_name} is a SigLIP-style model (sigmoid loss); rsvlm train supports "
                        "CLIP (softmax contrastive) and CoCa architectures")
    if config.use_quick_gelu:
        model_cfg["quick_gelu"] = True
    is_coca = "multimodal_cfg" in model_cfg
    if config.task == "coca" and not is_coca:
        raise UserError(f"{config.model_name} is not a CoCa architecture; use `rsvlm train clip` or a coca_* model")
    if config.task == "clip" and is_coca:
        raise UserError(f"{config.model_name} is a CoCa architecture; use `rsvlm train coca`")
    return model_cfg


def build(config: TrainConfig) -> ModelBundle:
    """Create the model with its initial weights, tokenizer and transforms (no training changes yet)."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    model_cfg = architecture_config(config)
    torch.manual_seed(config.seed)
    model = initial_weights(config)
    preprocess_cfg = dict(model.visual.preprocess_cfg)
    pp = PreprocessCfg(**preprocess_cfg)
    train_transform = image_transform_v2(pp, is_train=config.augment)
    eval_transform = image_transform_v2(pp, is_train=False)
    tokenizer = open_clip.get_tokenizer(config.model_name)
    context_length = int(getattr(tokenizer, "context_length", None) or model_cfg["text_cfg"].get("context_length", 77))
    return ModelBundle(
        model=model, model_name=config.model_name, model_cfg=model_cfg, preprocess_cfg=preprocess_cfg,
        tokenizer=tokenizer, context_length=context_length,
        train_transform=train_transform, eval_transform=eval_transform,
    )


def initial_weights(config: TrainConfig) -> nn.Module:
    """The model with the weights ``--init`` asks for: none (random), an open_clip tag, or a file."""
    import open_clip

    name = config.model_name
    qg = config.use_quick_gelu
    init = config.init
    if init == "none":
        from rs_vlm_app.models.open_clip_fixes import init_uninitialized

        model = _quiet(lambda: open_clip.create_model(name, pretrained=None, force_quick_gelu=qg, output_dict=True))
        init_uninitialized(model)
        return model
    path = Path(init).expanduser()
    if path.is_file():
        model = _quiet(lambda: open_clip.create_model(name, pretrained=None, force_quick_gelu=qg, output_dict=True))
        load_checkpoint_into(model, path, name)
        return model
    tags = open_clip.list_pretrained_tags_by_model(name)
    if init not in tags:
        looks_like_path = any(sep in init for sep in "/\\") or path.suffix
        if looks_like_path:
            raise UserError("--init: no such checkpoint file", path=init)
        known = ", ".join(tags) if tags else "none for this architecture"
        raise UserError(f"--init {init!r} is neither a checkpoint file nor an open_clip pretrained tag of {name} "
                        f"(known: {known})")
    try:
        return _quiet(lambda: open_clip.create_model(name, pretrained=init, force_quick_gelu=qg, output_dict=True))
    except Exception as exc:  # download failures surface as RuntimeError, OSError, HF errors...
        raise UserError(
            f"cannot get open_clip's {init!r} weights for {name} (offline or not cached: {_reason(exc)}); "
            "download them once where there is internet, or pass --init FILE with a checkpoint"
        ) from None


def _reason(exc: Exception) -> str:
    """The first sentence of a download error, without open_clip's "Failed to download weights" wrapper."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text.split("': ", 1)[1] if text.startswith("Failed to download weights for tag") and "': " in text else text
    return text.split(". ")[0][:200]


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch file (weights only), unwrapped and unprefixed."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read the checkpoint: {str(exc).splitlines()[0][:200]}", path=path) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError("not a model checkpoint (expected a state dict of tensors)", path=path)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_checkpoint_into(model: nn.Module, path: Path, name: str) -> None:
    """Load ``path`` into ``model`` strictly; a key or shape mismatch names the first offenders."""
    state = read_weights(path)
    expected = model.state_dict()
    if "logit_scale" in state and state["logit_scale"].shape != expected["logit_scale"].shape:
        state["logit_scale"] = state["logit_scale"].reshape(expected["logit_scale"].shape)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        if wrong_shape:
            k = wrong_shape[0]
            parts.append(f"{len(wrong_shape)} shape mismatches, first {k} {tuple(state[k].shape)} vs "
                         f"{tuple(expected[k].shape)}")
        if missing:
            parts.append(f"{len(missing)} missing keys, first {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, first {', '.join(unexpected[:3])}")
        raise UserError(f"--init checkpoint does not fit architecture {name} ({'; '.join(parts)}); "
                        "was it trained for another architecture?", path=path)
    model.load_state_dict(state, strict=True)


def _quiet(create: Callable[[], nn.Module]) -> nn.Module:
    """Run an open_clip factory call without its root-logger chatter ("initialized randomly", download errors)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL + 1)  # failures come back as exceptions, which we word ourselves
    try:
        return create()
    finally:
        root.setLevel(level)
