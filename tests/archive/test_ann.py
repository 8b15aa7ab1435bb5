"""Approximate search with exact re-rank against exact search on a synthetic archive."""

from __future__ import annotations

import numpy as np
import pytest

from rs_vlm_app.archive.ann import maybe_update_index
from rs_vlm_app.archive.search import rank_archive
from rs_vlm_app.archive.store import Archive, Recipe, SceneInfo

UTM = "EPSG:32633"


def synthetic_archive(root, scenes: int = 6, per_scene: int = 5000, dim: int = 32) -> Archive:
    from pyproj import CRS

    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(64, dim))
    archive = Archive(root)
    recipe = Recipe(model="m", model_name="m", embed_dim=dim, preprocess="p", precision="fp32", grid="regular:64@0")
    archive.adopt(recipe)
    side = int(np.ceil(np.sqrt(per_scene)))
    for s in range(scenes):
        info = SceneInfo(id=f"s{s}", path=f"s{s}.tif", fingerprint=f"f{s}", width=64 * side, height=64 * side,
                         crs_wkt=CRS.from_user_input(UTM).to_wkt(), transform=[10, 0, 500000 + s * 1e5, 0, -10, 5e6],
                         bounds=[15, 45, 16, 46], date=f"20{10 + s}-01-01", tiles=per_scene)
        idx = np.arange(per_scene)
        windows = np.column_stack([64 * (idx // side), 64 * (idx // side) + 64, 64 * (idx % side),
                                   64 * (idx % side) + 64, np.full(per_scene, 64)])
        vectors = centres[rng.integers(0, 64, per_scene)] + 0.3 * rng.normal(size=(per_scene, dim))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        archive.commit_part(info, 0, windows, vectors.astype(np.float32), recipe)
        archive.commit_scene(info)
    return archive


def test_ann_recall_and_filters(tmp_path):
    archive = synthetic_archive(tmp_path / "a")
    info = maybe_update_index(archive, min_tiles=10_000)
    assert info is not None and info["tiles"] == 30_000
    rng = np.random.default_rng(1)
    recalls = []
    for _ in range(5):
        query = rng.normal(size=32).astype(np.float32)
        query /= np.linalg.norm(query)
        exact, e_info = rank_archive(archive, query, 100, exact=True)
        approx, a_info = rank_archive(archive, query, 100)
        assert e_info["mode"] == "exact" and a_info["mode"] == "ann"
        truth = {(h.scene.id, h.row) for h in exact}
        recalls.append(len(truth & {(h.scene.id, h.row) for h in approx}) / 100)
        # re-ranked scores are exact cosines
        for hit in approx[:5]:
            vector = next(archive.parts([hit.scene.id])).embeddings()[hit.row]
            assert hit.score == pytest.approx(float(vector @ query), abs=1e-5)
    assert np.mean(recalls) >= 0.9
    from rs_vlm_app.archive.filters import TileFilter, parse_where

    hits, _ = rank_archive(archive, query, 50, TileFilter(parse_where("date >= 2014-01-01")))
    assert {h.scene.id for h in hits} <= {"s4", "s5"} and len(hits) == 50
