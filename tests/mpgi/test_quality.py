"""Quality checks: contradictions of the rule facts, duplicates, length outliers; verdicts drive exports."""

from __future__ import annotations

import json
import re

from rs_vlm_app.mpgi import BuildConfig, build_dataset, export_dataset
from rs_vlm_app.mpgi.config import CaptionSlot
from rs_vlm_app.mpgi.quality import contradictions, jaccard, length_problem, normalised
from tests.mpgi import data
from tests.mpgi.fakechat import user_text
from tests.mpgi.helpers import query, rsvlm

VOCABULARY = {"airplane", "storage tank", "ship", "small vehicle", "vehicle"}


def test_counts_and_classes_are_checked_against_the_annotations():
    counts = {"airplane": 3, "storage tank": 1}
    assert contradictions("Three airplanes are parked near one storage tank.", counts, VOCABULARY) == []
    assert contradictions("Three large white airplanes and a single storage tank.", counts, VOCABULARY) == []
    assert contradictions("Five airplanes are parked near a storage tank.", counts, VOCABULARY) == [
        "says 5 airplanes, the annotations count 3"]
    assert contradictions("2 storage tanks stand by the runway.", counts, VOCABULARY) == [
        "says 2 storage tanks, the annotations count 1"]
    assert contradictions("Two ships sail past the airplanes.", counts, VOCABULARY) == [
        "mentions ships, which the annotations do not contain"]
    assert contradictions("There are no ships, and without any vehicle nearby.", counts, VOCABULARY) == []
    assert contradictions("Two rows of airplanes line the apron.", counts, VOCABULARY) == []  # counts rows
    assert contradictions("Airplanes and a tank farm.", counts, VOCABULARY) == []  # no number given


def test_a_longer_class_name_is_not_read_as_a_shorter_one():
    counts = {"small vehicle": 4}
    assert contradictions("Four small vehicles are parked on the street.", counts, VOCABULARY) == []
    assert contradictions("Six small vehicles are parked on the street.", counts, VOCABULARY) == [
        "says 6 small vehicles, the annotations count 4"]


def test_length_and_similarity_helpers():
    slot = CaptionSlot("short", 10)
    assert length_problem("one two three four five six seven eight nine ten", slot, 0.4, 2.5) is None
    assert length_problem("Tank.", slot, 0.4, 2.5) == "1 words; a short caption should have about 10 (4-25)"
    assert normalised("A harbour, with  SHIPS!") == "a harbour with ships"
    assert jaccard("a b c d", "a b c e") == 3 / 5


CAPTIONS = {
    ("a.png", "short"): "Two airplanes stand on the apron.",
    ("a.png", "long"): "Seven airplanes stand on a wide apron next to the terminal building and a road.",
    ("b.png", "short"): "Two airplanes stand on the apron!",
    ("b.png", "long"): "Tank.",
    ("c.png", "short"): "A ship near a storage tank on the shore.",
    ("c.png", "long"): "One ship is moored at a quiet pier beside calm dark water and a few low sheds.",
}
FACTS = {"two airplanes": "a.png", "one storage tank": "b.png", "one ship": "c.png"}


def responder(body):
    text = user_text(body)
    match = re.search(r"Write (\w+) caption", text)
    if not match:
        return "A description of the image."
    image = next(name for phrase, name in FACTS.items() if f"The image contains {phrase}." in text)
    return CAPTIONS[(image, match.group(1))]


def quality_dataset(tmp_path, fake_server):
    fake_server.responder = responder
    coco = data.coco_dataset(tmp_path / "dior", [
        {"file_name": "a.png", "size": (100, 100), "boxes": [(1, 5, 5, 10, 10), (1, 60, 60, 10, 10)]},
        {"file_name": "b.png", "size": (100, 100), "boxes": [(2, 40, 40, 30, 30)]},
        {"file_name": "c.png", "size": (100, 100), "boxes": [(3, 10, 70, 30, 10)]},
    ], {1: "airplane", 2: "storage tank", 3: "ship"})
    config = data.build_config(
        tmp_path / "out", [{"type": "coco", "name": "dior", "annotations": str(coco), "images": str(coco.parent / "images")}],
        data.openai_backend(fake_server.base_url, "fake", concurrency=1), perspectives=(),
        captions=[{"name": "short", "words": 6}, {"name": "long", "words": 20}],
        quality={"contradictions": "drop", "duplicates": "drop", "length": "flag"})
    return BuildConfig.from_dict(config)


