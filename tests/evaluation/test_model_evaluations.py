"""`eval zeroshot` and `eval retrieval` on hand-made data with a colour encoder: exact known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rs_vlm_app.errors import UserError
from rs_vlm_app.evaluation.retrieval_eval import evaluate_retrieval
from rs_vlm_app.evaluation.zeroshot_eval import evaluate_zeroshot
from tests.colour_encoder import ColourEncoder

RGB = {"red": (200, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 200)}


def image(path: Path, colour: str, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, RGB[colour]).save(path)
    return path


@pytest.fixture
def class_folders(tmp_path) -> Path:
    """red: two red images and one green one; green: two green; blue: two blue (one a TIFF)."""
    root = tmp_path / "scenes"
    image(root / "red" / "r1.png", "red")
    image(root / "red" / "sub" / "r2.jpg", "red")
    image(root / "red" / "g_wrong.png", "green")
    image(root / "green" / "g1.png", "green")
    image(root / "green" / "g2.bmp", "green")
    image(root / "blue" / "b1.png", "blue")
    image(root / "blue" / "b2.tif", "blue")
    (root / "blue" / "notes.txt").write_text("not an image")
    return root


def test_zeroshot_known_answer(tmp_path, class_folders):
    out = tmp_path / "out"
    report = evaluate_zeroshot(class_folders, ColourEncoder(), out)
    assert report["classes"] == ["blue", "green", "red"] and report["images"] == 7
    assert report["top1"] == pytest.approx(100 * 6 / 7)
    assert report["top5"] is None  # only three classes
    assert report["per_class"]["red"] == {"images": 3, "accuracy": pytest.approx(100 * 2 / 3)}
    assert report["mean_per_class"] == pytest.approx((200 / 3 + 200) / 3)
    assert report["confusion"] == [[2, 0, 0], [0, 2, 0], [0, 1, 2]]
    assert json.loads((out / "zeroshot.json").read_text())["confusion"] == report["confusion"]
    assert (out / "zeroshot.csv").read_text().splitlines() == [
        "class,images,accuracy", "blue,2,100", "green,2,100", "red,3,66.6667"]
    assert (out / "confusion.csv").read_text().splitlines()[3] == "red,0,1,2"
    assert Image.open(out / "confusion.png").size[0] > 100


def test_zeroshot_against_a_class_list(tmp_path, class_folders):
    classes = tmp_path / "colours.txt"
    classes.write_text("Red = red roofs\nGreen = green trees\nBlue = blue water\nGrey = concrete\n")
    report = evaluate_zeroshot(class_folders, ColourEncoder(), tmp_path / "out", classes=classes)
    assert report["classes"] == ["Red", "Green", "Blue", "Grey"] and report["per_class"]["Grey"]["images"] == 0
    assert report["top1"] == pytest.approx(100 * 6 / 7)
    assert np.isnan(report["per_class"]["Grey"]["accuracy"])
    saved = json.loads((tmp_path / "out" / "zeroshot.json").read_text())
    assert saved["per_class"]["Grey"]["accuracy"] is None  # NaN is written as null


def test_zeroshot_folder_must_match_the_class_list(tmp_path, class_folders):
    with pytest.raises(UserError, match="sub-folder 'blue' matches no class of eurosat"):
        evaluate_zeroshot(class_folders, ColourEncoder(), tmp_path / "out", classes="eurosat")
    assert not (tmp_path / "out").exists()


def test_zeroshot_folder_without_images(tmp_path):
    (tmp_path / "data" / "lake").mkdir(parents=True)
    (tmp_path / "data" / "forest").mkdir()
    (tmp_path / "data" / "forest" / "readme.md").write_text("x")
    with pytest.raises(UserError, match="no images .* in its 2 class folder"):
        evaluate_zeroshot(tmp_path / "data", ColourEncoder(), tmp_path / "out")
    with pytest.raises(UserError, match="has no sub-folders"):
        evaluate_zeroshot(tmp_path / "data" / "lake", ColourEncoder(), tmp_path / "out")


def test_unreadable_image_is_named_and_nothing_is_written(tmp_path, class_folders):
    (class_folders / "green" / "broken.jpg").write_bytes(b"this is no JPEG")
    with pytest.raises(UserError, match="broken.jpg: cannot read this image"):
        evaluate_zeroshot(class_folders, ColourEncoder(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def captions_csv(tmp_path) -> Path:
    folder = tmp_path / "rsicd"
    image(folder / "images" / "r.png", "red")
    image(folder / "images" / "g.png", "green")
    image(folder / "images" / "b.png", "blue")
    path = folder / "captions.csv"
    path.write_text('filepath,caption\nimages/r.png,red roof\nimages/g.png,green park\nimages/r.png,"a red square"\n'
                    "images/b.png,blue lake\nimages/b.png,red boat\n")
    return path


def test_retrieval_known_answer(tmp_path, captions_csv):
    """Cosines are exactly 0 or 1 and ties count against the query. Text->image: only "red boat"
    misses at 1 (its image b scores 0, like g; r scores 1): R@1 4/5. Image->text: r's best caption
    ties with "red boat" (b's): R@1 2/3. Everything is found within 5."""
    report = evaluate_retrieval(captions_csv, ColourEncoder(), tmp_path / "out")
    assert report["images"] == 3 and report["captions"] == 5
    assert report["text_to_image"] == {"R@1": pytest.approx(80.0), "R@5": 100.0, "R@10": 100.0}
    assert report["image_to_text"] == {"R@1": pytest.approx(200 / 3), "R@5": 100.0, "R@10": 100.0}
    assert report["mean_recall"] == pytest.approx((200 / 3 + 80 + 400) / 6)
    rows = (tmp_path / "out" / "retrieval.csv").read_text().splitlines()
    assert rows[0] == "direction,R@1,R@5,R@10,mean_recall" and rows[2].startswith("text_to_image,80,100,100")
    assert json.loads((tmp_path / "out" / "retrieval.json").read_text())["mean_recall"] == report["mean_recall"]


def test_retrieval_reads_open_clip_tsv(tmp_path, captions_csv):
    tsv = captions_csv.with_suffix(".tsv")
    tsv.write_text("filepath\ttitle\nimages/r.png\tred roof\nimages/g.png\tgreen park\n")
    report = evaluate_retrieval(tsv, ColourEncoder(), tmp_path / "out")
    assert report["images"] == 2 and report["mean_recall"] == 100.0


@pytest.mark.parametrize(("text", "message"), [
    ("path,caption\nimages/r.png,red\n", "missing column\\(s\\) filepath in the header \\(found: path, caption\\)"),
    ("filepath,label\nimages/r.png,red\n", "missing column\\(s\\) caption"),
    ("filepath,caption\n", "no rows below the header"),
    ("filepath,caption\nimages/x.png,red\n", "image .*x.png listed in the CSV does not exist"),
    ("filepath,caption\nimages/r.png,\n", "line 2 has an empty caption"),
])
def test_bad_retrieval_csv(tmp_path, captions_csv, text, message):
    captions_csv.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        evaluate_retrieval(captions_csv, ColourEncoder(), tmp_path / "out")
    assert str(info.value).startswith(str(captions_csv)) and not (tmp_path / "out").exists()
