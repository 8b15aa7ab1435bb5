"""What a running job gets from whoever runs it: a reporter, loaded models, the embedding cache."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rs_vlm_app.errors import Cancelled, UserError
from rs_vlm_app.jobs.specs import ModelSpec
from rs_vlm_app.reporting import NullReporter, Reporter

log = logging.getLogger(__name__)


class ModelLoadError(UserError):
    """A model could not be loaded (missing or mismatched weights, unknown architecture, device)."""


class ModelPool:
    """Loaded models, kept for the life of the process: a persistent worker loads each model once.

    ``loads`` counts the models actually loaded by this pool (front ends show it; tests use it to
    prove a second query reused the model).
    """

    def __init__(self) -> None:
        self._models: dict[tuple, Any] = {}
        self.loads = 0
        self.load_seconds = 0.0

    def clip_encoder(self, spec: ModelSpec, reporter: Reporter | None = None) -> Any:
        """A rs_vlm_app.models.encoder.ClipEncoder for ``spec`` (loaded now, or the one loaded before)."""
        def wrap(loaded: Any) -> Any:
            from rs_vlm_app.models.encoder import ClipEncoder

            return ClipEncoder(loaded, device=spec.device, precision=spec.precision, batch_size=spec.batch_size)

        return self.load(spec, "clip", wrap, purpose="clip-encoder")

    def load(self, spec: ModelSpec, family: str, wrap: Callable[[Any], Any], purpose: str) -> Any:
        """The model ``spec`` names, checked to be of ``family`` ("clip" or "coca"), turned into what a
        job uses by ``wrap(LoadedModel)``; memoised per (spec, purpose). Failures raise ModelLoadError
        (a UserError: one line naming the model and the problem)."""
        try:
            identity = spec.request().key()  # covers the weights file's identity, not just its path
        except UserError as exc:
            raise ModelLoadError(str(exc)) from None
        key = (purpose, family, identity, spec.device, spec.precision, spec.batch_size)
        found = self._models.get(key)
        if found is not None:
            return found
        started = time.monotonic()
        try:
            from rs_vlm_app.models.factory import get_model

            loaded = get_model(spec.request(), device=spec.device, precision=spec.precision, expect_family=family)
            model = wrap(loaded)
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
        self._models[key] = model
        return model


@dataclass
class JobContext:
    """Handed to JobSpec.run: report through ``reporter``, get models from ``models``."""

    reporter: Reporter = field(default_factory=NullReporter)
    models: ModelPool = field(default_factory=ModelPool)
    cache: Any = None  # rs_vlm_app.tasks.embedding_cache.EmbeddingCache; None = the default folder

    def clip_encoder(self, spec: ModelSpec) -> Any:
        return self.models.clip_encoder(spec, self.reporter)