def test_quality_verdicts_reach_the_manifest_the_status_and_the_exports(tmp_path, fake_server):
    config = quality_dataset(tmp_path, fake_server)
    summary = build_dataset(config)
    assert summary.verdicts == {"keep": 2, "flag": 1, "drop": 3}
    rows = query(config.manifest_path, "SELECT i.key, o.stage, o.verdict, o.reasons FROM outputs o JOIN images i "
                                       "ON i.id = o.image_id WHERE o.stage LIKE 'caption:%' ORDER BY i.key, o.stage")
    verdicts = {(key, stage): (verdict, [(r["check"], r["detail"]) for r in json.loads(reasons)])
                for key, stage, verdict, reasons in rows}
    assert verdicts == {
        ("dior/a.png", "caption:long"): ("drop", [("contradiction", "says 7 airplanes, the annotations count 2")]),
        ("dior/a.png", "caption:short"): ("keep", []),
        ("dior/b.png", "caption:long"): ("flag", [("length", "1 words; a long caption should have about 20 (8-50)")]),
        ("dior/b.png", "caption:short"): ("drop", [
            ("contradiction", "mentions airplanes, which the annotations do not contain"),
            ("duplicate", "same text as dior/a.png caption:short")]),
        ("dior/c.png", "caption:long"): ("keep", []),
        ("dior/c.png", "caption:short"): ("drop", [
            ("contradiction", "mentions storage tanks, which the annotations do not contain")]),
    }
    status = rsvlm("dataset", "status", str(config.output))
    assert "captions: 2 keep, 1 flag, 3 drop (reasons: contradiction 3, duplicate 1, length 1)" in status.stdout

    export_dataset(config.output, "csv")
    rows = (config.output / "export" / "captions.csv").read_text().splitlines()[1:]
    assert [r.split(",", 1)[1] for r in rows] == [
        CAPTIONS[("a.png", "short")], CAPTIONS[("b.png", "long")], CAPTIONS[("c.png", "long")]]
    export_dataset(config.output, "csv", include_flagged=False, output=tmp_path / "strict.csv")
    assert len((tmp_path / "strict.csv").read_text().splitlines()) == 1 + 2
    tsv = rsvlm("dataset", "export", str(config.output), "--format", "csv", "--output", str(tmp_path / "rel.tsv"),
                "--relative-to", str(tmp_path), "--csv-separator", "tab", "--exclude-flagged")
    assert tsv.returncode == 0, tsv.stderr
    assert tsv.stdout.strip() == f"{tmp_path / 'rel.tsv'}: 2 captions of 2 images"
    assert (tmp_path / "rel.tsv").read_text().splitlines()[:2] == [
        "filepath\tcaption", f"dior/images/a.png\t{CAPTIONS[('a.png', 'short')]}"]
    export_dataset(config.output, "jsonl")
    lines = [json.loads(x) for x in (config.output / "export" / "captions.jsonl").read_text().splitlines()]
    a = lines[0]["captions"]
    assert [(c["slot"], c["verdict"], c["exported"]) for c in a] == [("short", "keep", True), ("long", "drop", False)]


def test_near_duplicates_within_an_image(tmp_path, fake_server):
    fake_server.responder = lambda body: ("A harbor with two ships and many cranes." if "Write long caption" in user_text(body)
                                          else "A harbor with two ships and cranes.")
    config = data.build_config(tmp_path / "out", [{"type": "folder", "root": str(
        data.class_folders(tmp_path / "AID", {"harbor": 1}))}], data.openai_backend(fake_server.base_url, "fake"),
        perspectives=(), quality={"duplicates": "flag", "near_duplicate": 0.8, "length": "off"})
    summary = build_dataset(BuildConfig.from_dict(config))
    assert summary.verdicts == {"keep": 1, "flag": 1}
    reasons = query(tmp_path / "out" / "manifest.sqlite", "SELECT reasons FROM outputs WHERE verdict = 'flag'")[0][0]
    assert json.loads(reasons) == [{"check": "near_duplicate", "action": "flag",
                                    "detail": "88% word overlap with this image's caption:short"}]


def test_exports_never_replace_unrelated_files(tmp_path, fake_server):
    import pytest

    from rs_vlm_app.errors import UserError

    config = quality_dataset(tmp_path, fake_server)
    build_dataset(config)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match="exists and holds other files"):
        export_dataset(config.output, "wds", output=precious)
    assert (precious / "thesis.tex").read_text() == "years of work"
    with pytest.raises(UserError, match="is a folder; give a file name"):
        export_dataset(config.output, "csv", output=precious)
    first = export_dataset(config.output, "wds", output=tmp_path / "wds", samples_per_shard=1)
    again = export_dataset(config.output, "wds", output=tmp_path / "wds", samples_per_shard=2)  # replaces its own
    assert (first.files, again.files) == (3, 2)
    assert sorted(p.name for p in (tmp_path / "wds").iterdir()) == ["shard-000000.tar", "shard-000001.tar"]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
