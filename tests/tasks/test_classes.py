"""Class lists and prompt templates: the shipped lists, the file format and its errors."""

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.tasks.classes import humanize, label_key, load_classes, load_templates, parse_classes


@pytest.mark.parametrize(("name", "count", "first", "last"), [
    ("aid", 30, "Airport", "Viaduct"),
    ("resisc45", 45, "airplane", "wetland"),
    ("eurosat", 10, "AnnualCrop", "SeaLake"),
])
def test_builtin_lists(name, count, first, last):
    classes = load_classes(name)
    assert len(classes) == count == len(set(map(label_key, classes.labels)))
    assert (classes.labels[0], classes.labels[-1]) == (first, last)
    assert all(p and p == p.lower() for p in classes.prompt_names)


def test_builtin_prompt_words():
    aid = load_classes("AID")
    assert aid.prompt_names[aid.index_of("DenseResidential")] == "dense residential area"
    eurosat = load_classes("eurosat")
    assert eurosat.prompt_names[eurosat.index_of("SeaLake")] == "sea or lake"
    resisc = load_classes("resisc45")
    assert resisc.prompt_names[resisc.index_of("Ground Track Field")] == "ground track field"


def test_file_format(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my classes\n\nSolarFarm\nwind_turbines = wind turbines in a field\n  Open-Pit Mine \n")
    classes = load_classes(path)
    assert classes.labels == ("SolarFarm", "wind_turbines", "Open-Pit Mine")
    assert classes.prompt_names == ("solar farm", "wind turbines in a field", "open pit mine")
    assert classes.index_of("solar_farm") == 0 and classes.index_of("OPEN_PIT_MINE") == 2
    assert classes.index_of("lake") is None


def test_humanize():
    assert humanize("DenseResidential") == "dense residential"
    assert humanize("sea_ice") == "sea ice"
    assert humanize("RGB2Grey") == "rgb2 grey"


@pytest.mark.parametrize(("text", "message"), [
    ("", "the class list is empty"),
    ("# only a comment\n\n", "the class list is empty"),
    ("lake\n", "at least two classes"),
    ("lake\nforest\nLake\n", "line 3: duplicate class name 'Lake' \\(same as line 1\\)"),
    ("dense_residential\nDenseResidential\n", "duplicate class name"),
    ("lake\n = water\n", "line 2: expected 'LABEL' or 'LABEL = prompt words'"),
    ("lake =\nforest\n", "line 1: expected"),
    ("lake\n---\n", "has no letters or digits"),
])
def test_bad_class_lists(tmp_path, text, message):
    path = tmp_path / "classes.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        load_classes(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_missing_class_file_names_the_builtins(tmp_path):
    with pytest.raises(UserError, match="give one of aid, resisc45, eurosat"):
        load_classes(tmp_path / "nope.txt")


def test_templates(tmp_path):
    templates = load_templates()
    assert len(templates) >= 10 and all(t.count("{}") == 1 for t in templates)
    path = tmp_path / "t.txt"
    path.write_text("a photo of {}.\n# comment\n\na photo of {}.\n{} from space\n")
    assert load_templates(path) == ("a photo of {}.", "{} from space")
    path.write_text("a photo of a thing\n")
    with pytest.raises(UserError, match="line 1: a template needs exactly one"):
        load_templates(path)
    path.write_text("# nothing\n")
    with pytest.raises(UserError, match="no templates"):
        load_templates(path)


def test_parse_reports_its_source():
    with pytest.raises(UserError, match="^inline: "):
        parse_classes("a\na\n", source="inline")
