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


def test_candidates_floor_and_index_params():
    from rs_vlm_app.archive.ann import MIN_CANDIDATES, candidate_count, index_params

    assert candidate_count(20, 10) == MIN_CANDIDATES           # a small k still re-ranks the floor
    assert candidate_count(1000, 10) == 10_000
    for n in (30_000, 100_000, 1_000_000, 10_000_000):
        nlist, m = index_params(n, 512)
        assert 16 <= nlist <= n // 39                           # enough training points per list
        assert 512 % m == 0
    assert index_params(1_000_000, 512)[0] <= index_params(10_000_000, 512)[0]


def test_loaded_index_is_reused_until_the_index_changes(tmp_path):
    from rs_vlm_app.archive.ann import load_index

    archive = synthetic_archive(tmp_path / "a", scenes=3)
    maybe_update_index(archive, min_tiles=10_000)
    first = load_index(archive)
    assert load_index(Archive(archive.root)) is first           # a second search does not re-read it
    extra = synthetic_archive(tmp_path / "b", scenes=1)         # one more scene, copied in
    import shutil

    shutil.copytree(extra.scene_folder("s0"), archive.scene_folder("s9"))
    record = archive.scene_folder("s9") / "scene.json"
    record.write_text(record.read_text().replace('"s0"', '"s9"'))
    archive = Archive(archive.root)
    info = maybe_update_index(archive, min_tiles=10_000)
    assert info["tiles"] == 20_000
    again = load_index(archive)
    assert again is not first and ("s9", 0) in again.covers()


def test_exact_rerank_gathers_each_part_once_and_keeps_the_best(tmp_path, monkeypatch):
    from rs_vlm_app.archive import search as search_module
    from rs_vlm_app.archive.ann import load_index

    archive = synthetic_archive(tmp_path / "a", scenes=3)
    maybe_update_index(archive, min_tiles=10_000)
    ann = load_index(archive)
    rng = np.random.default_rng(3)
    ids = rng.choice(15_000, size=600, replace=False)
    query = rng.normal(size=32).astype(np.float32)
    gathers = []

    class Rows:                                                  # counts the gathers from a part's rows
        def __init__(self, rows):
            self.rows = rows

        def __getitem__(self, picked):
            gathers.append(len(picked))
            return self.rows[picked]

    real = ann.embeddings
    monkeypatch.setattr(ann, "embeddings", lambda ordinal, path: Rows(real(ordinal, path)))
    found = search_module.exact_rerank(archive, ann, ids, query, 10, {"s0", "s1", "s2"})
    assert len(gathers) == 3 and sum(gathers) == 600             # one vectorised gather per part
    full = np.concatenate([p.embeddings() for p in archive.parts()]) @ query
    best = sorted(ids, key=lambda i: -full[i])[:10]
    top = sorted(found, key=lambda c: -c[0])[:10]
    assert [5000 * int(sid[1:]) + row for _, sid, _, row in top] == best
    assert [s for s, *_ in top] == pytest.approx([float(full[i]) for i in best], abs=1e-5)


def test_rows_windows_reads_the_rows_asked_for(tmp_path):
    from rs_vlm_app.archive.search import part_windows, rows_windows

    archive = synthetic_archive(tmp_path / "a", scenes=1, per_scene=40_000)   # 3 row groups of 16384
    part = next(archive.parts())
    every = part_windows(part)
    rows = np.array([39_999, 0, 16_384, 16_383, 20_000, 5], dtype=np.int64)
    assert np.array_equal(rows_windows(part.table, rows), every[rows])
    # the same rows from the tile table itself (archives written before the windows sidecar)
    from rs_vlm_app.archive.store import windows_sidecar

    windows_sidecar(part.table).unlink()
    assert np.array_equal(part_windows(part), every)
    assert np.array_equal(rows_windows(part.table, rows), every[rows])


def test_windows_sidecar_matches_the_tile_table(tmp_path):
    from rs_vlm_app.archive.search import WINDOW_COLUMNS
    from rs_vlm_app.archive.store import read_tile_table, windows_sidecar

    archive = synthetic_archive(tmp_path / "a", scenes=2, per_scene=3_000)
    for part in archive.parts():
        table = read_tile_table(part.table, WINDOW_COLUMNS)
        from_table = np.column_stack([table[c].to_numpy() for c in WINDOW_COLUMNS])
        sidecar = np.load(windows_sidecar(part.table))
        assert sidecar.dtype == np.int32 and sidecar.shape == (3_000, 5)
        assert np.array_equal(sidecar, from_table)
