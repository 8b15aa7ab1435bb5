"""SeLo metrics: the reference's numbers (shared cases and parity maps) and hand-derived edge cases."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from rs_vlm_app.evaluation.selo import (
    METRIC_NAMES,
    _group_centres,
    mean_metrics,
    polygon_mask,
    probability_centres,
    probmap_from_gray,
    region_centre_radius,
    selo_metrics,
)
from tests.conftest import SELO

CASES_DIR = SELO / "metric_cases"
PARITY_DIR = SELO / "parity"
TOL = 1e-6
E3 = math.exp(3.0)


def _load_cases() -> list[dict]:
    path = CASES_DIR / "cases.json"
    if not path.exists():  # fail the test, not the whole collection
        return [{"case": "missing-reference-cases", "missing": path}]
    return json.loads(path.read_text())


def _ras(relative_offsets: list[float]) -> float:
    """Ras from per-polygon offset / radius, written out from the published definition."""
    g = sum(relative_offsets) / len(relative_offsets)
    return (math.exp(3 * g) - 1) / (E3 - 1)


def _rmi(rsu: float, ras: float, rda: float) -> float:
    return 0.4 * rsu + 0.35 * (1 - ras) + 0.25 * rda


def _assert_metrics(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(want[name], abs=TOL), name


def _square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


# --- the reference's own numbers -------------------------------------------------------------------

@pytest.mark.parametrize("case", _load_cases(), ids=lambda c: c["case"])
def test_reference_metric_case(case):
    if "missing" in case:
        pytest.fail(f"SeLo reference cases not found: {case['missing']} (set RSVLM_SHARED)")
    gray = cv2.imread(str(CASES_DIR / case["probmap"]), cv2.IMREAD_GRAYSCALE)
    assert gray.shape == tuple(case["shape"])
    prob = probmap_from_gray(gray)

    _assert_metrics(selo_metrics(prob, case["polygons"]), case)
    assert [list(region_centre_radius(p)) for p in case["polygons"]] == case["gt_center_radius"]
    assert [list(c) for c in probability_centres(prob)] == case["prob_centers_xy"]


def test_parity_probmaps_reproduce_reference_run():
    """JPEG maps written by the unmodified reference pipeline, scored as it scores them."""
    reference = json.loads((PARITY_DIR / "reference_metrics.json").read_text())
    samples = json.loads((PARITY_DIR / "visible_anno.json").read_text())

    def by_name(row: dict) -> dict[str, float]:  # reference keys read like "↑ Rsu [0 ~ 1]"
        return {name: next(v for k, v in row.items() if f" {name} " in k) for name in METRIC_NAMES}

    per_sample = []
    for index, sample in enumerate(samples):
        gray = cv2.imread(str(PARITY_DIR / f"probmap_{index}.jpg"), cv2.IMREAD_GRAYSCALE)
        metrics = selo_metrics(probmap_from_gray(gray), sample["points"])
        _assert_metrics(metrics, by_name(reference["per_sample"][index]))
        per_sample.append(metrics)
    _assert_metrics(mean_metrics(per_sample), by_name(reference["mean"]))


# Scenes built with integer arithmetic only (bit-identical on every platform), scored by the
# reference SLM code (RS5M inference_tool.py with scikit-image 0.26, OpenCV 5.0, SciPy 1.17); the
# numbers below are its output. They cover what the shared cases do not: several attention centres in
# one polygon, partial offsets, fractional and negative polygon points, a ring-shaped peak group.
GOLDEN_SCENES = [
    {
        "name": "two-peaks-in-one-polygon",
        "shape": (1800, 2600),
        "cones": [(700, 900, 255, 3, 40), (1800, 1000, 230, 4, 0), (2300, 200, 150, 2, 0)],
        "polygons": [
            [[300.5, 400.2], [2200.7, 380.9], [2150.0, 1500.3], [350.1, 1450.8]],
            [[2100, 50], [2550, 60], [2500, 400]],
        ],
    },
    {
        "name": "partly-outside-polygons",
        "shape": (2000, 2000),
        "cones": [(100, 150, 250, 3, 20), (1500, 1600, 200, 5, 60), (1700, 300, 180, 2, 0)],
        "polygons": [
            [[-150.6, -120.4], [320.2, -90.9], [300.7, 380.3], [-110.0, 350.5]],
            [[1200.3, 1300.8], [1900.6, 1350.1], [1850.2, 2100.9], [1250.4, 2050.5], [1180.0, 1700.0]],
            [[1500, 100], [1950.5, 150.5], [1800.9, 600.1]],
        ],
    },
    {
        "name": "many-peaks-one-big-polygon",
        "shape": (2600, 2600),
        "cones": [(400, 400, 255, 3, 0), (1300, 500, 240, 3, 30), (2200, 450, 220, 3, 0),
                  (500, 1400, 250, 4, 0), (1400, 1300, 235, 2, 50), (2200, 2100, 200, 3, 0)],
        "polygons": [[[100.0, 100.0], [2500.0, 120.0], [2480.0, 2500.0], [90.0, 2450.0]]],
    },
    {
        "name": "ring",
        "shape": (2000, 2000),
        "cones": [(1600, 1600, 210, 3, 0)],
        "rings": [(800, 800, 300, 360, 230)],
        "polygons": [
            [[500, 500], [1100, 500], [1100, 1100], [500, 1100]],
            [[1400.5, 1400.5], [1800, 1400], [1800, 1800], [1400, 1800]],
        ],
    },
]


GOLDEN_METRICS = {
    "two-peaks-in-one-polygon": {
        "Rsu": 0.9895694171960712, "Ras": 0.3407956705732884, "Rda": 0.23180507152201235,
        "Rmi": 0.6845005500582806, "centres": [(702, 902), (1802, 1002)],
    },
    "partly-outside-polygons": {
        "Rsu": 0.9702206084159879, "Ras": 0.01973421643103273, "Rda": 1.0,
        "Rmi": 0.9811812676155338, "centres": [(102, 152), (1502, 1602), (1702, 302)],
    },
    "many-peaks-one-big-polygon": {
        "Rsu": 0.8437155707811529, "Ras": 0.10072521074883829, "Rda": 0.3444175342058886,
        "Rmi": 0.7383367881018399,
        "centres": [(402, 402), (502, 1402), (1302, 502), (1402, 1302), (2202, 452), (2202, 2102)],
    },
    "ring": {  # the ring's peak pixels fall apart into three groups
        "Rsu": 0.9796710396792636, "Ras": 0.06095186877564164, "Rda": 0.6732949417055254,
        "Rmi": 0.8888589972266122, "centres": [(573, 573), (1031, 573), (573, 1031), (1602, 1602)],
    },
}


def _golden_map(shape, cones, rings=()) -> np.ndarray:
    """8-bit map: the maximum of flat-topped L1 cones (x, y, peak, px per level, plateau radius)
    and of rings (x, y, inner radius, outer radius, value)."""
    rows, cols = np.indices(shape, dtype=np.int64)
    level = np.zeros(shape, dtype=np.int64)
    for x, y, peak, step, plateau in cones:
        distance = np.abs(cols - x) + np.abs(rows - y)
        level = np.maximum(level, peak - np.maximum(distance - plateau, 0) // step)
    for x, y, inner, outer, value in rings:
        squared = (cols - x) ** 2 + (rows - y) ** 2
        level[(squared >= inner * inner) & (squared <= outer * outer)] = value
    return np.clip(level, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("scene", GOLDEN_SCENES, ids=lambda s: s["name"])
def test_reference_run_on_built_scene(scene):
    prob = probmap_from_gray(_golden_map(scene["shape"], scene["cones"], scene.get("rings", ())))
    want = GOLDEN_METRICS[scene["name"]]
    _assert_metrics(selo_metrics(prob, scene["polygons"]), want)
    assert probability_centres(prob) == want["centres"]


# --- hand-derived cases ----------------------------------------------------------------------------
# A block of 1s centred at c gives one attention centre at c + 2: the 50-px box filter (anchor 25)
# shifts the map by +0.5 px per pass, the 5-pass result is symmetric about c + 2.5, and the centre's
# coordinate mean c + 2.5 is truncated.

def test_probability_equal_to_mask_scores_perfect_rsu_and_rda():
    polygon = _square(800, 800, 1200, 1200)
    prob = polygon_mask((2000, 2000), [np.array(polygon)]).astype(np.float64)
    assert prob.sum() == 401 * 401  # outline pixels count as inside

    metrics = selo_metrics(prob, [polygon])

    # centre (1000, 1000); r = int(1.5 * 200 * sqrt(2)) = 424; attention centre (1002, 1002)
    assert region_centre_radius(polygon) == (1000, 1000, 424)
    assert probability_centres(prob) == [(1002, 1002)]
    ras = _ras([math.sqrt(8) / 424])
    _assert_metrics(metrics, {"Rsu": 1.0, "Ras": ras, "Rda": 1.0, "Rmi": _rmi(1.0, ras, 1.0)})
    assert metrics["Rmi"] > 0.999


def test_all_zero_map_scores_worst_with_several_polygons():
    polygons = [_square(100, 100, 300, 300), _square(1200, 1300, 1700, 1800)]
    metrics = selo_metrics(np.zeros((2000, 2000)), polygons)
    assert probability_centres(np.zeros((2000, 2000))) == []
    _assert_metrics(metrics, {"Rsu": 0.0, "Ras": 1.0, "Rda": 0.0, "Rmi": 0.0})


def test_attention_on_one_of_two_polygons():
    near, far = _square(400, 400, 600, 600), _square(1400, 1400, 1600, 1600)
    prob = np.zeros((2000, 2000))
    prob[450:551, 450:551] = 1.0  # block centred at (500, 500), inside the first polygon

    metrics = selo_metrics(prob, [near, far])

    # r = int(1.5 * 100 * sqrt(2)) = 212 for both; the one centre (502, 502) lies sqrt(8) px from the
    # first centre and out of reach of the second, whose offset is then its radius.
    assert probability_centres(prob) == [(502, 502)]
    ras = _ras([math.sqrt(8) / 212, 1.0])
    rda = (1.0 + 0.0) / 2
    # all probability mass inside the polygons: Rsu = 1 - exp(-huge)
    _assert_metrics(metrics, {"Rsu": 1.0, "Ras": ras, "Rda": rda, "Rmi": _rmi(1.0, ras, rda)})


def test_two_attention_centres_inside_one_polygon():
    polygon = _square(500, 500, 2500, 1500)
    prob = np.zeros((2000, 3000))
    prob[900:1101, 800:1001] = 1.0  # centred at (900, 1000)
    prob[900:1101, 2000:2201] = 1.0  # centred at (2100, 1000)

    metrics = selo_metrics(prob, [polygon])

    # centre (1500, 1000); r = int(1.5 * sqrt(1000^2 + 500^2)) = 1677; centres (902, 1002) and
    # (2102, 1002), equally probable, so in raster order of their first pixel.
    assert region_centre_radius(polygon) == (1500, 1000, 1677)
    assert probability_centres(prob) == [(902, 1002), (2102, 1002)]
    offset = (math.hypot(598, 2) + math.hypot(602, 2)) / 2
    ras = _ras([offset / 1677])
    # Rda, n = 2: mean point (1502, 1002), both centres 600 px from it
    rda = 0.5 * (1 - 600 / 1677) + math.exp(-0.5 * (2 + 2))
    _assert_metrics(metrics, {"Rsu": 1.0, "Ras": ras, "Rda": rda, "Rmi": _rmi(1.0, ras, rda)})


def test_polygon_partly_outside_the_image_on_a_uniform_map():
    polygon = _square(-200, -200, 200, 200)
    value = 128 / 255
    prob = probmap_from_gray(np.full((1000, 1000), 128, dtype=np.uint8))

    metrics = selo_metrics(prob, [polygon])

    # the mask is clipped to the image: rows and columns 0..200
    area_in = 201 * 201
    area_out = 1000 * 1000 - area_in
    ratio = value * area_in / (value * area_out + 1e-7) * area_out / area_in
    rsu = 1 - math.exp(-0.707 * ratio)
    # a flat map has one centre, its middle (499.5 truncated); the polygon's centre (0, 0) with
    # r = 424 is 705.7 px away, so Ras is worst and no centre is near it
    assert probability_centres(prob) == [(499, 499)]
    _assert_metrics(metrics, {"Rsu": rsu, "Ras": 1.0, "Rda": 0.0, "Rmi": _rmi(rsu, 1.0, 0.0)})


def test_polygons_covering_the_whole_image_give_rsu_zero_as_the_reference():
    prob = np.zeros((600, 600))
    prob[250:351, 250:351] = 1.0
    metrics = selo_metrics(prob, [_square(-10, -10, 700, 700)])
    assert metrics["Rsu"] == 0.0  # background area 0 multiplies the mass ratio


def test_centres_are_ordered_by_probability_then_raster_order_and_below_half_dropped():
    prob = np.zeros((3000, 3000))
    # 200-px blocks, so each is centred at c - 0.5 and its attention centre lies at c - 0.5 + 2.5
    blocks = {  # (centre column c, centre row c): value
        (2500, 500): 0.6,  # top right
        (500, 1500): 1.0,
        (2500, 2500): 0.4,  # below 0.5: dropped
        (500, 2500): 0.6,  # ties with the top-right block, which comes first in raster order
        (500, 500): 0.5,  # exactly 0.5 is kept
    }
    for (x, y), value in blocks.items():
        prob[y - 100:y + 100, x - 100:x + 100] = value
    assert probability_centres(prob) == [(502, 1502), (2502, 502), (502, 2502), (502, 502)]


def test_float_map_is_truncated_to_8_bit_before_the_peak_search():
    prob = np.zeros((1000, 1600))
    prob[400:600, 300:600] = 200.75 / 255  # 8 bit: 200 by truncation (201 if rounded)
    prob[400:600, 600:900] = 200.25 / 255  # 8 bit: 200
    # one flat 600 x 200 plateau centred at (599.5, 499.5), found 2.5 px further on
    assert probability_centres(prob) == [(602, 502)]


def test_group_centres_join_diagonal_neighbours():
    peaks = np.zeros((10, 12), dtype=bool)
    peaks[[1, 2, 3], [1, 2, 3]] = True  # one diagonal line: centre (2, 2)
    peaks[0, 9:12] = True  # top right, starts on an earlier row than the line: comes first
    peaks[6:9, 6:9] = True
    peaks[7, 7] = False  # a ring: its centre (7, 7) is not part of it
    assert _group_centres(peaks) == [(10, 0), (2, 2), (7, 7)]


def test_mask_truncates_points_and_drops_polygon_overlaps():
    mask = polygon_mask((40, 40), [np.array(_square(10.9, 10.9, 20.2, 20.2))])
    assert mask.sum() == 11 * 11  # 10.9 -> 10 (not 11), 20.2 -> 20, outline included
    assert mask[10, 10] == 1

    a, b = np.array(_square(0, 0, 20, 20)), np.array(_square(10, 10, 30, 30))
    mask = polygon_mask((40, 40), [a, b])
    assert mask[15, 15] == 0  # the overlap's interior cancels out (even-odd fill)
    assert mask[10, 15] == 1 and mask[5, 5] == 1 and mask[25, 25] == 1
    assert mask.sum() == 2 * 21 * 21 - 11 * 11 - 9 * 9


def test_region_centre_truncates_towards_zero():
    # mean x = -5/3 -> -1 (not -2), mean y = -7/3 -> -2; distances sqrt(5), 1, 1 -> r = int(2.118)
    assert region_centre_radius([[-3, -3], [-1, -3], [-1, -1]]) == (-1, -2, 2)
    # square 0..3: centre 1.5 -> 1; distances sqrt2, sqrt5, sqrt8, sqrt5 -> r = int(3.268) = 3
    assert region_centre_radius(_square(0, 0, 3, 3)) == (1, 1, 3)
    # square 0..10: all distances sqrt(50) -> r = int(10.607) = 10, not 11
    assert region_centre_radius(_square(0, 0, 10, 10)) == (5, 5, 10)


def test_mean_metrics_averages_each_metric():
    rows = [{"Rsu": 1.0, "Ras": 0.0, "Rda": 1.0, "Rmi": 1.0}, {"Rsu": 0.5, "Ras": 1.0, "Rda": 0.0, "Rmi": 0.2}]
    assert mean_metrics(rows) == pytest.approx({"Rsu": 0.75, "Ras": 0.5, "Rda": 0.5, "Rmi": 0.6})


def test_probmap_from_gray_divides_by_255():
    prob = probmap_from_gray(np.array([[0, 128, 255]], dtype=np.uint8))
    assert prob.dtype == np.float64
    assert prob.tolist() == [[0.0, 128 / 255, 1.0]]


# --- input validation ------------------------------------------------------------------------------

GOOD_POLYGON = _square(10, 10, 50, 50)


@pytest.mark.parametrize(
    ("probmap", "message"),
    [
        (np.zeros((4, 100, 100)), "2-D"),
        (np.zeros(100), "2-D"),
        (np.zeros((0, 100)), "empty"),
        (np.full((100, 100), 1.5), r"\[0, 1\]"),
        (np.full((100, 100), -0.1), r"\[0, 1\]"),
        (np.full((100, 100), np.nan), r"\[0, 1\]"),
        (np.full((100, 100), 200, dtype=np.uint8), "probmap_from_gray"),
    ],
    ids=["3-D", "1-D", "empty", "above-1", "negative", "nan", "8-bit"],
)
def test_bad_probmap_is_rejected(probmap, message):
    with pytest.raises(ValueError, match=message):
        selo_metrics(probmap, [GOOD_POLYGON])


@pytest.mark.parametrize(
    ("polygons", "message"),
    [
        ([], "no ground-truth polygon"),
        ([GOOD_POLYGON, [[1, 1], [5, 5]]], "polygon 1 has 2 point"),
        ([[[1, 2, 3], [4, 5, 6], [7, 8, 9]]], r"polygon 0 must be a list of \[x, y\] points"),
        ([[[1, 1], [5, float("nan")], [9, 1]]], "non-finite"),
        ([_square(300, 300, 400, 400)], "cover no pixel"),
        ([[[10, 10], [10.5, 10], [10, 10.5]]], "radius .* is 0 px"),
    ],
    ids=["empty-list", "two-points", "3-d-points", "nan-point", "outside-image", "radius-0"],
)
def test_bad_polygons_are_rejected(polygons, message):
    with pytest.raises(ValueError, match=message):
        selo_metrics(np.zeros((100, 100)), polygons)


def test_bad_inputs_of_helpers_are_rejected():
    with pytest.raises(ValueError, match="uint8"):
        probmap_from_gray(np.zeros((10, 10), dtype=np.uint16))
    with pytest.raises(ValueError, match="2-D"):
        probmap_from_gray(np.zeros((10, 10, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="at least one sample"):
        mean_metrics([])
    with pytest.raises(ValueError, match="sample 1 lacks the metric"):
        mean_metrics([{"Rsu": 1.0, "Ras": 0.0, "Rda": 1.0, "Rmi": 1.0}, {"Rsu": 1.0}])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        probability_centres(np.full((10, 10), 2.0))
