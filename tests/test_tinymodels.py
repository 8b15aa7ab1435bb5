"""The tiny-model fixtures are deterministic: the same seed gives the same weights, bit for bit."""

from __future__ import annotations

import torch

from tests import tinymodels


def test_tiny_coca_is_deterministic(tmp_path):
    config = tinymodels.write_config(tmp_path, "rsvlm-test-tiny-coca", tinymodels.tiny_config("coca"))
    first = tinymodels.build_model(config, seed=0).state_dict()
    _ = [torch.full((512, 512), float("nan")) for _ in range(8)]  # leave NaNs in freed memory
    second = tinymodels.build_model(config, seed=0).state_dict()
    assert all(torch.isfinite(v).all() for v in second.values() if v.is_floating_point())
    assert all(torch.equal(first[k], second[k]) for k in first)
