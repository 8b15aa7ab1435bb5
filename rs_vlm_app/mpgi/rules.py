"""The rule stage: deterministic factual sentences from an image's annotations.

What, how many, where (a 3x3 grid), how big, how dense; the scene class and metadata where known.
The same record always gives the same sentences; they are the "relay baton" that keeps the MLLM's
counts and classes right, and the reference the quality checks hold captions to.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter, defaultdict
from typing import Any

from rs_vlm_app.mpgi.records import Box, ImageRecord
from rs_vlm_app.mpgi.wording import count_phrase, join_list, number_word, percent, plural

GRID = (
    ("upper left", "upper middle", "upper right"),
    ("middle left", "center", "middle right"),
    ("lower left", "lower middle", "lower right"),
)
GRID_ORDER = {name: i for i, name in enumerate(cell for row in GRID for cell in row)}

#: Mean object area as a share of the image -> size word (upper bounds, exclusive).
SIZE_WORDS = ((0.001, "tiny"), (0.01, "small"), (0.05, "medium-sized"), (0.2, "large"), (math.inf, "very large"))
#: Share of the image covered by objects -> density word (lower bounds, inclusive).
DENSITY_WORDS = ((0.3, "densely packed"), (0.1, "moderately dense"), (0.0, "sparse"))
#: Clark-Evans ratio R (mean nearest-neighbour distance over its value for a random pattern).
CLUSTERED_BELOW = 0.7
EVEN_ABOVE = 1.3
MAX_LISTED_CELLS = 3


def grid_cell(x: float, y: float, width: int, height: int) -> str:
    """Name of the 3x3 grid cell that holds pixel position (x, y)."""
    col = min(max(int(3 * x / width), 0), 2)
    row = min(max(int(3 * y / height), 0), 2)
    return GRID[row][col]


def facts(record: ImageRecord) -> list[str]:
    """The rule sentences for one image, in a fixed order."""
    out: list[str] = []
    if record.scene_class:
        out.append(f"The scene is classified as {record.scene_class}.")
    capture = _capture_sentence(record.metadata)
    if capture:
        out.append(capture)
    extent = _extent_sentence(record.footprint)
    if extent:
        out.append(extent)
    if record.objects is None:
        return out
    if not record.objects:
        out.append("No annotated objects are present.")
        return out
    gsd = ground_sample_distance(record)
    by_class: dict[str, list[Box]] = defaultdict(list)
    for box in record.objects:
        by_class[box.label].append(box)
    order = sorted(by_class, key=lambda c: (-len(by_class[c]), c))
    out.append(f"The image contains {join_list([count_phrase(len(by_class[c]), c) for c in order])}.")
    image_area = float(record.width * record.height)
    for label in order:
        out.append(_position_sentence(label, by_class[label], record.width, record.height))
    for label in order:
        out.append(_size_sentence(label, by_class[label], image_area, gsd))
    if len(order) >= 2:
        out.append(_comparison_sentence(by_class))
    for label in order:
        arrangement = _arrangement_sentence(label, by_class[label], image_area)
        if arrangement:
            out.append(arrangement)
    if len(record.objects) >= 2:
        coverage = min(1.0, sum(b.area for b in record.objects) / image_area)
        word = next(w for bound, w in DENSITY_WORDS if coverage >= bound)
        out.append(f"In total {len(record.objects)} objects cover about {percent(coverage)} of the image, a {word} scene.")
    return out


def class_counts(record: ImageRecord) -> dict[str, int]:
    """Objects per class (empty when the image has no detection annotations)."""
    return dict(Counter(b.label for b in record.objects or []))


def ground_sample_distance(record: ImageRecord) -> float | None:
    """Metres per pixel: the metadata's ``gsd``, else the georeferenced footprint's."""
    value = record.metadata.get("gsd")
    try:
        if value not in (None, ""):
            gsd = float(value)
            if gsd > 0:
                return gsd
    except (TypeError, ValueError):
        pass
    if record.footprint and record.footprint.get("gsd_m"):
        return float(record.footprint["gsd_m"])
    return None


# --------------------------------------------------------------------------------------- sentences
def _noun(label: str, n: int) -> str:
    return label if n == 1 else plural(label)


def _be(n: int) -> str:
    return "is" if n == 1 else "are"


def _position_sentence(label: str, boxes: list[Box], width: int, height: int) -> str:
    n = len(boxes)
    cells = Counter(grid_cell(*b.center, width, height) for b in boxes)
    ranked = sorted(cells, key=lambda c: (-cells[c], GRID_ORDER[c]))
    if n == 1:
        return f"The {label} is in the {ranked[0]} of the image."
    subject = f"{number_word(n)} {plural(label)}"
    if len(ranked) == 1:
        lead = f"Both {plural(label)}" if n == 2 else f"All {subject}"
        return f"{lead} are in the {ranked[0]} of the image."
    if len(ranked) <= MAX_LISTED_CELLS:
        parts = [f"{cell} ({cells[cell]})" for cell in sorted(ranked, key=lambda c: (-cells[c], GRID_ORDER[c]))]
        return f"The {subject} are in the {join_list(parts)} of the image."
    top = ranked[0]
    return (f"The {subject} are spread over {len(ranked)} of the 9 parts of a 3x3 grid, "
            f"most of them in the {top} ({cells[top]}).")


def _size_sentence(label: str, boxes: list[Box], image_area: float, gsd: float | None) -> str:
    n = len(boxes)
    mean_area = sum(b.area for b in boxes) / n
    share = mean_area / image_area
    word = next(w for bound, w in SIZE_WORDS if share < bound)
    each = "" if n == 1 else "each "
    if gsd:
        across = _distance(math.sqrt(mean_area) * gsd)
        return f"The {_noun(label, n)} {_be(n)} {word}, {each}about {across} across ({percent(share)} of the image)."
    return f"The {_noun(label, n)} {_be(n)} {word}, {each}covering about {percent(share)} of the image."


def _comparison_sentence(by_class: dict[str, list[Box]]) -> str:
    mean = {c: sum(b.area for b in boxes) / len(boxes) for c, boxes in by_class.items()}
    ranked = sorted(mean, key=lambda c: (-mean[c], c))
    big, small = ranked[0], ranked[-1]
    nb, ns = len(by_class[big]), len(by_class[small])
    if len(ranked) == 2:
        return f"The {_noun(big, nb)} {_be(nb)} larger than the {_noun(small, ns)}."
    return f"The largest objects are the {_noun(big, nb)}; the smallest are the {_noun(small, ns)}."


def _arrangement_sentence(label: str, boxes: list[Box], image_area: float) -> str | None:
    n = len(boxes)
    if n < 3:
        return None
    ratio = clark_evans_ratio([b.center for b in boxes], image_area)
    if ratio < CLUSTERED_BELOW:
        how = "clustered together"
    elif ratio > EVEN_ABOVE:
        how = "evenly spaced"
    else:
        how = "scattered"
    return f"The {plural(label)} are {how}."


def clark_evans_ratio(points: list[tuple[float, float]], area: float) -> float:
    """Mean nearest-neighbour distance over its expectation for a random pattern of the same density.

    Below 1 the points cluster, above 1 they are spread more evenly than chance.
    """
    import numpy as np
    from scipy.spatial import cKDTree

    xy = np.asarray(points, dtype=np.float64)
    distances, _ = cKDTree(xy).query(xy, k=2)
    observed = float(distances[:, 1].mean())
    expected = 0.5 * math.sqrt(area / len(points))
    return observed / expected


def _capture_sentence(metadata: dict[str, Any]) -> str | None:
    sensor = _text(metadata.get("sensor"))
    date = _text(metadata.get("date"))
    place = _text(metadata.get("place"))
    gsd = _text(metadata.get("gsd"))
    parts = []
    if sensor:
        parts.append(f"captured by {sensor}")
    if date:
        parts.append(f"taken on {date}" if not sensor else f"on {date}")
    if place:
        parts.append(f"over {place}")
    if gsd:
        with contextlib.suppress(ValueError):
            gsd = f"{float(gsd):g}"
        parts.append(f"at a ground sample distance of {gsd} m")
    return f"The image was {' '.join(parts)}." if parts else None


def _extent_sentence(footprint: dict[str, Any] | None) -> str | None:
    if not footprint or not footprint.get("size_m"):
        return None
    width_m, height_m = footprint["size_m"]
    return f"The image covers about {_distance(width_m)} by {_distance(height_m)} on the ground."


def _distance(metres: float) -> str:
    """A ground distance with two significant digits: ``3.4 m``, ``35 m``, ``1.2 km``."""
    if metres >= 1000:
        km = metres / 1000
        return f"{km:.1f} km" if km < 10 else f"{km:.0f} km"
    if metres <= 0:
        return "0 m"
    digits = 1 - int(math.floor(math.log10(metres)))
    return f"{round(metres, digits):.{max(digits, 0)}f} m"


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = " ".join(str(value).split())
    return "" if text.lower() in ("", "none", "null", "nan") else text
