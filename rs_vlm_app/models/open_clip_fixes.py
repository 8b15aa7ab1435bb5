"""Work-arounds for open_clip 3.3.0 models built with random weights."""

from __future__ import annotations

import torch


def init_uninitialized(model: torch.nn.Module) -> None:
    """Give a CoCa's decoder projection real values (seeded by the caller's torch seed).

    open_clip 3.3.0 creates ``text_decoder.text_projection`` with ``torch.empty`` and never
    initialises it (``MultimodalTransformer.init_parameters`` is not called), so a CoCa built with
    random weights holds whatever was in memory: different on every run, sometimes NaN. A loaded
    checkpoint overwrites it; training from scratch (``--init none``) must not start from garbage.
    """
    decoder = getattr(model, "text_decoder", None)
    projection = getattr(decoder, "text_projection", None)
    if projection is not None:
        with torch.no_grad():
            torch.nn.init.normal_(projection, std=projection.shape[0] ** -0.5)
