"""Safe loading: every released layout loads exactly; every bad file is a one-line error naming it."""

from __future__ import annotations

import pickle

import pytest
import torch

from rs_vlm_app.errors import UserError
from rs_vlm_app.models.factory import load_model
from rs_vlm_app.models.loading import load_weights, read_state_dict
from rs_vlm_app.models.spec import ModelSpec
from rs_vlm_app.models.weights_info import describe_state_dict
from tests import tinymodels


class Opaque:
    """A custom class: pickling an instance of it puts Python code references into the file."""

    def __init__(self):
        self.payload = 1


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("fmt", tinymodels.FORMATS + tinymodels.EXTRA_FORMATS)
def test_every_layout_gives_the_in_memory_weights(tiny_clip, tiny_clip_formats, fmt):
    state = read_state_dict(tiny_clip_formats[fmt])
    expected = tiny_clip["model"].state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_training_checkpoint_is_read_without_loading_optimizer_state(tmp_path, tiny_clip):
    state = tiny_clip["model"].state_dict()
    path = tmp_path / "epoch_20.pt"
    torch.save({"epoch": 20, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()},
                "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-5}]}}, path)
    assert read_state_dict(path).keys() == state.keys()


def test_missing_empty_and_folder(tmp_path):
    with pytest.raises(UserError, match="checkpoint file not found"):
        read_state_dict(tmp_path / "nope.pt")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match=r"empty \(0 bytes\)"):
        read_state_dict(empty)
    with pytest.raises(UserError, match="is a folder"):
        read_state_dict(tmp_path)


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "notes.pt"
    junk.write_bytes(b"these are my notes, not weights" * 10)
    with pytest.raises(UserError) as err:
        read_state_dict(junk)
    assert one_line(err).startswith(f"{junk}: is not a PyTorch or safetensors checkpoint, or it is corrupt")


def test_truncated_checkpoint(tmp_path, tiny_clip_formats):
    data = tiny_clip_formats["state_dict"].read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as err:
        read_state_dict(cut)
    assert one_line(err).startswith(f"{cut}: is a truncated or corrupt checkpoint")


def test_truncated_safetensors(tmp_path, tiny_clip_formats):
    data = tiny_clip_formats["safetensors"].read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as err:
        read_state_dict(cut)
    assert one_line(err).startswith(f"{cut}: is not a readable safetensors file (corrupt or truncated?)")


def test_pickled_python_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "extra": Opaque()}, path)
    with pytest.raises(UserError) as err:
        read_state_dict(path)
    assert one_line(err).startswith(
        f"{path}: contains Python objects that weights_only loading refuses; only tensor checkpoints are accepted")


def test_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(Opaque()))
    with pytest.raises(UserError, match="contains Python objects that weights_only loading refuses"):
        read_state_dict(path)


def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "ViT-B-32.pt"
    with pytest.warns(FutureWarning):  # torch.jit is deprecated; the archive is still what OpenAI ships
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(UserError) as err:
        read_state_dict(path)
    message = one_line(err)
    assert "TorchScript (JIT) archive" in message and "catalogue models openai-vit-b-32" in message


def test_git_lfs_pointer_and_html_page(tmp_path):
    pointer = tmp_path / "RS5M_ViT-B-32.pt"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 605000000\n")
    with pytest.raises(UserError, match="Git LFS pointer"):
        read_state_dict(pointer)
    page = tmp_path / "download.pt"
    page.write_text("<!DOCTYPE html><html><body>Access denied</body></html>")
    with pytest.raises(UserError, match="web page"):
        read_state_dict(page)


def test_dict_without_weights(tmp_path):
    path = tmp_path / "opt.pt"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)
    with pytest.raises(UserError) as err:
        read_state_dict(path)
    assert "holds no model weights" in one_line(err)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(4), tensor)
    with pytest.raises(UserError, match=r"holds no model weights \(found a single tensor of shape \[4\]\)"):
        read_state_dict(tensor)


def test_harmless_keys_are_dropped_and_logit_scale_reshaped(tiny_clip):
    model = tinymodels.build_model(tiny_clip["config"], seed=3)
    state = {k: v.clone() for k, v in tiny_clip["model"].state_dict().items()}
    state["text.transformer.embeddings.position_ids"] = torch.arange(32)[None]
    state["input_resolution"] = torch.tensor(64)
    state["logit_scale"] = state["logit_scale"].reshape(1)
    load_weights(model, state, model_name="tiny", path=tiny_clip["checkpoint"])
    assert torch.equal(model.visual.proj, tiny_clip["model"].visual.proj)


def test_partial_checkpoint_is_never_loaded(tiny_clip):
    model = tinymodels.build_model(tiny_clip["config"], seed=3)
    before = model.visual.proj.clone()
    state = dict(tiny_clip["model"].state_dict())
    del state["visual.proj"]
    state["visual.extra_head.weight"] = torch.zeros(2)
    with pytest.raises(UserError) as err:
        load_weights(model, state, model_name="tiny-model", path=tiny_clip["checkpoint"])
    message = one_line(err)
    assert message.startswith(f"{tiny_clip['checkpoint']}: does not fit model tiny-model: 1 missing (visual.proj); "
                              f"1 unexpected (visual.extra_head.weight) keys")
    assert torch.equal(model.visual.proj, before)


