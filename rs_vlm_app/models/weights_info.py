"""What a state_dict looks like (family, tower sizes), for error messages that say what a file is."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

_RESBLOCK = re.compile(r"^(?P<tower>.*)transformer\.resblocks\.(?P<index>\d+)\.")


@dataclass(frozen=True)
class WeightsInfo:
    """Sizes read off a CLIP/CoCa state_dict; None where the dict does not tell."""

    family: str | None = None            # "clip", "coca" or None (not an open_clip model)
    vision: str | None = None            # "ViT", "ResNet", "timm" or None
    embed_dim: int | None = None
    vision_width: int | None = None
    vision_layers: int | None = None
    patch_size: int | None = None
    image_size: int | None = None
    text_width: int | None = None
    text_layers: int | None = None
    context_length: int | None = None

    def summary(self) -> str:
        """E.g. "a CLIP checkpoint (ViT width 768, patch 32, 12 layers, 224 px; embed dim 512)"."""
        what = {"clip": "a CLIP", "coca": "a CoCa caption model", None: "an unrecognised"}[self.family]
        parts = []
        if self.vision == "ViT":
            vit = [f"width {self.vision_width}" if self.vision_width else None,
                   f"patch {self.patch_size}" if self.patch_size else None,
                   f"{self.vision_layers} layer{'s' if self.vision_layers != 1 else ''}" if self.vision_layers else None,
                   f"{self.image_size} px" if self.image_size else None]
            parts.append("ViT " + ", ".join(p for p in vit if p))
        elif self.vision:
            parts.append(f"{self.vision} image tower" + (f", {self.image_size} px" if self.image_size else ""))
        if self.embed_dim:
            parts.append(f"embed dim {self.embed_dim}")
        return f"{what} checkpoint" + (f" ({'; '.join(parts)})" if parts else "")

    def differences(self, expected: WeightsInfo) -> list[str]:
        """["embed dim 512, expected 768", ...] for the sizes both sides know and that differ."""
        labels = {"family": "family", "vision": "image tower", "embed_dim": "embed dim",
                  "vision_width": "vision width", "vision_layers": "vision layers", "patch_size": "patch size",
                  "image_size": "image size", "text_width": "text width", "text_layers": "text layers",
                  "context_length": "context length"}
        out = []
        for f in fields(self):
            if f.name == "family":  # said by summary()
                continue
            mine, theirs = getattr(self, f.name), getattr(expected, f.name)
            if mine is not None and theirs is not None and mine != theirs:
                out.append(f"{labels[f.name]} {mine}, expected {theirs}")
        return out


def describe_state_dict(state_dict: Mapping) -> WeightsInfo:
    """Read family and sizes off an open_clip CLIP/CoCa state_dict (any other dict gives family None)."""
    keys = list(state_dict)
    has = state_dict.__contains__

    def shape(key):
        value = state_dict.get(key)
        return tuple(value.shape) if hasattr(value, "shape") else None

    if any(k.startswith("text_decoder.") for k in keys):
        family = "coca"
    elif any(k.startswith("visual.") for k in keys) and (
            has("token_embedding.weight") or any(k.startswith("text.") for k in keys)):
        family = "clip"
    else:
        family = None

    layers: dict[str, set[int]] = {}
    for key in keys:
        match = _RESBLOCK.match(key)
        if match:
            layers.setdefault(match["tower"], set()).add(int(match["index"]))

    vision = vision_width = patch = image_size = None
    conv1 = shape("visual.conv1.weight")
    if has("visual.class_embedding") and conv1 and len(conv1) == 4:
        vision, vision_width, patch = "ViT", conv1[0], conv1[2]
        pos = shape("visual.positional_embedding")
        if pos:
            grid = math.isqrt(max(pos[0] - 1, 0))
            image_size = grid * patch if grid * grid == pos[0] - 1 else None
    elif has("visual.attnpool.c_proj.weight"):
        vision = "ResNet"
        pos = shape("visual.attnpool.positional_embedding")
        if pos:
            grid = math.isqrt(max(pos[0] - 1, 0))
            image_size = grid * 32 if grid * grid == pos[0] - 1 else None
    elif any(k.startswith("visual.trunk.") for k in keys):
        vision = "timm"

    embed_dim = None
    for key in ("text_projection", "text.text_projection", "visual.proj"):
        s = shape(key)
        if s and len(s) == 2:
            embed_dim = s[1]
            break
    if embed_dim is None and shape("visual.attnpool.c_proj.weight"):
        embed_dim = shape("visual.attnpool.c_proj.weight")[0]

    text_width = context = None
    for prefix in ("", "text."):
        tok = shape(f"{prefix}token_embedding.weight")
        if tok and len(tok) == 2:
            text_width = tok[1]
            pos = shape(f"{prefix}positional_embedding")
            context = pos[0] if pos else None
            break
    text_layers = len(layers.get("", set()) | layers.get("text.", set())) or None
    vision_layers = len(layers.get("visual.", set())) or None
    return WeightsInfo(family=family, vision=vision, embed_dim=embed_dim, vision_width=vision_width,
                       vision_layers=vision_layers, patch_size=patch, image_size=image_size,
                       text_width=text_width, text_layers=text_layers, context_length=context)


def matching_archs(info: WeightsInfo, limit: int = 3) -> list[str]:
    """open_clip architectures whose config has the sizes of ``info`` (imports open_clip)."""
    from rs_vlm_app.models.open_clip_import import import_open_clip

    open_clip = import_open_clip()

    known = {"embed_dim": info.embed_dim, "vision_width": info.vision_width, "vision_layers": info.vision_layers,
             "patch_size": info.patch_size, "image_size": info.image_size, "text_width": info.text_width,
             "text_layers": info.text_layers}
    if info.vision != "ViT" or info.family is None:
        return []
    found = []
    for name in open_clip.list_models():
        if name.endswith("-quickgelu"):
            continue  # same tensors as the plain name
        cfg = open_clip.get_model_config(name) or {}
        vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        if "timm_model_name" in vision or "hf_model_name" in text:
            continue
        image = vision.get("image_size")
        candidate = {"embed_dim": cfg.get("embed_dim"), "vision_width": vision.get("width"),
                     "vision_layers": vision.get("layers"), "patch_size": vision.get("patch_size"),
                     "image_size": image if isinstance(image, int) else None,
                     "text_width": text.get("width"), "text_layers": text.get("layers")}
        family = "coca" if "multimodal_cfg" in cfg else "clip"
        if family == info.family and all(v is None or candidate[k] == v for k, v in known.items()):
            found.append(name)
    return found[:limit]
