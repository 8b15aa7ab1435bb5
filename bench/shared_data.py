"""Where ../shared (the project's sample data) is, for the benchmarks: $RSVLM_SHARED, else the
nearest folder named ``shared`` beside the checkout or one of its parents."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    if os.environ.get("RSVLM_SHARED"):
        return Path(os.environ["RSVLM_SHARED"])
    for parent in REPO.parents:
        if (parent / "shared" / "samples").is_dir():
            return parent / "shared"
    return REPO.parent / "shared"


NAIP_SAMPLE = shared_dir() / "samples" / "naip_2020_5m.tif"
