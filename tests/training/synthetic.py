"""A synthetic caption dataset: coloured shapes on noisy backgrounds, eight classes."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np

COLOURS = {
    "red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230), "yellow": (230, 220, 40),
    "cyan": (40, 220, 220), "magenta": (220, 40, 220), "white": (240, 240, 240), "orange": (240, 140, 20),
}
SHAPES = ("circle", "square")
#: eight classes, told apart by colour (a tiny model learns that within a few dozen steps)
CLASSES = [f"{colour} {SHAPES[i % 2]}" for i, colour in enumerate(COLOURS)]
PHRASES = ("a {} on dark ground", "an image of a {}", "one {} seen from above")


def draw(colour: str, shape: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """An RGB uint8 image of one shape of the given colour at a random place."""
    image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    radius = int(rng.integers(size // 5, size // 3))
    cy, cx = rng.integers(radius, size - radius, size=2)
    yy, xx = np.mgrid[:size, :size]
    if shape == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    else:
        mask = (abs(yy - cy) <= radius) & (abs(xx - cx) <= radius)
    image[mask] = COLOURS[colour]
    return image


def samples(n: int, seed: int = 0, size: int = 64):
    """(class index, caption, image) triples, classes in turn."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = i % len(CLASSES)
        colour, shape = CLASSES[label].split()
        caption = PHRASES[int(rng.integers(len(PHRASES)))].format(CLASSES[label])
        yield label, caption, draw(colour, shape, rng, size)


def write_csv_dataset(folder: Path, n: int, seed: int = 0, captions_per_image: int = 1,
                      name: str = "train.csv") -> Path:
    """PNG files under folder/images and a caption CSV (relative paths) beside them."""
    from PIL import Image

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    csv_path = folder / name
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "caption"])
        for i, (label, caption, pixels) in enumerate(samples(n, seed)):
            rel = f"images/{Path(name).stem}_{i:05d}.png"
            Image.fromarray(pixels).save(folder / rel)
            writer.writerow([rel, caption])
            for extra in range(1, captions_per_image):
                writer.writerow([rel, PHRASES[extra % len(PHRASES)].format(CLASSES[label])])
    return csv_path


def write_label_csv(folder: Path, n: int, seed: int = 1) -> Path:
    """A zero-shot CSV: image path and class name."""
    from PIL import Image

    images = folder / "zs_images"
    images.mkdir(parents=True, exist_ok=True)
    path = folder / "zeroshot.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "label"])
        for i, (label, _caption, pixels) in enumerate(samples(n, seed)):
            rel = f"zs_images/{i:05d}.png"
            Image.fromarray(pixels).save(folder / rel)
            writer.writerow([rel, CLASSES[label].replace(" ", "_")])
    return path


def write_shards(folder: Path, n: int, per_shard: int, seed: int = 0) -> list[Path]:
    """WebDataset shards as the dataset builder exports them: key.png + key.txt."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    items = list(samples(n, seed))
    shards = []
    for begin in range(0, n, per_shard):
        shards.append(folder / f"shard-{len(shards):06d}.tar")
        with tarfile.open(shards[-1], "w") as tar:
            for i, (_label, caption, pixels) in enumerate(items[begin: begin + per_shard], start=begin):
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="PNG")
                for name, data in ((f"sample{i:05d}.png", buffer.getvalue()),
                                   (f"sample{i:05d}.txt", caption.encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return shards
