"""Prompts as data: the shipped set loads; placeholder mistakes are one-line errors at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.config import BuildConfig
from rs_vlm_app.mpgi.plan import load_plan
from rs_vlm_app.mpgi.prompts import builtin_prompts_dir, load_prompt
from tests.mpgi import data


def test_shipped_prompts_load_and_render():
    folder = builtin_prompts_dir()
    relay = load_prompt(folder / "relay.yaml", "relay")
    assert relay.image and "facts" in relay.placeholders
    system, user = relay.render({"facts": "- The image contains one ship.", "metadata": "- none",
                                 "scene_class": "harbor", "image_size": "10 x 10 pixels"})
    assert "- The image contains one ship." in user and "{" not in user
    assert system.startswith("You are an expert")
    for path in sorted((folder / "perspectives").glob("*.yaml")):
        prompt = load_prompt(path, "perspective")
        assert prompt.name == path.stem and prompt.image
    integration = load_prompt(folder / "integration.yaml", "integration")
    assert not integration.image
    assert {"descriptions", "length_words"} <= set(integration.placeholders)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("kind, text, message", [
    ("relay", "placeholders: [metadata]\nuser: 'Describe. {metadata}'\n",
     "a relay prompt must use the placeholder {facts} (the rule facts it relays to the model)"),
    ("perspective", "placeholders: []\nuser: 'Describe {scene}.'\n", "unknown placeholder {scene}; a perspective prompt can use"),
    ("perspective", "placeholders: [facts]\nuser: 'Describe.'\n", "declares the placeholder {facts} but its text never uses it"),
    ("perspective", "user: 'Describe {facts}.'\n", "uses the placeholder {facts} but does not declare it"),
    ("integration", "placeholders: [descriptions]\nuser: '{descriptions}'\n", "must use the placeholder {length_words}"),
    ("perspective", "kind: relay\nplaceholders: [facts]\nuser: '{facts}'\n", "this is a 'relay' prompt, but it is used as the perspective prompt"),
    ("perspective", "user: ''\n", "'user' (the prompt text) is missing or empty"),
    ("perspective", "user: x\ncolour: red\n", "unknown key 'colour'"),
])
def test_prompt_mistakes(tmp_path, kind, text, message):
    path = write(tmp_path / "p.yaml", text)
    with pytest.raises(UserError) as caught:
        load_prompt(path, kind)
    assert str(caught.value) == f"{path}: " + message or message in str(caught.value)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_literal_braces_are_kept(tmp_path):
    path = write(tmp_path / "p.yaml", "placeholders: [facts]\nuser: 'Answer as {{\"caption\": ...}} using {facts}'\n")
    prompt = load_prompt(path, "perspective")
    assert prompt.render({"facts": "F {x}"})[1] == 'Answer as {"caption": ...} using F {x}'


def test_braces_that_are_not_placeholders_stay_as_they_are(tmp_path):
    text = "Lone { and } braces, {{doubled}}, {0}, {a.b} and {facts!r} stay; {facts} is filled."
    path = write(tmp_path / "p.yaml", f"placeholders: [facts]\nuser: '{text}'\n")
    user = load_prompt(path, "perspective").render({"facts": "F {0} {{x}}"})[1]
    assert user == "Lone { and } braces, {doubled}, {0}, {a.b} and {facts!r} stay; F {0} {{x}} is filled."


def test_plan_names_stages_and_catches_a_bad_perspective_file(tmp_path):
    config = data.build_config(tmp_path / "out", [{"type": "folder", "root": str(tmp_path)}],
                               data.openai_backend("http://127.0.0.1:9/v1", "m"), perspectives=("scene", "spatial"))
    plan = load_plan(BuildConfig.from_dict(config))
    assert plan.stages == ["relay", "perspective:scene", "perspective:spatial", "caption:short", "caption:long"]
    bad = write(tmp_path / "water.yaml", "placeholders: [facts]\nuser: 'Describe the water.'\n")
    config["perspectives"]["prompts"] = ["scene", str(bad)]
    with pytest.raises(UserError, match="water.yaml: declares the placeholder {facts} but its text never uses it"):
        load_plan(BuildConfig.from_dict(config))
