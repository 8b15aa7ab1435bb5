"""open_clip architectures: check a name, read a model config file, register it under a private name."""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from rs_vlm_app import paths
from rs_vlm_app.atomic import write_text_atomic
from rs_vlm_app.errors import UserError

_REQUIRED = ("embed_dim", "vision_cfg", "text_cfg")


@dataclass(frozen=True)
class ModelConfig:
    """A user's open_clip model config, read and checked (no open_clip import needed)."""

    path: Path
    model_cfg: dict
    preprocess_cfg: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        return "coca" if "multimodal_cfg" in self.model_cfg else "clip"

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_cfg, sort_keys=True).encode()).hexdigest()[:12]


def read_model_config(path: Path) -> ModelConfig:
    """Read an open_clip model config (embed_dim, vision_cfg, text_cfg), or an open_clip_config.json of a
    Hugging Face export ({"model_cfg": ..., "preprocess_cfg": ...}); UserError if it is neither."""
    path = Path(path)
    what = "model config"
    if path.is_dir():
        raise UserError(f"is a folder; model_config must be a JSON {what} file", path=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the {what}: {exc}", path=path) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} is not valid JSON: {exc}", path=path) from None
    if not isinstance(data, dict):
        raise UserError(f"{what} must be a JSON object", path=path)
    preprocess = {}
    if isinstance(data.get("model_cfg"), dict):
        data, preprocess = data["model_cfg"], data.get("preprocess_cfg") or {}
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise UserError(f"not an open_clip {what}: missing {', '.join(missing)} "
                        f"(it needs embed_dim, vision_cfg and text_cfg)", path=path)
    if not isinstance(data["vision_cfg"], dict) or not isinstance(data["text_cfg"], dict):
        raise UserError(f"not an open_clip {what}: vision_cfg and text_cfg must be objects", path=path)
    if not isinstance(data["embed_dim"], int) or isinstance(data["embed_dim"], bool) or data["embed_dim"] <= 0:
        raise UserError(f"not an open_clip {what}: embed_dim must be a positive integer", path=path)
    if not isinstance(preprocess, dict):
        raise UserError(f"{what}: preprocess_cfg must be an object", path=path)
    return ModelConfig(path=path, model_cfg=data, preprocess_cfg=preprocess)


def register_model_config(config: ModelConfig) -> str:
    """Make ``config`` known to open_clip under a private, content-addressed name and return that name.

    A private name keeps a user's "ViT-B-32.json" from replacing open_clip's built-in ViT-B-32 for the
    rest of the process.
    """
    from rs_vlm_app.models.open_clip_import import import_open_clip

    open_clip = import_open_clip()

    name = f"rsvlm-{config.path.stem}-{config.digest}"
    if open_clip.get_model_config(name) is None:
        target = paths.cache_dir() / "model-configs" / f"{name}.json"
        if not target.is_file():
            write_text_atomic(target, json.dumps(config.model_cfg, indent=1))
        open_clip.add_model_config(target)
    return name


def check_arch(arch: str) -> str:
    """The open_clip architecture name for ``arch`` ("ViT-B/32" -> "ViT-B-32"); UserError if unknown."""
    from rs_vlm_app.models.open_clip_import import import_open_clip

    open_clip = import_open_clip()

    name = arch.strip().replace("/", "-")
    known = open_clip.list_models()
    if name in known:
        return name
    lower = {k.lower(): k for k in known}
    if name.lower() in lower:
        return lower[name.lower()]
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see open_clip.list_models()"
    raise UserError(f"unknown open_clip architecture {arch!r}; {hint} "
                    f"(or describe it in a JSON file given as model_config)")


def arch_config(name: str) -> dict:
    """open_clip's config for a known architecture name (after check_arch or register_model_config)."""
    from rs_vlm_app.models.open_clip_import import import_open_clip

    open_clip = import_open_clip()

    cfg = open_clip.get_model_config(name)
    if cfg is None:  # check_arch/register_model_config come first; this is a bug, not a user mistake
        raise KeyError(name)
    return cfg


def arch_family(name: str) -> str:
    return "coca" if "multimodal_cfg" in arch_config(name) else "clip"
