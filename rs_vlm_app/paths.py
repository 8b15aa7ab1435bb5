"""Where rs-vlm keeps its caches (models, embeddings). Override with RSVLM_CACHE_DIR."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of rs-vlm's caches: $RSVLM_CACHE_DIR, else $XDG_CACHE_HOME/rs-vlm, else ~/.cache/rs-vlm."""
    explicit = os.environ.get("RSVLM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "rs-vlm"


def models_cache_dir() -> Path:
    """Model files: <cache>/models/<catalogue name>/<file name>; users may drop files here by hand."""
    return cache_dir() / "models"


def embeddings_cache_dir() -> Path:
    """Tile embeddings per scene x model x grid x preprocessing."""
    return cache_dir() / "embeddings"
