"""The build configuration: validation with one-line errors, JSON round trip, path resolution."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.config import (
    BuildConfig,
    CocoSource,
    OpenAIBackend,
    Shard,
    load_config,
    shard_manifest_name,
)
from tests.mpgi import data


def minimal(tmp_path: Path, **extra) -> dict:
    return data.build_config("out", [{"type": "folder", "root": "images"}],
                             data.openai_backend("http://127.0.0.1:9/v1", "m"), **extra)


def test_yaml_config_resolves_paths_against_its_folder_and_round_trips(tmp_path):
    config_dict = minimal(tmp_path)
    config_dict["sources"].append({"type": "coco", "annotations": "dior/train.json", "images": "/abs/images",
                                   "name": "dior"})
    config_dict["perspectives"]["prompts"] = ["scene", "my_prompts/water.yaml"]
    path = data.write_config(tmp_path / "cfg" / "build.yaml", config_dict)
    config = load_config(path)
    assert config.output == tmp_path / "cfg" / "out"
    assert config.sources[0].root == tmp_path / "cfg" / "images"
    assert config.sources[1] == CocoSource(annotations=tmp_path / "cfg" / "dior" / "train.json",
                                           images=Path("/abs/images"), name="dior")
    assert [p.prompt for p in config.perspectives.prompts] == [
        "scene", str(tmp_path / "cfg" / "my_prompts" / "water.yaml")]
    assert isinstance(config.backends["mllm"], OpenAIBackend)
    assert [name for name, _ in config.integration.slots()] == ["short", "long"]
    plain = json.loads(json.dumps(config.to_dict()))
    assert BuildConfig.from_dict(plain) == config


def test_defaults_and_slots(tmp_path):
    config_dict = minimal(tmp_path)
    del config_dict["integration"]["captions"]
    config_dict["integration"]["captions"] = [{"name": "short", "words": 12, "count": 2}, {"name": "long", "words": 60}]
    config = BuildConfig.from_dict(config_dict, base_dir=tmp_path)
    assert [name for name, _ in config.integration.slots()] == ["short-1", "short-2", "long"]
    assert config.integration.max_tokens_for(config.integration.captions[1]) == 24  # configured
    assert config.quality.contradictions == "drop"
    assert config.manifest_path == tmp_path / "out" / "manifest.sqlite"
    sharded = config.with_shard(Shard.parse("2/4"))
    assert sharded.manifest_path == tmp_path / "out" / "manifest-shard-2-of-4.sqlite"
    assert shard_manifest_name(Shard(3, 12)) == "manifest-shard-03-of-12.sqlite"


@pytest.mark.parametrize("change, message", [
    (lambda c: c["sources"][0].update(type="cocoo"), "sources[0]: 'type' must be one of folder, coco, dota (got 'cocoo')"),
    (lambda c: c["sources"][0].update(rot="x"), "sources[0].rot: unknown key (known: root, type, name, extensions"),
    (lambda c: c["sources"].__setitem__(0, {"type": "coco", "images": "x"}), "sources[0].annotations: missing (required)"),
    (lambda c: c["relay"].update(backend="nope"), "relay.backend: no backend named 'nope' (backends: mllm, llm)"),
    (lambda c: c["backends"]["mllm"].update(concurrency=0), "backends.mllm.concurrency: must be at least 1"),
    (lambda c: c["backends"]["mllm"].update(concurrency="lots"), "backends.mllm.concurrency: expected a whole number, got 'lots'"),
    (lambda c: c["backends"]["mllm"].update(base_url="localhost:8000"), "must start with http:// or https://"),
    (lambda c: c["integration"].update(captions=[{"name": "a.b", "words": 5}]), "use letters, digits and '_' only"),
    (lambda c: c["integration"].update(captions=[]), "integration.captions: at least one caption length is required"),
    (lambda c: c["quality"].update(length="maybe"), "quality.length: 'maybe' is not one of drop, flag, off"),
    (lambda c: c["quality"].update(clip={"min_score": 0.3}), "quality.clip: give a catalogue 'name' or a 'checkpoint'"),
    (lambda c: c.update(shard="5/4"), "shard: shard '5/4': i must be between 1 and n"),
    (lambda c: c["sources"].append({"type": "folder", "root": "other/images"}),
     "sources[1].name: 'images' is also the name of sources[0]; give each source a distinct 'name'"),
])
def test_mistakes_are_one_line_errors_naming_the_key(tmp_path, change, message):
    config_dict = minimal(tmp_path)
    change(config_dict)
    path = data.write_config(tmp_path / "build.yaml", config_dict)
    with pytest.raises(UserError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    assert message in text


def test_unreadable_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output: [unclosed\n")
    with pytest.raises(UserError, match=r"bad.yaml: not valid YAML \(line"):
        load_config(bad)
    with pytest.raises(UserError, match="no such configuration file"):
        load_config(tmp_path / "missing.yaml")


def test_shard_parsing():
    assert Shard.parse("1/1") == Shard(1, 1)
    for text in ("0/4", "a/b", "3", "4/3"):
        with pytest.raises(UserError, match="shard"):
            Shard.parse(text)


def test_the_documented_example_config_is_valid():
    from tests.conftest import REPO

    config = load_config(REPO / "docs" / "examples" / "dataset_build.yaml")
    assert [s.type for s in config.sources] == ["folder", "coco", "dota"]
    assert [name for name, _ in config.integration.slots()] == [
        "short-1", "short-2", "medium-1", "medium-2", "detailed-1", "detailed-2"]
    assert config.stage_backends() == {
        "relay.backend": "vlm", "perspectives.prompts[0].backend": "vlm", "perspectives.prompts[1].backend": "vlm",
        "perspectives.prompts[2].backend": "vlm", "integration.backend": "llm"}


def test_perspectives_as_a_list_with_a_backend_each_and_a_relay_chain(tmp_path):
    config_dict = minimal(tmp_path)
    config_dict["relay"] = {"chain": ["mllm", "llm"]}
    config_dict["perspectives"] = ["scene", {"prompt": "objects", "backend": "llm", "temperature": 0.3}]
    config = BuildConfig.from_dict(config_dict, base_dir=tmp_path)
    assert config.relay.backends() == ["mllm", "llm"]
    assert config.stage_backends() == {"relay.chain[0]": "mllm", "relay.chain[1]": "llm",
                                       "perspectives.prompts[0].backend": "mllm",
                                       "perspectives.prompts[1].backend": "llm", "integration.backend": "llm"}
    assert BuildConfig.from_dict(json.loads(json.dumps(config.to_dict())), base_dir=tmp_path) == config
    for change, message in [
        (lambda c: c["relay"].update(backend="llm"), "relay: give 'backend' (one model) or 'chain'"),
        (lambda c: c["relay"].update(chain=["mllm", "qwen"]), "relay.chain[1]: no backend named 'qwen'"),
        (lambda c: c.update(perspectives=[{"prompt": "scene", "backend": "x"}]),
         "perspectives.prompts[0].backend: no backend named 'x'"),
        (lambda c: c.update(perspectives=[{"backend": "llm"}]), "perspectives.prompts[0].prompt: missing (required)"),
    ]:
        broken = json.loads(json.dumps(config_dict))
        change(broken)
        with pytest.raises(UserError, match=re.escape(message)):
            BuildConfig.from_dict(broken, base_dir=tmp_path)
