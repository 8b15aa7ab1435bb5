"""Small hand-made datasets on disk: class folders, COCO JSON, DOTA labels, and build configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image


def make_image(path: Path, size: tuple[int, int] = (96, 64), seed: int = 0) -> Path:
    """A small RGB image with a few coloured blocks (width, height)."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:] = rng.integers(40, 200, 3)
    for _ in range(4):
        x, y = rng.integers(0, width - 8), rng.integers(0, height - 8)
        pixels[y:y + 8, x:x + 8] = rng.integers(0, 255, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def class_folders(root: Path, classes: dict[str, int], size=(96, 64)) -> Path:
    """root/<class>/<class>_<i>.png, the AID / RESISC45 layout."""
    seed = 0
    for label, count in classes.items():
        for i in range(count):
            seed += 1
            make_image(root / label / f"{label.lower()}_{i}.png", size, seed)
    return root


def coco_dataset(root: Path, images: list[dict[str, Any]], categories: dict[int, str]) -> Path:
    """images: [{"file_name", "size": (w, h), "boxes": [(category_id, x, y, w, h)], "make": True}]."""
    data = {"images": [], "annotations": [], "categories": [{"id": k, "name": v} for k, v in categories.items()]}
    ann_id = 0
    for i, image in enumerate(images, start=1):
        width, height = image.get("size", (96, 64))
        if image.get("make", True):
            make_image(root / "images" / image["file_name"], (width, height), i)
        data["images"].append({"id": i, "file_name": image["file_name"], "width": width, "height": height})
        for category, x, y, w, h in image.get("boxes", []):
            ann_id += 1
            data["annotations"].append({"id": ann_id, "image_id": i, "category_id": category, "bbox": [x, y, w, h],
                                        "area": w * h, "iscrowd": 0})
    (root / "images").mkdir(parents=True, exist_ok=True)
    path = root / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def dota_dataset(root: Path, labels: dict[str, str], images: dict[str, tuple[int, int]]) -> Path:
    """labels: {stem: text of labelTxt/<stem>.txt}; images: {file name: (w, h)} written under images/."""
    (root / "labelTxt").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        (root / "labelTxt" / f"{stem}.txt").write_text(text)
    for i, (name, size) in enumerate(images.items()):
        make_image(root / "images" / name, size, 100 + i)
    return root


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def openai_backend(base_url: str, model: str, **extra) -> dict[str, Any]:
    return {"type": "openai", "base_url": base_url, "model": model, "timeout_s": 30, "retries": 2,
            "backoff_s": 0.05, "backoff_max_s": 0.2, **extra}


def build_config(output: Path, sources: list[dict], mllm: dict, llm: dict | None = None, *,
                 perspectives=("scene", "objects"), captions=None, quality=None, **extra) -> dict[str, Any]:
    """A build config: relay and perspectives on ``mllm``, integration on ``llm`` (default: the same)."""
    config = {
        "output": str(output),
        "sources": sources,
        "backends": {"mllm": mllm, "llm": llm or mllm},
        "relay": {"backend": "mllm", "max_tokens": 24},
        "perspectives": {"backend": "mllm", "prompts": list(perspectives), "max_tokens": 24},
        "integration": {"backend": "llm", "max_tokens": 24,
                        "captions": captions or [{"name": "short", "words": 8}, {"name": "long", "words": 20}]},
        "quality": quality or {"duplicates": "off", "length": "off"},
        "image": {"max_side": 112},
    }
    config.update(extra)
    return config
