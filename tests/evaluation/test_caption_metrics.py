"""Caption metrics on hand-made cases with known answers, the file formats and their errors."""

import json

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.evaluation.caption_metrics import (
    caption_metrics,
    evaluate_captions,
    java_available,
    python_tokenize,
    read_predictions,
    read_references,
)

needs_java = pytest.mark.skipif(not java_available(), reason="METEOR and the PTB tokenizer need Java")


def test_identical_captions_score_perfectly():
    """Two images, each predicted word for word: BLEU 1, ROUGE-L 1, CIDEr-D 10, METEOR 1."""
    refs = {"a": ["red roofs near a river"], "b": ["a big white plane parked"]}
    scores = caption_metrics({"a": "Red roofs near a river.", "b": "a big white plane parked"}, refs, spice=False)
    for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L"):
        assert scores.corpus[name] == pytest.approx(1.0, abs=1e-6)
    assert scores.corpus["CIDEr"] == pytest.approx(10.0, abs=1e-6)
    if java_available():
        assert scores.corpus["METEOR"] == pytest.approx(1.0, abs=1e-6)
    assert scores.skipped["SPICE"] == "not asked for"


def test_half_matching_caption():
    """'a b c d' against 'a b e f': unigram precision 2/4 (BLEU-1 0.5, no brevity penalty), bigram
    precision 1/3 (BLEU-2 = sqrt(0.5 * 1/3)), LCS 2 of 4 words (ROUGE-L 0.5)."""
    scores = caption_metrics({"x": "a b c d", "y": "lake"}, {"x": ["a b e f"], "y": ["lake"]}, spice=False)
    assert scores.per_image["x"]["BLEU-1"] == pytest.approx(0.5, abs=1e-6)
    assert scores.per_image["x"]["BLEU-2"] == pytest.approx((0.5 / 3) ** 0.5, abs=1e-6)
    assert scores.per_image["x"]["ROUGE-L"] == pytest.approx(0.5, abs=1e-6)
    assert scores.per_image["y"]["ROUGE-L"] == pytest.approx(1.0)
    assert scores.corpus["ROUGE-L"] == pytest.approx(0.75)


def test_best_reference_counts_for_rouge():
    scores = caption_metrics({"x": "many trees"}, {"x": ["a lake", "many trees"]}, spice=False)
    assert scores.per_image["x"]["ROUGE-L"] == pytest.approx(1.0)


@needs_java
def test_meteor_prefers_the_closer_caption():
    refs = {"x": ["many green trees are around a white building"]}
    close = caption_metrics({"x": "many green trees around a white building"}, refs, spice=False)
    far = caption_metrics({"x": "a harbor with boats"}, refs, spice=False)
    assert 0.0 <= far.corpus["METEOR"] < close.corpus["METEOR"] <= 1.0


def test_spice_is_skipped_with_a_reason_when_it_cannot_run():
    scores = caption_metrics({"x": "a lake"}, {"x": ["a lake"]})
    if "SPICE" in scores.corpus:
        pytest.skip("SPICE can run on this machine")
    assert "SPICE" in scores.skipped and "\n" not in scores.skipped["SPICE"]


def test_python_tokenizer_fallback():
    assert python_tokenize("Many trees, near a LAKE's shore.") == "many trees near a lake's shore"


def test_file_formats(tmp_path):
    (tmp_path / "pred.json").write_text(json.dumps({"1": "a lake", "2": "a road"}))
    (tmp_path / "pred_coco.json").write_text(json.dumps([{"image_id": 1, "caption": "a lake"},
                                                         {"image_id": 2, "caption": "a road"}]))
    (tmp_path / "refs.json").write_text(json.dumps({"1": ["a lake", "water"], "2": "a road"}))
    (tmp_path / "refs_coco.json").write_text(json.dumps({"annotations": [
        {"image_id": 1, "caption": "a lake"}, {"image_id": 1, "caption": "water"},
        {"image_id": 2, "caption": "a road"}]}))
    (tmp_path / "refs.csv").write_text("filepath,caption\n1,a lake\n1,water\n2,a road\n")
    (tmp_path / "pred.tsv").write_text("image_id\tcaption\n1\ta lake\n2\ta road\n")
    assert read_predictions(tmp_path / "pred.json") == read_predictions(tmp_path / "pred_coco.json") \
        == read_predictions(tmp_path / "pred.tsv") == {"1": "a lake", "2": "a road"}
    expected = {"1": ["a lake", "water"], "2": ["a road"]}
    for name in ("refs.json", "refs_coco.json", "refs.csv"):
        assert read_references(tmp_path / name) == expected


@pytest.mark.parametrize(("name", "text", "message"), [
    ("p.csv", "image,text\n1,a lake\n", "missing column\\(s\\) caption in the header \\(found: image, text\\)"),
    ("p.csv", "caption\na lake\n", "missing column\\(s\\) image_id/filepath/image/filename"),
    ("p.csv", "", "missing column\\(s\\) caption, image_id"),
    ("p.csv", "image_id,caption\n1,a lake\n1,a road\n", "image '1' has more than one predicted caption"),
    ("p.csv", "image_id,caption\n1,\n", "image '1' has an empty caption"),
    ("p.json", "{", "not valid JSON"),
    ("p.json", "[1, 2]", "record 0 is not an object with image_id and caption"),
    ("p.json", "{}", "no captions in the file"),
    ("p.xml", "<a/>", "unknown caption file type"),
])
def test_bad_prediction_files(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        read_predictions(path)
    assert str(info.value).startswith(str(path))


def test_evaluate_writes_json_and_csv(tmp_path):
    (tmp_path / "pred.json").write_text(json.dumps({"a": "a b c d", "b": "lake"}))
    (tmp_path / "refs.csv").write_text("image_id,caption\na,a b e f\nb,lake\nb,a lake\n")
    scores = evaluate_captions(tmp_path / "pred.json", tmp_path / "refs.csv", tmp_path / "out", spice=False)
    report = json.loads((tmp_path / "out" / "caption_metrics.json").read_text())
    assert report["images"] == 2 and report["references_per_image"] == 1.5
    assert report["metrics"]["ROUGE-L"] == pytest.approx(scores.corpus["ROUGE-L"])
    rows = (tmp_path / "out" / "caption_metrics.csv").read_text().splitlines()
    assert rows[0] == "metric,value" and rows[1].startswith("BLEU-1,")
    per_image = (tmp_path / "out" / "caption_metrics_per_image.csv").read_text().splitlines()
    assert per_image[0].startswith("image_id,prediction,BLEU-1") and per_image[1].startswith("a,a b c d,0.5")


def test_ids_must_match(tmp_path):
    (tmp_path / "pred.json").write_text(json.dumps({"a": "x", "c": "y"}))
    (tmp_path / "refs.json").write_text(json.dumps({"a": ["x"], "b": ["y"]}))
    with pytest.raises(UserError, match="1 predicted image\\(s\\) have no reference captions .* \\(first: 'c'\\)"):
        evaluate_captions(tmp_path / "pred.json", tmp_path / "refs.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()
