"""LoRA on the attention projections of open_clip models, merged into plain weights for saving.

open_clip's transformer blocks use ``nn.MultiheadAttention`` (fused ``in_proj_weight`` for q, k, v
and ``out_proj``) or its own ``Attention`` with the same two weights; MultiheadAttention reads the
weights directly instead of calling ``out_proj`` as a module, so LoRA is added as a
parametrisation of the weight tensors: the module sees ``W + (alpha / r) * B @ A`` wherever it
reads W, with W frozen and only A, B trained. :func:`merged_state_dict` gives the plain state dict a
model without LoRA loads (same keys, merged values), so saved models need nothing from here.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

#: weight tensors that get LoRA, per attention module
PROJECTION_WEIGHTS = ("in_proj_weight", "out_proj.weight")


class LoRADelta(nn.Module):
    """Parametrisation ``W -> W + scale * B @ A`` with A (r x in) random and B (out x r) zero."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float,
                 dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.rank = rank
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, dtype=dtype, device=device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, dtype=dtype, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.lora_B @ self.lora_A).to(weight.dtype)


def attention_modules(model: nn.Module, towers: list[str]) -> list[tuple[str, nn.Module]]:
    """(name, module) of every attention layer in the chosen towers (image, text, decoder)."""
    from open_clip.transformer import Attention

    prefixes = []
    if "image" in towers:
        prefixes.append("visual.")
    if "text" in towers:
        # CLIP keeps its text transformer at the top level; CoCa / CustomTextCLIP under "text."
        prefixes += ["transformer.", "text."]
    if "decoder" in towers:
        prefixes.append("text_decoder.")
    found = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.MultiheadAttention, Attention)) and name.startswith(tuple(prefixes)):
            found.append((name, module))
    return found


def apply_lora(model: nn.Module, rank: int, alpha: float, towers: list[str]) -> int:
    """Freeze ``model`` and add trainable LoRA to its attention projections; returns how many weights got one."""
    for param in model.parameters():
        param.requires_grad_(False)
    count = 0
    for _name, module in attention_modules(model, towers):
        for path in PROJECTION_WEIGHTS:
            owner, attr = _resolve(module, path)
            weight = getattr(owner, attr, None) if owner is not None else None
            if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
                continue
            out_features, in_features = weight.shape
            delta = LoRADelta(out_features, in_features, rank, alpha, weight.dtype, weight.device)
            parametrize.register_parametrization(owner, attr, delta)
            count += 1
    return count


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRADelta) for m in model.modules())


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every LoRA folded into its weight, under the plain key names."""
    state = {}
    parametrized = {}
    for module_name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for attr in module.parametrizations:
                key = f"{module_name}.{attr}" if module_name else attr
                parametrized[key] = getattr(module, attr)
    for key, value in model.state_dict().items():
        if ".parametrizations." in key or key.startswith("parametrizations."):
            continue
        state[key] = value
    with torch.no_grad():
        for key, value in parametrized.items():
            state[key] = value.detach().clone()
    return state


def _resolve(module: nn.Module, path: str) -> tuple[nn.Module | None, str]:
    *parents, attr = path.split(".")
    owner: nn.Module | None = module
    for part in parents:
        owner = getattr(owner, part, None)
        if owner is None:
            return None, attr
    return owner, attr
