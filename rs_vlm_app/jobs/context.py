"""What a running job gets from whoever runs it: a reporter, the model cache, the embedding cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rs_vlm_app.models.cache import ModelCache, ModelLoadError  # noqa: F401 - runner catches ModelLoadError
from rs_vlm_app.models.spec import ModelSpec
from rs_vlm_app.reporting import NullReporter, Reporter


@dataclass
class JobContext:
    """Handed to JobSpec.run: report through ``reporter``, get models from ``models`` (the process's one
    model cache: a persistent worker passes the same one to every job)."""

    reporter: Reporter = field(default_factory=NullReporter)
    models: ModelCache = field(default_factory=ModelCache)
    cache: Any = None  # rs_vlm_app.tasks.embedding_cache.EmbeddingCache; None = the default folder

    def clip_encoder(self, spec: ModelSpec) -> Any:
        """The TileEncoder (rs_vlm_app.models.tile_encoder) of ``spec``, loaded once per process."""
        return self.models.clip_encoder(spec)

    def captioner(self, spec: ModelSpec) -> Any:
        """The TileCaptioner of ``spec``, loaded once per process."""
        return self.models.captioner(spec)
