"""Compute device, mixed precision and default batch sizes."""

from __future__ import annotations

import contextlib

from rs_vlm_app.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_device(name: str = "auto") -> str:
    """"auto" = cuda > mps > cpu; an explicit device that is not usable here is a UserError."""
    import torch

    requested = (name or "auto").strip().lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" or requested.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"device {requested}: no CUDA GPU is usable here (torch.cuda.is_available() is "
                            f"false; torch {torch.__version__}); use device auto or cpu")
        index = requested.partition(":")[2]
        if index:
            if not index.isdigit():
                raise UserError(f"device {requested}: write cuda:N with N a GPU number")
            if int(index) >= torch.cuda.device_count():
                raise UserError(f"device {requested}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                                f"numbered from 0")
        return requested
    if requested == "mps":
        if not _mps_available():
            raise UserError("device mps: Apple's Metal (MPS) backend is not available here; use device auto or cpu")
        return "mps"
    raise UserError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_precision(device: str, precision: str = "auto") -> str:
    """The precision actually used: "fp32", "bf16" or "fp16".

    auto: CUDA bf16 where the GPU supports it, else fp16; MPS fp16; CPU fp32 (bf16 on CPU only if asked).
    """
    import torch

    wanted = (precision or "auto").strip().lower()
    if wanted not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    kind = device.split(":", 1)[0]
    if wanted == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp16" if kind == "mps" else "fp32"
    if kind == "cpu" and wanted == "fp16":
        raise UserError("precision fp16 is not supported on the CPU; use bf16 or fp32")
    return wanted


def autocast(device: str, precision: str = "auto") -> contextlib.AbstractContextManager:
    """A context that runs the model at ``precision`` on ``device`` (fp32: no autocast at all)."""
    import torch

    resolved = resolve_precision(device, precision)
    if resolved == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device_type=device.split(":", 1)[0], dtype=dtype)


def default_batch_size(device: str, image_size: int) -> int:
    """Images per batch: sized for the device's free memory, scaled down for larger inputs than 224 px."""
    import torch

    kind = device.split(":", 1)[0]
    if kind == "cuda":
        # the memory free now (another job may hold part of the GPU); an out-of-memory later halves it
        index = int(device.partition(":")[2] or torch.cuda.current_device())
        free, _total = torch.cuda.mem_get_info(index)
        gib = free / 2**30
        base = 32 if gib < 4 else 64 if gib < 8 else 128 if gib < 16 else 256 if gib < 40 else 512
    elif kind == "mps":
        base = 64
    else:
        base = 32
    return max(1, int(base * (224 / max(int(image_size), 1)) ** 2))
