"""Device choice, precision and batch sizes (this machine has no GPU: the CPU paths are exercised)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from rs_vlm_app.errors import UserError
from rs_vlm_app.models.device import autocast, default_batch_size, pick_device, resolve_precision

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def test_cpu_and_auto():
    assert pick_device("cpu") == "cpu"
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert pick_device("auto") == expected
    assert pick_device("  AUTO ") == expected


@no_cuda
def test_unavailable_cuda_is_a_user_error():
    with pytest.raises(UserError, match=r"device cuda: no CUDA GPU is usable here"):
        pick_device("cuda")
    with pytest.raises(UserError, match=r"device cuda:1: no CUDA GPU"):
        pick_device("cuda:1")


def test_unknown_device():
    with pytest.raises(UserError, match="unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps"):
        pick_device("tpu")


def test_precision_on_cpu():
    assert resolve_precision("cpu", "auto") == "fp32"
    assert resolve_precision("cpu", "bf16") == "bf16"
    with pytest.raises(UserError, match="fp16 is not supported on the CPU"):
        resolve_precision("cpu", "fp16")
    with pytest.raises(UserError, match="unknown precision 'fp8'"):
        resolve_precision("cpu", "fp8")


def test_autocast_contexts():
    assert isinstance(autocast("cpu", "auto"), contextlib.nullcontext)
    with autocast("cpu", "bf16"):
        out = torch.nn.functional.linear(torch.ones(2, 4), torch.ones(3, 4))
    assert out.dtype == torch.bfloat16


def test_default_batch_size_scales_with_image_size():
    assert default_batch_size("cpu", 224) == 32
    assert default_batch_size("cpu", 448) == 8
    assert default_batch_size("cpu", 4000) == 1
