"""CLIP and CoCa losses over all processes and all accumulated micro-batches.

Contrastive: open_clip's ClipLoss with features gathered from every process (with gradient, local
loss), so each process's gradient, averaged by DDP, equals the gradient of the loss over the whole
global batch. Caption (CoCa): token cross-entropy summed here and divided by the number of caption
tokens in the whole global batch, so gradient accumulation and multi-process runs give the same
value as one big batch (open_clip's per-process mean does not when captions differ in length).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rs_vlm_app.training.distributed import DistContext

#: open_clip's tokenizer pads with 0; padding positions carry no caption loss
PAD_ID = 0


class Losses:
    def __init__(self, ctx: DistContext, contrastive_weight: float = 1.0, caption_weight: float = 0.0):
        from open_clip.loss import ClipLoss

        self.ctx = ctx
        self.contrastive_weight = contrastive_weight
        self.caption_weight = caption_weight
        self.clip_loss = ClipLoss(
            local_loss=ctx.distributed, gather_with_grad=ctx.distributed,
            rank=ctx.rank, world_size=ctx.world_size,
        )

    @property
    def uses_captions(self) -> bool:
        return self.caption_weight > 0

    @property
    def uses_contrastive(self) -> bool:
        return self.contrastive_weight > 0

    def contrastive(self, image_features: torch.Tensor, text_features: torch.Tensor,
                    logit_scale: torch.Tensor) -> torch.Tensor:
        """This process's share of the symmetric InfoNCE loss over the gathered global batch."""
        return self.clip_loss(image_features, text_features, logit_scale)

    @staticmethod
    def caption_token_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Summed next-token cross-entropy over the non-padding positions."""
        return F.cross_entropy(logits.permute(0, 2, 1).float(), labels, ignore_index=PAD_ID, reduction="sum")

    @staticmethod
    def caption_tokens(tokens: torch.Tensor) -> int:
        """Caption tokens that carry a loss (the model predicts tokens 1.. from 0..)."""
        return int((tokens[:, 1:] != PAD_ID).sum())
