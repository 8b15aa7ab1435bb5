"""`rsvlm eval selo --compat selo` against the published pipeline run on ../shared/selo/parity."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from rs_vlm_app.cli import main
from rs_vlm_app.geo.grid import SELO_GRID, build_windows
from tests.conftest import SELO

PARITY = SELO / "parity"
METRICS = ("Rsu", "Rda", "Ras", "Rmi")


def reference_tiles() -> list[dict]:
    with open(PARITY / "reference_tiles.csv", newline="") as f:
        return list(csv.DictReader(f))


def reference_metrics() -> list[dict[str, float]]:
    """Per-sample metrics of reference_metrics.json, with the arrows and ranges taken off the names."""
    raw = json.loads((PARITY / "reference_metrics.json").read_text())["per_sample"]
    return [{name.split()[1]: value for name, value in sample.items()} for sample in raw]


@pytest.fixture(scope="module")
def airslt_folder(tmp_path_factory):
    """The parity scene and its annotations in the AIR-SLT layout (imgs/, annotations/anno.json)."""
    folder = tmp_path_factory.mktemp("airslt")
    (folder / "imgs").mkdir()
    (folder / "annotations").mkdir()
    (folder / "imgs" / "visible_scene.png").symlink_to(PARITY / "visible_scene.png")
    shutil.copy(PARITY / "visible_anno.json", folder / "annotations" / "anno.json")
    return folder


def test_selo_grid_cuts_exactly_the_reference_windows():
    import cv2

    height, width = cv2.imread(str(PARITY / "visible_scene.png")).shape[:2]
    ours = {tuple(int(v) for v in w[:4]) for w in build_windows(SELO_GRID, height, width)}
    theirs = {(int(r["row0"]), int(r["row1"]), int(r["col0"]), int(r["col1"]))
              for r in reference_tiles() if r["sample"] == "0"}
    assert len(theirs) == 121
    assert ours == theirs


def test_eval_selo_compat_matches_the_reference_metrics(airslt_folder, tmp_path, capsys):
    out = tmp_path / "metrics"
    code = main(["eval", "selo", "--data", str(airslt_folder), "--compat", "selo",
                 "--model-config", str(PARITY / "tiny_clip.json"), "--checkpoint", str(PARITY / "tiny_clip.pt"),
                 "--device", "cpu", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "selo_metrics.json").read_text())
    assert report["mode"] == "selo"
    assert [s["caption"] for s in report["per_sample"]] == [
        a["caption"].strip() for a in json.loads((PARITY / "visible_anno.json").read_text())]
    for ours, theirs in zip(report["per_sample"], reference_metrics(), strict=True):
        for name in METRICS:
            assert ours[name] == pytest.approx(theirs[name], abs=0.02), name
    with open(out / "selo_metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["index"] for r in rows] == ["0", "1", "mean"]
    assert float(rows[-1]["Rmi"]) == pytest.approx(np.mean([m["Rmi"] for m in reference_metrics()]), abs=0.02)
    printed = capsys.readouterr().out
    assert "mean" in printed and "Rmi" in printed


def test_eval_selo_missing_image_is_one_line(airslt_folder, tmp_path, capsys):
    broken = tmp_path / "broken"
    (broken / "annotations").mkdir(parents=True)
    (broken / "imgs").mkdir()
    shutil.copy(airslt_folder / "annotations" / "anno.json", broken / "annotations" / "anno.json")
    code = main(["eval", "selo", "--data", str(broken),
                 "--model-config", str(PARITY / "tiny_clip.json"), "--checkpoint", str(PARITY / "tiny_clip.pt"),
                 "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert "imgs/visible_scene.png, which does not exist" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
