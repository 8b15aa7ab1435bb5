"""TrainConfig validation, JSON round trip, run identity; recipes."""

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.training.config import TrainConfig, identity, identity_differences
from rs_vlm_app.training.recipes import list_recipes, load_recipe


def config(**changes):
    return TrainConfig(**{"task": "clip", "data": "/d/train.csv", "output_dir": "/runs/a", **changes})


def test_round_trips_through_json():
    original = config(lr=1e-5, lora_rank=8, lora_towers=["text"], val_data="/d/val.csv")
    import json

    assert TrainConfig.from_dict(json.loads(original.to_json())) == original


@pytest.mark.parametrize(("changes", "message"), [
    ({"epochs": 0}, "--epochs must be a whole number >= 1"),
    ({"batch_size": -4}, "--batch-size must be a whole number >= 1"),
    ({"lr": 0.0}, "--lr must be positive"),
    ({"precision": "fp8"}, "--precision must be one of auto, fp32, amp, amp_bf16"),
    ({"beta2": 1.0}, "--beta2 must lie in [0, 1)"),
    ({"lora_rank": 4, "lora_towers": ["vision"]}, "unknown tower 'vision'"),
    ({"lora_rank": 4, "lock_image": True, "lora_towers": ["image"]}, "leaves nothing to train"),
    ({"task": "coca", "caption_loss_weight": 0.0, "contrastive_loss_weight": 0.0}, "loss weight above zero"),
])
def test_bad_settings_are_one_clear_line(changes, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        config(**changes).validate()


def test_unknown_setting_is_refused():
    with pytest.raises(UserError, match="unknown training setting 'learning_rate'"):
        TrainConfig.from_dict({"task": "clip", "data": "x", "output_dir": "y", "learning_rate": 1})


def test_quick_gelu_is_automatic_for_openai_weights():
    assert config(init="openai").use_quick_gelu
    assert not config(init="none").use_quick_gelu
    assert not config(init="openai", quick_gelu=False).use_quick_gelu


def test_identity_ignores_how_a_run_is_executed_but_not_what_it_learns():
    a = identity(config(workers=8, log_every=1, device="cpu", val_data="/v.csv", resume=True))
    assert a == identity(config())
    differences = identity_differences(identity(config()), identity(config(lr=1e-4)))
    assert differences == ["lr 5e-06 -> 0.0001"]


def test_shipped_recipes_load_and_validate():
    recipes = list_recipes()
    assert {"hqrs-clip", "rs-coca"} <= set(recipes)
    hqrs = load_recipe("hqrs-clip")
    assert (hqrs["task"], hqrs["model"], hqrs["init"], hqrs["quick_gelu"]) == ("clip", "ViT-B-32", "openai", True)
    coca = load_recipe("rs-coca")
    assert (coca["model"], coca["init"], coca["epochs"], coca["batch_size"], coca["lr"], coca["wd"],
            coca["warmup"], coca["precision"]) == ("coca_ViT-L-14", "laion2b_s13b_b90k", 10, 64, 1e-5, 0.1, 1000, "amp")
    for name in recipes:
        TrainConfig(data="x", output_dir="y", **load_recipe(name)).validate()


def test_recipe_errors(tmp_path):
    with pytest.raises(UserError, match="unknown recipe 'nope'.*hqrs-clip"):
        load_recipe("nope")
    bad = tmp_path / "mine.toml"
    bad.write_text('task = "clip"\nlearning_rate = 3\n')
    with pytest.raises(UserError, match="unknown setting 'learning_rate' in the recipe"):
        load_recipe(str(bad))
    bad.write_text('data = "x.csv"\n')
    with pytest.raises(UserError, match="a recipe cannot set 'data'"):
        load_recipe(str(bad))
    bad.write_text('task = \n')
    with pytest.raises(UserError, match="not a valid TOML recipe"):
        load_recipe(str(bad))
