"""Tiny open_clip models with random weights, saved in the formats released checkpoints use.

Nothing here downloads: architectures are JSON configs written to a temporary folder and registered
with open_clip; weights are random (seeded). Sizes are dominated by the 49408-token vocabulary.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}

# CoCa: embed_dim must equal the text and multimodal widths.
TINY_COCA_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 64, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32,
        "attentional_pool": True, "attn_pooler_heads": 4, "output_tokens": True,
    },
    "text_cfg": {
        "context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1,
        "embed_cls": True, "output_tokens": True,
    },
    "multimodal_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1,
                       "attn_pooler_heads": 2},
    "custom_text": True,
}

#: checkpoint layouts seen in released files
FORMATS = ("state_dict", "training", "module", "safetensors")
#: further layouts the loader accepts: {"model": ...} wrappers and torch.compile's "_orig_mod." prefix
EXTRA_FORMATS = ("model", "compiled")


def write_config(folder: Path, name: str, config: dict) -> Path:
    """Write an open_clip model config; its file stem is the model name open_clip will know."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def build_model(config_path: Path, seed: int = 0, quick_gelu: bool = False):
    """Create the open_clip model of ``config_path`` with seeded random weights."""
    import open_clip
    import torch

    from rs_vlm_app.models.open_clip_fixes import init_uninitialized

    open_clip.add_model_config(config_path)
    torch.manual_seed(seed)
    model = open_clip.create_model(config_path.stem, pretrained=None, force_quick_gelu=quick_gelu)
    init_uninitialized(model)
    model.eval()
    return model


def save_checkpoint(model, path: Path, fmt: str = "state_dict") -> Path:
    """Save ``model``'s weights as a released checkpoint would be laid out.

    state_dict: a plain state_dict (.pt), as GeoRSCLIP and RemoteCLIP ship;
    training:   {"epoch", "state_dict"} as open_clip's training script writes;
    module:     like training, with DDP's "module." prefix on every key;
    safetensors: a .safetensors file, as open_clip's hub exports;
    model:      {"model": state_dict}, as some training frameworks write;
    compiled:   a state_dict of a torch.compile'd model (keys prefixed "_orig_mod.").
    """
    import torch

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "state_dict":
        torch.save(state, path)
    elif fmt == "training":
        torch.save({"epoch": 3, "name": "tiny", "state_dict": state}, path)
    elif fmt == "module":
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif fmt == "model":
        torch.save({"model": state, "step": 10}, path)
    elif fmt == "compiled":
        torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        raise ValueError(f"unknown checkpoint format {fmt!r}")
    return path


def tiny_config(kind: str = "clip") -> dict:
    return copy.deepcopy(TINY_CLIP_CONFIG if kind == "clip" else TINY_COCA_CONFIG)