def test_wrong_architecture_names_model_file_keys_and_sizes(tiny_clip, wide_clip):
    request = ModelSpec(checkpoint=wide_clip["checkpoint"], model_config=tiny_clip["config"])
    with pytest.raises(UserError) as err:
        load_model(request, device="cpu")
    message = one_line(err)
    assert message.startswith(f"{wide_clip['checkpoint']}: does not fit model wide_clip.pt (rsvlm-test-tiny-clip.json)")
    assert "of another shape (file vs model: positional_embedding [32, 96] vs [32, 64]" in message
    assert "the file looks like a CLIP checkpoint (ViT width 96, patch 16, 1 layer, 64 px; embed dim 48)" in message
    assert "embed dim 48, expected 32" in message
    assert "as open_clip's rsvlm-test-wide-clip" in message


def test_coca_file_described_when_built_as_a_clip(tiny_clip, tiny_coca):
    request = ModelSpec(checkpoint=tiny_coca["checkpoint"], model_config=tiny_clip["config"])
    with pytest.raises(UserError) as err:
        load_model(request, device="cpu")  # no expected family: the key check explains the mismatch
    message = one_line(err)
    assert "unexpected (text.cls_emb, text.positional_embedding" in message
    assert "the file looks like a CoCa caption model checkpoint" in message


def test_coca_given_where_a_clip_is_needed_and_the_reverse(tiny_clip, tiny_coca):
    coca_as_clip = ModelSpec(checkpoint=tiny_coca["checkpoint"], model_config=tiny_coca["config"])
    with pytest.raises(UserError) as err:
        load_model(coca_as_clip, device="cpu", expect_family="clip")
    assert "is a CoCa caption model; this needs a CLIP model" in one_line(err)

    clip_as_coca = ModelSpec(checkpoint=tiny_clip["checkpoint"], model_config=tiny_clip["config"])
    with pytest.raises(UserError) as err:
        load_model(clip_as_coca, device="cpu", expect_family="coca")
    assert "is a CLIP model; this needs a CoCa caption model (a CLIP model cannot write captions)" in one_line(err)

    # a CoCa file described as a CLIP architecture is still recognised by its keys
    coca_file_clip_arch = ModelSpec(checkpoint=tiny_coca["checkpoint"], model_config=tiny_clip["config"])
    with pytest.raises(UserError) as err:
        load_model(coca_file_clip_arch, device="cpu", expect_family="clip")
    assert one_line(err).startswith(f"{tiny_coca['checkpoint']} is a CoCa caption model; this needs a CLIP model")


def test_coca_checkpoint_loads_as_coca(tiny_coca):
    loaded = load_model(ModelSpec(checkpoint=tiny_coca["checkpoint"], model_config=tiny_coca["config"]),
                        device="cpu", expect_family="coca")
    assert loaded.family == "coca" and type(loaded.model).__name__ == "CoCa"
    expected = tiny_coca["model"].state_dict()
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in expected.items())


def test_describe_state_dict(tiny_clip, tiny_coca):
    clip = describe_state_dict(tiny_clip["model"].state_dict())
    assert (clip.family, clip.vision, clip.embed_dim, clip.vision_width, clip.patch_size, clip.image_size,
            clip.vision_layers, clip.text_width, clip.context_length) == ("clip", "ViT", 32, 64, 16, 64, 1, 64, 32)
    assert describe_state_dict(tiny_coca["model"].state_dict()).family == "coca"
    assert describe_state_dict({"weight": torch.zeros(2)}).family is None


def test_a_model_built_on_meta_takes_the_checkpoint_tensors_without_a_copy(tmp_path):
    """parameters_on_meta: no parameter memory and no random initialisation at build time; the loaded
    model's parameters are the checkpoint's own tensors (same storage), buffers stay real."""
    from rs_vlm_app.models.loading import parameters_on_meta

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 32)
            self.register_buffer("mask", torch.ones(4), persistent=False)

    with parameters_on_meta():
        net = Net()
    assert net.linear.weight.device.type == "meta" and net.mask.device.type == "cpu"
    state = {"linear.weight": torch.randn(32, 64), "linear.bias": torch.randn(32, dtype=torch.float16)}
    load_weights(net, state, model_name="net", path=tmp_path / "net.pt")
    assert net.linear.weight.data_ptr() == state["linear.weight"].data_ptr()  # assigned, not copied
    assert net.linear.bias.dtype == torch.float32  # the model's dtype is kept
    torch.testing.assert_close(net.linear(torch.ones(1, 64)),
                               torch.ones(1, 64) @ state["linear.weight"].T + state["linear.bias"].float())
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"  # the patch is gone after the block
