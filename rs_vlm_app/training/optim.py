"""Optimizer and learning-rate schedule (open_clip's recipe: AdamW, no decay on gains and biases)."""

from __future__ import annotations

import math

import torch
from torch import nn

from rs_vlm_app.training.config import TrainConfig


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Gains, biases, norms, embeddings of rank < 2 and the logit scale are not decayed."""
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameter")
    decay = [p for n, p in named if not no_weight_decay(n, p)]
    plain = [p for n, p in named if no_weight_decay(n, p)]
    groups = [g for g in ({"params": plain, "weight_decay": 0.0},
                          {"params": decay, "weight_decay": config.wd}) if g["params"]]
    # the fused kernel is several times faster than the per-tensor loop, on CPUs as on GPUs
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for _, p in named)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps,
                             fused=fused or None)


def learning_rate(step: int, config: TrainConfig, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine or constant."""
    base = config.lr
    if config.warmup and step < config.warmup:
        return base * (step + 1) / config.warmup
    if config.schedule == "const":
        return base
    decay_steps = max(1, total_steps - config.warmup)
    progress = min(1.0, (step - config.warmup) / decay_steps)
    return 0.5 * (1 + math.cos(math.pi * progress)) * base


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
