"""ModelCache: the one place loaded models are kept, so a persistent worker loads each model once.

Keyed by the weights' identity (ModelSpec.key()), the resolved device and precision: a model is
loaded straight onto its device and never moved afterwards, so whoever holds an encoder or a
captioner from here holds a model nobody else will mutate. The encoders and captioners built on a
loaded model are kept too (per batch size), so a second query on the same model costs nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rs_vlm_app.errors import Cancelled, UserError
from rs_vlm_app.models.spec import ModelSpec

log = logging.getLogger(__name__)


class ModelLoadError(UserError):
    """A model could not be loaded (missing or mismatched weights, unknown architecture, device)."""


class ModelCache:
    """Loaded models of one process (a worker, a CLI run, a test).

    ``loads`` counts the models actually loaded (front ends show it; tests use it to prove a second
    query reused the model); ``load_seconds`` is the time spent loading them.
    """

    def __init__(self) -> None:
        self._loaded: dict[tuple, Any] = {}
        self._built: dict[tuple, Any] = {}
        self._lock = threading.RLock()
        self.loads = 0
        self.load_seconds = 0.0

    def clip_encoder(self, spec: ModelSpec) -> Any:
        """A rs_vlm_app.models.encoder.ClipEncoder (rs_vlm_app.models.tile_encoder.TileEncoder) for ``spec``."""
        def build(loaded: Any) -> Any:
            from rs_vlm_app.models.encoder import ClipEncoder

            return ClipEncoder(loaded, precision=spec.precision, batch_size=spec.batch_size)

        return self._get(spec, "clip", "clip-encoder", build)

    def captioner(self, spec: ModelSpec) -> Any:
        """A rs_vlm_app.models.captioner.CocaCaptioner for ``spec``."""
        def build(loaded: Any) -> Any:
            from rs_vlm_app.models.captioner import CocaCaptioner

            return CocaCaptioner(loaded, precision=spec.precision, batch_size=spec.batch_size)

        return self._get(spec, "coca", "captioner", build)

    def loaded(self, spec: ModelSpec, family: str | None = None) -> Any:
        """The rs_vlm_app.models.factory.LoadedModel of ``spec`` (loaded now, or the one loaded before),
        checked to be of ``family`` ("clip", "coca" or None: either)."""
        from rs_vlm_app.models.device import pick_device, resolve_precision

        with self._lock:
            try:
                spec.check(family)
                device = pick_device(spec.device)
                key = (spec.key(), device, resolve_precision(device, spec.precision))
            except UserError as exc:
                raise ModelLoadError(str(exc)) from None
            found = self._loaded.get(key)
            if found is None:
                found = self._load(spec, device, family)
                self._loaded[key] = found
            elif family is not None and found.family != family:
                from rs_vlm_app.models.factory import _check_family

                try:
                    _check_family(found.display_name, found.family, family)
                except UserError as exc:
                    raise ModelLoadError(str(exc)) from None
            return found

    def clear(self) -> None:
        """Forget every model (frees their memory once nothing else holds them)."""
        with self._lock:
            self._loaded.clear()
            self._built.clear()

    def _get(self, spec: ModelSpec, family: str, purpose: str, build: Callable[[Any], Any]) -> Any:
        with self._lock:
            loaded = self.loaded(spec, family)
            key = (purpose, id(loaded), spec.precision, spec.batch_size)
            found = self._built.get(key)
            if found is None:
                try:
                    found = build(loaded)
                except UserError as exc:
                    raise ModelLoadError(str(exc)) from None
                self._built[key] = found
            return found

    def _load(self, spec: ModelSpec, device: str, family: str | None) -> Any:
        from rs_vlm_app.models.factory import load_model

        started = time.monotonic()
        try:
            loaded = load_model(spec, device=device, expect_family=family)
        except (Cancelled, KeyboardInterrupt, MemoryError):
            raise
        except UserError as exc:
            raise ModelLoadError(str(exc)) from None
        except Exception as exc:
            log.debug("model load failed", exc_info=True)
            raise ModelLoadError(f"cannot load the model {spec.describe()}: {type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:300]}") from None
        self.load_seconds += time.monotonic() - started
        self.loads += 1
        return loaded
