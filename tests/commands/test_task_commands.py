"""The caption, classify, search and eval commands: bad input gives one line, exit 2, no outputs;
a good run prints its table."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from rs_vlm_app.cli import main
from tests.geo.rasters import NAIP


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def model_args(fixture: dict, prefix: str = "") -> list[str]:
    return [f"--{prefix}checkpoint", str(fixture["checkpoint"]), f"--{prefix}model-config", str(fixture["config"])]


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("rsvlm: error:")]
    assert code == 2 and len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in err


def test_caption_refuses_a_clip_model(tmp_path, capsys, tiny_clip):
    code, _, err = run_cli(capsys, "caption", NAIP, "-o", tmp_path / "c.gpkg", *model_args(tiny_clip))
    assert_one_line_error(code, err, "is a CLIP model", "needs a CoCa caption model")
    assert not list(tmp_path.iterdir())


def test_caption_refuses_a_coca_as_its_clip(tmp_path, capsys, tiny_coca):
    code, _, err = run_cli(capsys, "caption", NAIP, "-o", tmp_path / "c.gpkg", *model_args(tiny_coca),
                           *model_args(tiny_coca, "clip-"))
    assert_one_line_error(code, err, "is a CoCa caption model", "needs a CLIP model")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", [
    ["classify", NAIP, "--classes", "aid", "-o", "OUT"],
    ["search", NAIP, "a lake", "-o", "OUT/x.gpkg"],
])
def test_clip_commands_refuse_a_coca(tmp_path, capsys, tiny_coca, command):
    argv = [str(a).replace("OUT", str(tmp_path / "out")) for a in command]
    code, _, err = run_cli(capsys, *argv, *model_args(tiny_coca))
    assert_one_line_error(code, err, "is a CoCa caption model", "needs a CLIP model")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("text", "fragment"), [("", "the class list is empty"),
                                                 ("lake\nforest\nLake\n", "duplicate class name 'Lake'")])
def test_classify_bad_class_file(tmp_path, capsys, tiny_clip, text, fragment):
    classes = tmp_path / "classes.txt"
    classes.write_text(text)
    code, _, err = run_cli(capsys, "classify", NAIP, "--classes", classes, "-o", tmp_path / "out",
                           *model_args(tiny_clip))
    assert_one_line_error(code, err, str(classes), fragment)
    assert not (tmp_path / "out").exists()


def test_eval_zeroshot_folder_without_images(tmp_path, capsys, tiny_clip):
    (tmp_path / "data" / "lake").mkdir(parents=True)
    (tmp_path / "data" / "forest").mkdir()
    code, _, err = run_cli(capsys, "eval", "zeroshot", "--data", tmp_path / "data", "-o", tmp_path / "out",
                           *model_args(tiny_clip))
    assert_one_line_error(code, err, "no images")
    assert not (tmp_path / "out").exists()


def test_eval_zeroshot_unreadable_image(tmp_path, capsys, tiny_clip):
    for name in ("lake", "forest"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (20, 20), (10, 20, 30)).save(tmp_path / "data" / name / "ok.png")
    (tmp_path / "data" / "lake" / "bad.png").write_bytes(b"\x89PNG but not really")
    code, _, err = run_cli(capsys, "eval", "zeroshot", "--data", tmp_path / "data", "-o", tmp_path / "out",
                           *model_args(tiny_clip))
    assert_one_line_error(code, err, "bad.png", "cannot read this image")
    assert not [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]


def test_eval_retrieval_csv_missing_columns(tmp_path, capsys, tiny_clip):
    csv = tmp_path / "captions.csv"
    csv.write_text("image_path;caption\nx.png;a lake\n")
    code, _, err = run_cli(capsys, "eval", "retrieval", "--data", csv, "-o", tmp_path / "out", *model_args(tiny_clip))
    assert_one_line_error(code, err, str(csv), "missing column(s)")
    assert not (tmp_path / "out").exists()


def test_eval_zeroshot_prints_a_table(tmp_path, capsys, tiny_clip):
    for name, colour in (("Lake", (0, 0, 200)), ("Forest", (0, 150, 0))):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), colour).save(tmp_path / "data" / name / f"{i}.png")
    code, out, err = run_cli(capsys, "eval", "zeroshot", "--data", tmp_path / "data", "-o", tmp_path / "out",
                             *model_args(tiny_clip), "--device", "cpu")
    assert code == 0, err
    assert "class" in out and "Forest" in out and "top-1" in out and "mean per class" in out
    report = json.loads((tmp_path / "out" / "zeroshot.json").read_text())
    assert report["images"] == 4 and sum(map(sum, report["confusion"])) == 4


def test_eval_caption_prints_a_table(tmp_path, capsys):
    (tmp_path / "pred.json").write_text(json.dumps({"1": "many trees near a lake", "2": "a road"}))
    (tmp_path / "refs.csv").write_text("image_id,caption\n1,many trees near a lake\n2,a straight road\n2,road\n")
    code, out, err = run_cli(capsys, "eval", "caption", "--pred", tmp_path / "pred.json", "--refs",
                             tmp_path / "refs.csv", "-o", tmp_path / "out", "--no-spice")
    assert code == 0, err
    assert "BLEU-4" in out and "CIDEr" in out and "ROUGE-L" in out and "note: SPICE: not asked for" in out
    assert (tmp_path / "out" / "caption_metrics.csv").is_file()


def test_eval_caption_missing_prediction_column(tmp_path, capsys):
    (tmp_path / "pred.csv").write_text("image_id,text\n1,a lake\n")
    (tmp_path / "refs.json").write_text(json.dumps({"1": ["a lake"]}))
    code, _, err = run_cli(capsys, "eval", "caption", "--pred", tmp_path / "pred.csv", "--refs",
                           tmp_path / "refs.json", "-o", tmp_path / "out")
    assert_one_line_error(code, err, "pred.csv", "missing column(s) caption")
    assert not (tmp_path / "out").exists()


def test_search_puts_the_query_last(tmp_path, capsys, tiny_clip):
    code, _, err = run_cli(capsys, "search", "a lake", NAIP, "-o", tmp_path / "x.gpkg", *model_args(tiny_clip))
    assert_one_line_error(code, err, "is a file; put the text query last")
