"""A tiny CoCa taught one fixed sentence: a deterministic captioner for end-to-end tests.

Twenty steps of caption loss on random images (batch 2, only the sentence's tokens) are enough for
greedy and beam decoding to produce TAUGHT_SENTENCE for any input. Built once per session.
"""

from __future__ import annotations

from pathlib import Path

from tests import tinymodels

TAUGHT_SENTENCE = "many green trees are around a white building."
TAUGHT_STEPS = 20


def teach_coca(folder: Path, sentence: str = TAUGHT_SENTENCE, steps: int = TAUGHT_STEPS, seed: int = 0) -> dict:
    """Write config + state_dict of a tiny CoCa that captions every image with ``sentence``."""
    import open_clip
    import torch
    import torch.nn.functional as F

    config = tinymodels.write_config(folder, "rsvlm-test-taught-coca", tinymodels.tiny_config("coca"))
    model = tinymodels.build_model(config, seed=seed)
    model.train()
    tokenizer = open_clip.tokenizer.SimpleTokenizer()
    ids = [tokenizer.sot_token_id, *tokenizer.encode(sentence), tokenizer.eot_token_id]
    text = torch.tensor([ids, ids])
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(steps):
        images = torch.rand((2, 3, 64, 64), generator=generator) * 2 - 1
        out = model(images, text)
        loss = F.cross_entropy(out["logits"].permute(0, 2, 1), out["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    checkpoint = tinymodels.save_checkpoint(model, folder / "taught_coca.pt", "state_dict")
    return {"config": config, "checkpoint": checkpoint, "model": model, "sentence": sentence,
            "loss": float(loss.detach())}
