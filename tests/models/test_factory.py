"""The factory: requests are checked up front, catalogue flags reach the model, models load once."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from rs_vlm_app import paths
from rs_vlm_app.errors import UserError
from rs_vlm_app.models import factory
from rs_vlm_app.models.cache import ModelCache, ModelLoadError
from rs_vlm_app.models.catalogue import load_catalogue
from rs_vlm_app.models.encoder import ClipEncoder
from rs_vlm_app.models.factory import check_model_spec, fingerprint, load_model
from rs_vlm_app.models.spec import ModelSpec
from tests import tinymodels

TEST_CATALOGUE = """
[models.tiny-quick]
family = "clip"
arch = "rsvlm-test-tiny-clip"
quick_gelu = true
source = {{ kind = "user", file = "tiny.pt" }}
description = "tiny, QuickGELU"
paper = "p"
license = "l"

[models.tiny-plain]
family = "clip"
arch = "rsvlm-test-tiny-clip"
quick_gelu = false
default = true
source = {{ kind = "user", file = "tiny.pt" }}
description = "tiny, GELU"
paper = "p"
license = "l"
"""


@pytest.fixture
def tiny_catalogue(tmp_path, monkeypatch, tiny_clip):
    """A catalogue of two tiny entries that differ only in their QuickGELU flag, weights in the cache."""
    path = tmp_path / "models.toml"
    path.write_text(TEST_CATALOGUE.format())
    entries = load_catalogue(path)
    monkeypatch.setattr(factory, "get_entry", lambda name: entries[name])
    monkeypatch.setattr(factory, "default_entry", lambda family="clip": entries["tiny-plain"])
    for name in entries:
        folder = paths.models_cache_dir() / name
        folder.mkdir(parents=True)
        shutil.copy(tiny_clip["checkpoint"], folder / "tiny.pt")
    return entries


def activation(model) -> str:
    return type(model.visual.transformer.resblocks[0].mlp.gelu).__name__


def test_quick_gelu_flag_of_the_catalogue_reaches_the_model(tiny_catalogue):
    quick = load_model(ModelSpec(name="tiny-quick"), device="cpu")
    plain = load_model(ModelSpec(name="tiny-plain"), device="cpu")
    assert activation(quick.model) == "QuickGELU" and quick.quick_gelu
    assert activation(plain.model) == "GELU" and not plain.quick_gelu
    assert type(quick.model.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"  # text tower too
    assert quick.fingerprint != plain.fingerprint  # same file, another model: caches must not mix them
    text = ["a lake between fields"]
    assert not np.allclose(ClipEncoder(quick).encode_texts(text), ClipEncoder(plain).encode_texts(text))


def test_request_override_and_default_entry(tiny_catalogue):
    overridden = load_model(ModelSpec(name="tiny-quick", quick_gelu=False), device="cpu")
    assert activation(overridden.model) == "GELU"
    default = load_model(ModelSpec(), device="cpu")
    assert default.display_name == "tiny-plain" and default.entry.name == "tiny-plain"


def test_catalogue_model_with_an_explicit_checkpoint(tiny_catalogue, wide_clip):
    with pytest.raises(UserError, match="does not fit model tiny-quick"):
        load_model(ModelSpec(name="tiny-quick", checkpoint=wide_clip["checkpoint"]), device="cpu")


@pytest.mark.parametrize("fmt", tinymodels.FORMATS + tinymodels.EXTRA_FORMATS)
def test_every_layout_embeds_like_the_in_memory_model(tiny_clip, tiny_clip_formats, fmt):
    loaded = load_model(ModelSpec(checkpoint=tiny_clip_formats[fmt], model_config=tiny_clip["config"]),
                        device="cpu")
    encoder = ClipEncoder(loaded)
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    texts = ["a river", "green fields with a road"]
    reference = tiny_clip["model"]
    mean = torch.tensor(loaded.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.std).view(1, 3, 1, 1)
    with torch.no_grad():
        x = (torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255 - mean) / std
        image = torch.nn.functional.normalize(reference.encode_image(x), dim=-1).numpy()
        text = torch.nn.functional.normalize(reference.encode_text(loaded.tokenizer(texts)), dim=-1).numpy()
    np.testing.assert_allclose(encoder.encode_images(tiles), image, atol=1e-6)
    np.testing.assert_allclose(encoder.encode_texts(texts), text, atol=1e-6)


def test_parity_config_and_checkpoint_load(selo_parity):
    loaded = load_model(ModelSpec(model_config=selo_parity / "tiny_clip.json",
                                     checkpoint=selo_parity / "tiny_clip.pt"), device="cpu")
    assert (loaded.family, loaded.image_size, loaded.embed_dim, loaded.context_length) == ("clip", 224, 64, 77)
    assert loaded.display_name == "tiny_clip.pt (tiny_clip.json)"
    assert activation(loaded.model) == "GELU"


def test_user_config_named_like_a_builtin_does_not_replace_it(tmp_path, tiny_clip):
    import open_clip

    shadow = tinymodels.write_config(tmp_path, "ViT-B-32", tinymodels.tiny_config("clip"))
    loaded = load_model(ModelSpec(model_config=shadow, checkpoint=tiny_clip["checkpoint"]), device="cpu")
    assert loaded.arch.startswith("rsvlm-ViT-B-32-")
    assert open_clip.get_model_config("ViT-B-32")["embed_dim"] == 512


def test_open_clip_config_json_with_preprocess_cfg(tmp_path, tiny_clip):
    import json

    path = tmp_path / "open_clip_config.json"
    path.write_text(json.dumps({"model_cfg": tinymodels.tiny_config("clip"),
                                "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}))
    loaded = load_model(ModelSpec(model_config=path, checkpoint=tiny_clip["checkpoint"]), device="cpu")
    assert loaded.mean == (0.5, 0.5, 0.5) and loaded.std == (0.25, 0.25, 0.25)


@pytest.mark.parametrize("request_kwargs, problem", [
    ({"arch": "ViT-B-32"}, "arch describes the weights file given as checkpoint; give the checkpoint too"),
    ({"model_config": "cfg.json"}, "model_config describes the weights file given as checkpoint"),
    ({"arch": "ViT-B-32", "model_config": "cfg.json", "checkpoint": "x.pt"},
     "arch and model_config both describe the checkpoint's architecture; give one of them"),
    ({"name": "georsclip-vit-b-32", "arch": "ViT-L-14", "checkpoint": "CKPT"},
     "a catalogue model name brings its own architecture"),
    ({"checkpoint": "CKPT"}, "needs its architecture: arch (an open_clip name such as ViT-B-32)"),
    ({"checkpoint": "missing.pt", "arch": "ViT-B-32"}, "missing.pt: model file not found"),
    ({"name": "no-such-model"}, "unknown model 'no-such-model'"),
])
def test_bad_requests_fail_before_loading(tiny_clip, request_kwargs, problem):
    kwargs = {k: (tiny_clip["checkpoint"] if v == "CKPT" else v) for k, v in request_kwargs.items()}
    with pytest.raises(UserError) as err:
        check_model_spec(ModelSpec(**kwargs))
    assert problem in str(err.value) and "\n" not in str(err.value)
    assert "--" not in str(err.value)  # field names, not one front end's flags: GUI and QGIS show these too


def test_bad_model_configs(tmp_path, tiny_clip):
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    notcfg = tmp_path / "other.json"
    notcfg.write_text('{"name": "something else"}')
    for path, problem in [(tmp_path / "none.json", "model config file not found"),
                          (broken, "model config is not valid JSON"),
                          (notcfg, "not an open_clip model config: missing embed_dim, vision_cfg, text_cfg")]:
        with pytest.raises(UserError) as err:
            check_model_spec(ModelSpec(model_config=path, checkpoint=tiny_clip["checkpoint"]))
        assert str(err.value).startswith(f"{path}: {problem}")


def test_unknown_arch_lists_close_open_clip_names(tiny_clip):
    with pytest.raises(UserError) as err:
        load_model(ModelSpec(checkpoint=tiny_clip["checkpoint"], arch="ViT-B-23"), device="cpu")
    message = str(err.value)
    assert message.startswith("unknown open_clip architecture 'ViT-B-23'; did you mean ViT-B-32")


def test_arch_accepts_slash_and_case_spellings():
    from rs_vlm_app.models.archs import check_arch

    assert check_arch("ViT-B/32") == "ViT-B-32"
    assert check_arch("vit-l-14") == "ViT-L-14"


def test_cache_loads_each_model_once_and_never_moves_it(tiny_clip, monkeypatch):
    calls = []
    real = factory.load_model

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(factory, "load_model", counting)
    cache = ModelCache()
    spec = ModelSpec(checkpoint=tiny_clip["checkpoint"], model_config=tiny_clip["config"], device="cpu",
                     precision="fp32")
    first = cache.loaded(spec, "clip")
    second = cache.loaded(ModelSpec(checkpoint=tiny_clip["checkpoint"], model_config=tiny_clip["config"],
                                    device="cpu", precision="fp32"), "clip")
    assert first is second and len(calls) == 1 and cache.loads == 1
    encoder = cache.clip_encoder(spec)
    assert encoder is cache.clip_encoder(spec) and encoder.loaded is first  # built once on the one model
    other_batch = cache.clip_encoder(spec.replace(batch_size=3))
    assert other_batch.batch_size == 3 and other_batch.loaded is first and cache.loads == 1
    with pytest.raises(ModelLoadError, match="this needs a CoCa caption model"):
        cache.loaded(spec, "coca")
    with pytest.raises(ValueError, match="was loaded on cpu"):
        ClipEncoder(first, device="cuda")  # a shared model is never moved by whoever wraps it
    assert first.device == "cpu"


def test_request_key_follows_the_file(tmp_path, tiny_clip):
    copy = tmp_path / "copy.pt"
    shutil.copy(tiny_clip["checkpoint"], copy)
    a = ModelSpec(checkpoint=copy, arch="ViT-B-32")
    assert a.key() == ModelSpec(checkpoint=copy, arch="ViT-B-32", allow_download=False).key()
    assert a.key() != ModelSpec(checkpoint=copy, arch="ViT-B-32", quick_gelu=True).key()
    before = a.key()
    with open(copy, "ab") as f:
        f.write(b"0")
    assert a.key() != before  # a re-trained file is another model


def test_fingerprint_is_content_based(tmp_path, tiny_clip, wide_clip):
    copy = tmp_path / "moved.pt"
    shutil.copy(tiny_clip["checkpoint"], copy)
    one = fingerprint(tiny_clip["checkpoint"], arch="a", quick_gelu=False)
    assert fingerprint(copy, arch="a", quick_gelu=False) == one
    assert fingerprint(copy, arch="a", quick_gelu=True) != one
    assert fingerprint(copy, arch="b", quick_gelu=False) != one
    assert fingerprint(wide_clip["checkpoint"], arch="a", quick_gelu=False) != one
