"""Work-arounds for open_clip 3.3.0: models built with random weights, and builds without weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


@contextlib.contextmanager
def weightless_build() -> Iterator[None]:
    """``open_clip.create_model(..., device="cpu", precision="fp32")`` with its parameters on the meta
    device (rs_vlm_app.models.loading.parameters_on_meta), for loading a checkpoint into.

    open_clip 3.3.0 ends every build with ``model.to(device)``, which cannot copy meta tensors; for a
    CPU fp32 build that call changes nothing, so it is skipped here. Where open_clip has no such
    step (another version), the model is built the ordinary way.
    """
    from rs_vlm_app.models.loading import parameters_on_meta
    from rs_vlm_app.models.open_clip_import import import_open_clip

    import_open_clip()
    import open_clip.factory

    finish = getattr(open_clip.factory, "_set_model_device_and_precision", None)
    if finish is None:
        yield
        return

    def keep_on_meta(model, device, precision, *args, **kwargs):
        if str(device) != "cpu" or precision != "fp32":
            raise ValueError("weightless_build builds for cpu and fp32 only")

    open_clip.factory._set_model_device_and_precision = keep_on_meta
    try:
        with parameters_on_meta():
            yield
    finally:
        open_clip.factory._set_model_device_and_precision = finish
