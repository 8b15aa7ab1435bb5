"""rsvlm localize --archive: per-scene heat maps from the archive's embeddings, merged hot spots."""

from __future__ import annotations

import numpy as np
import pyogrio
import rasterio

from rs_vlm_app.archive.store import Archive
from tests.archive.conftest import GRID, model_args, run_cli


def test_archive_heat_maps_match_localize_and_encode_nothing(local_archive, scenes, tiny_clip, tmp_path, capfd,
                                                           monkeypatch):
    queries = tmp_path / "queries.txt"
    queries.write_text("a lake\n# a comment\nfarm fields\n")
    out = tmp_path / "loc"
    from rs_vlm_app.models.encoder import ClipEncoder

    def no_encoding(self, tiles):
        raise AssertionError("localize --archive encoded tiles")

    with monkeypatch.context() as patch:
        patch.setattr(ClipEncoder, "encode_images", no_encoding)
        code, summary, _ = run_cli(["localize", "--archive", str(local_archive), "--queries", str(queries),
                                    "--where", "date >= 2012-01-01", "-o", str(out), *model_args(tiny_clip)], capfd)
    assert code == 0 and summary["queries"] == ["a lake", "farm fields"]
    dated = sorted(s.id for s in Archive(local_archive).scenes().values() if s.date)
    assert sorted(summary["scenes"]) == dated
    # the same heat map as `rsvlm localize` on that scene with the archive's grid
    direct = tmp_path / "direct"
    code, _, _ = run_cli(["localize", str(scenes["naip_20200831_a"]), "a lake", "--grid", GRID, "-o", str(direct),
                          *model_args(tiny_clip)], capfd)
    assert code == 0
    with rasterio.open(out / "naip_20200831_a" / "a_lake_heatmap.tif") as a, \
            rasterio.open(direct / "a_lake_heatmap.tif") as b:
        assert a.crs == b.crs and a.transform == b.transform
        assert np.allclose(a.read(1), b.read(1), atol=1e-5)
    merged = pyogrio.read_dataframe(out / "hotspots.gpkg", layer="hotspots")
    assert merged.crs.to_epsg() == 4326 and len(merged) == summary["hotspots"] > 0
    assert merged["rank"].tolist() == list(range(1, len(merged) + 1)) and (np.diff(merged["cosine"]) <= 0).all()
    assert set(merged["scene"]) <= set(dated) and set(merged["query"]) <= {"a lake", "farm fields"}
