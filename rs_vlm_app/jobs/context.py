"""What a running job gets from whoever runs it: a reporter, loaded models, the embedding cache."""

from __future__ import annotations

import logging
import time
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
        self._encoders: dict[tuple, Any] = {}
        self.loads = 0
        self.load_seconds = 0.0

    def clip_encoder(self, spec: ModelSpec, reporter: Reporter | None = None) -> Any:
        """A rs_vlm_app.models.encoder.ClipEncoder for ``spec`` (loaded now, or the one loaded before)."""
        return self._get(spec, "clip", reporter or NullReporter())

    def _get(self, spec: ModelSpec, family: str, reporter: Reporter) -> Any:
        key = (family, spec.name, _path_key(spec.checkpoint), spec.arch, _path_key(spec.model_config),
               spec.quick_gelu, spec.device, spec.precision, spec.batch_size, spec.allow_download)
        found = self._encoders.get(key)
        if found is not None:
            return found
        started = time.monotonic()
        try:
            encoder = _load_encoder(spec, family)
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
        self._encoders[key] = encoder
        return encoder


def _load_encoder(spec: ModelSpec, family: str) -> Any:
    from rs_vlm_app.models.encoder import ClipEncoder
    from rs_vlm_app.models.factory import get_model

    loaded = get_model(spec.request(), device=spec.device, precision=spec.precision, expect_family=family)
    return ClipEncoder(loaded, device=spec.device, precision=spec.precision, batch_size=spec.batch_size)


def _path_key(path: Any) -> str | None:
    return None if path is None else str(path)


@dataclass
class JobContext:
    """Handed to JobSpec.run: report through ``reporter``, get models from ``models``."""

    reporter: Reporter = field(default_factory=NullReporter)
    models: ModelPool = field(default_factory=ModelPool)
    cache: Any = None  # rs_vlm_app.tasks.embedding_cache.EmbeddingCache; None = the default folder

    def clip_encoder(self, spec: ModelSpec) -> Any:
        return self.models.clip_encoder(spec, self.reporter)
