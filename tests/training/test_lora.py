"""LoRA on attention projections: starts as a no-op, trains only adapters, merges into plain weights."""

import pytest
import torch

from tests import tinymodels


def fresh(config_path):
    return tinymodels.build_model(config_path, seed=0)


def embeddings(model, images, tokens):
    with torch.no_grad():
        return model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True)


@pytest.mark.parametrize("kind", ["clip", "coca"])
def test_lora_trains_adapters_only_and_merges_into_a_plain_model(kind, tiny_clip, tiny_coca):
    from rs_vlm_app.training.lora import apply_lora, has_lora, merged_state_dict

    config = (tiny_clip if kind == "clip" else tiny_coca)["config"]
    model = fresh(config)
    images = torch.randn(3, 3, 64, 64)
    tokens = torch.randint(1, 400, (3, 32))
    before = embeddings(model, images, tokens)

    towers = ["image", "text", "decoder"] if kind == "coca" else ["image", "text"]
    count = apply_lora(model, rank=4, alpha=8, towers=towers)
    assert count > 0 and has_lora(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    # B starts at zero: the adapted model computes exactly what the plain one did
    after = embeddings(model, images, tokens)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b)

    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):
                param.normal_(0, 0.05)
    adapted = embeddings(model, images, tokens)
    assert not torch.allclose(adapted[0], before[0], atol=1e-4)

    state = merged_state_dict(model)
    plain = fresh(config)
    assert set(state) == set(plain.state_dict())
    plain.load_state_dict(state, strict=True)
    for a, b in zip(adapted, embeddings(plain, images, tokens), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_lora_on_the_text_tower_only_leaves_the_image_tower_alone(tiny_clip):
    from rs_vlm_app.training.lora import apply_lora

    model = fresh(tiny_clip["config"])
    apply_lora(model, rank=2, alpha=4, towers=["text"])
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.startswith("transformer.") for n in names)
