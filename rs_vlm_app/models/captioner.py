"""CocaCaptioner: captions for batches of model-sized uint8 RGB tiles from a loaded CoCa model."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from rs_vlm_app.errors import UserError
from rs_vlm_app.models.coca_decoder import CocaDecoder, DecodingOptions, GeneratedCaption, tidy_caption
from rs_vlm_app.models.tile_model import TileModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caption:
    """A caption's text and how the decoder scored it."""

    text: str
    mean_logprob: float   # mean log-probability per scored token (the end token included)
    tokens: int           # caption tokens (BPE pieces)
    ended: bool           # False: cut at the maximum length


class CocaCaptioner(TileModel):
    """Captions uint8 (B, S, S, 3) tiles with a CoCa model (``loaded``: models.factory.LoadedModel).

    Normalisation runs on the device; decoding is our batched greedy / beam search with a key/value
    cache (rs_vlm_app.models.coca_decoder), under torch.inference_mode and autocast.
    """

    def __init__(self, loaded, *, device: str = "auto", precision: str = "auto", batch_size: int | None = None):
        if getattr(loaded, "family", "coca") != "coca":
            raise UserError(f"{loaded.display_name} is a CLIP model and cannot write captions; give a CoCa "
                            "caption model (see `rsvlm models list`)")
        super().__init__(loaded, device=device, precision=precision, batch_size=batch_size)
        self.decoder = CocaDecoder(self.model)

    def caption_tiles(self, tiles: np.ndarray, options: DecodingOptions) -> list[Caption]:
        """uint8 (B, S, S, 3) RGB tiles at image_size -> one Caption per tile, in order."""
        return self.run_batches(tiles, lambda x: [self._caption(g) for g in self.decoder.generate(x, options)])

    def _caption(self, generated: GeneratedCaption) -> Caption:
        text = tidy_caption(self.tokenizer.decode(list(generated.tokens))) if generated.tokens else ""
        return Caption(text, float(generated.mean_logprob), len(generated.tokens), generated.ended)
