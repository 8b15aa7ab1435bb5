"""The archive folder: its recipe, committed scenes and parts, and reading them back.

Only one process writes an archive at a time (the `rsvlm index` driver holds ARCHIVE/.lock);
workers hand their results to it. Every write is a rename of a finished file, so readers (searches
on other machines) see whole parts and whole scenes only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import shapely

from rs_vlm_app.atomic import atomic_path, write_text_atomic
from rs_vlm_app.errors import UserError

FORMAT_VERSION = 1
RECIPE_FILE = "archive.json"
FAILURES_FILE = "failures.json"
SCENES_DIR = "scenes"
SCENE_FILE = "scene.json"


@dataclass(frozen=True)
class Recipe:
    """What every embedding of an archive was made with; a query or a new scene must match it."""

    model: str                  # the encoder's weights fingerprint
    model_name: str
    embed_dim: int
    preprocess: str             # the encoder's preprocessing key and the tile preprocessing
    precision: str
    grid: str
    bands: list[int] | None = None
    min_valid: float = 0.5

    def differences(self, other: Recipe) -> list[str]:
        out = []
        if self.model != other.model or self.embed_dim != other.embed_dim:
            out.append(f"model {other.model_name} (the archive was made with {self.model_name})")
        if self.preprocess != other.preprocess or self.precision != other.precision:
            out.append(f"preprocessing {other.preprocess}/{other.precision} (the archive: "
                       f"{self.preprocess}/{self.precision})")
        for name in ("grid", "bands", "min_valid"):
            if getattr(self, name) != getattr(other, name):
                out.append(f"{name} {getattr(other, name)} (the archive: {getattr(self, name)})")
        return out


@dataclass
class SceneInfo:
    """One finished (or being finished) scene of an archive."""

    id: str
    path: str
    fingerprint: str
    width: int
    height: int
    crs_wkt: str
    transform: list[float]          # the affine's a, b, c, d, e, f
    bounds: list[float]             # EPSG:4326 west, south, east, north
    date: str | None = None
    parts: int = 1
    tiles: int = 0                  # tiles encoded (stored)
    skipped: int = 0                # tiles skipped as mostly nodata
    origin: str = ""
    seconds: float = 0.0
    committed: float = 0.0          # time.time() when the scene was complete

    @property
    def affine(self):
        from affine import Affine

        return Affine(*self.transform[:6])


@dataclass
class Part:
    """A committed block of a scene's tiles."""

    scene: SceneInfo
    index: int
    table: Path                     # GeoParquet tile table
    vectors: Path                   # .npy embeddings

    def embeddings(self) -> np.ndarray:
        return np.load(self.vectors, mmap_mode="r")


@dataclass
class Failure:
    name: str
    path: str
    message: str


@dataclass
class Archive:
    """An archive folder (see rs_vlm_app/archive/__init__.py for the layout)."""

    root: Path
    _scenes: dict[str, SceneInfo] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()

    # -- recipe --------------------------------------------------------------------------------------

    def recipe(self) -> Recipe | None:
        try:
            data = json.loads((self.root / RECIPE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the archive's {RECIPE_FILE} ({exc})", path=self.root) from None
        if data.get("format") != FORMAT_VERSION:
            raise UserError(f"archive format {data.get('format')!r} is not the one this rs-vlm reads "
                            f"({FORMAT_VERSION})", path=self.root)
        return Recipe(**data["recipe"])

    def require_recipe(self) -> Recipe:
        """The recipe of an existing archive; UserError when the folder is no archive."""
        if not self.root.is_dir():
            raise UserError("archive folder not found", path=self.root)
        recipe = self.recipe()
        if recipe is None:
            raise UserError(f"is not an archive (no {RECIPE_FILE}); make one with rsvlm index", path=self.root)
        return recipe

    def adopt(self, recipe: Recipe) -> None:
        """Write ``recipe`` into a new archive, or check an existing archive was made the same way."""
        existing = self.recipe()
        if existing is None:
            self.root.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.root / RECIPE_FILE, json.dumps(
                {"format": FORMAT_VERSION, "recipe": asdict(recipe)}, indent=1))
            return
        diffs = existing.differences(recipe)
        if diffs:
            raise UserError(f"was made with other settings; this run uses {'; '.join(diffs)}. Index into a "
                            "new archive, or repeat the archive's settings", path=self.root)

    def check_query_model(self, fingerprint: str, name: str, embed_dim: int) -> Recipe:
        """The archive's recipe, after checking a query model matches the archive's."""
        recipe = self.require_recipe()
        if fingerprint != recipe.model or embed_dim != recipe.embed_dim:
            raise UserError(f"was made with the model {recipe.model_name}; the query uses {name}. Query it "
                            "with the archive's model", path=self.root)
        return recipe

    # -- scenes --------------------------------------------------------------------------------------

    def scenes(self, refresh: bool = False) -> dict[str, SceneInfo]:
        """Every finished scene, by id."""
        if self._scenes is None or refresh:
            found = {}
            folder = self.root / SCENES_DIR
            for path in sorted(folder.glob(f"*/{SCENE_FILE}")) if folder.is_dir() else []:
                try:
                    info = SceneInfo(**json.loads(path.read_text(encoding="utf-8")))
                except (OSError, ValueError, TypeError) as exc:
                    raise UserError(f"a damaged scene record ({exc}); remove its folder and index it again",
                                    path=path) from None
                found[info.id] = info
            self._scenes = found
        return self._scenes

    def scene_folder(self, scene_id: str) -> Path:
        return self.root / SCENES_DIR / scene_id

    def part_paths(self, scene_id: str, index: int) -> tuple[Path, Path]:
        folder = self.scene_folder(scene_id)
        return folder / f"part-{index:05d}.parquet", folder / f"part-{index:05d}.npy"

    def windows_path(self, scene_id: str, index: int) -> Path:
        return windows_sidecar(self.part_paths(scene_id, index)[0])

    def part_done(self, scene_id: str, index: int) -> bool:
        table, vectors = self.part_paths(scene_id, index)
        return table.is_file() and vectors.is_file()

    def parts(self, scene_ids: list[str] | None = None) -> Iterator[Part]:
        """The parts of finished scenes (all, or those of ``scene_ids``), in scene then part order."""
        scenes = self.scenes()
        for scene_id in scene_ids if scene_ids is not None else list(scenes):
            info = scenes[scene_id]
            for index in range(info.parts):
                yield Part(info, index, *self.part_paths(scene_id, index))

    def tile_count(self) -> int:
        return sum(s.tiles for s in self.scenes().values())

    # -- writing -------------------------------------------------------------------------------------

    def commit_part(self, info: SceneInfo, index: int, windows: np.ndarray, embeddings: np.ndarray,
                    recipe: Recipe) -> None:
        """Write one block of tiles of ``info`` (its windows and embeddings) as committed files."""
        from rs_vlm_app.archive.footprints import native_footprints, to_lonlat

        windows = np.asarray(windows, dtype=np.int64).reshape(-1, 5)
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(len(windows), recipe.embed_dim)
        native = native_footprints(info.affine, windows)
        lonlat = to_lonlat(native, info.crs_wkt)
        table, vectors = self.part_paths(info.id, index)
        table.parent.mkdir(parents=True, exist_ok=True)
        for path, array in ((self.windows_path(info.id, index), windows.astype(np.int32)), (vectors, embeddings)):
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.save(handle, array)
                handle.flush()
                os.fsync(handle.fileno())
        with atomic_path(table) as tmp:
            write_tile_table(tmp, info, windows, native, lonlat, recipe)

    def commit_scene(self, info: SceneInfo) -> None:
        """The scene is complete once every part is committed: write its record last."""
        info.committed = time.time()
        write_text_atomic(self.scene_folder(info.id) / SCENE_FILE, json.dumps(asdict(info), indent=1))
        if self._scenes is not None:
            self._scenes[info.id] = info

    def write_failures(self, failures: list[Failure]) -> Path:
        path = self.root / FAILURES_FILE
        write_text_atomic(path, json.dumps([asdict(f) for f in failures], indent=1))
        return path

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Held by the one process writing this archive; a second writer gets a clear error."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise UserError("another rsvlm index is writing this archive; wait for it to finish",
                                path=self.root) from None
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def windows_sidecar(table: Path) -> Path:
    """A part's pixel windows as an int32 (N, 5) .npy beside its tile table: a ranked hit's window is
    one memory-mapped row instead of a decoded Parquet row group (archives written before the
    sidecar existed are read from the table)."""
    return table.with_name(table.stem + ".windows.npy")


def write_tile_table(path: Path, info: SceneInfo, windows: np.ndarray, native: np.ndarray, lonlat: np.ndarray,
                     recipe: Recipe) -> None:
    """One part's tiles as GeoParquet: ``geometry`` (EPSG:4326, the primary column) and
    ``footprint_native`` (the scene's CRS), with scene, fingerprint, window, scale, date, model."""
    pa, pq = pyarrow_modules()
    from pyproj import CRS

    n = len(windows)

    def repeat(value: str | None) -> pa.Array:
        return pa.array([value] * n, type=pa.string()).dictionary_encode()

    columns = {
        "scene": repeat(info.id),
        "tile": pa.array(np.arange(n, dtype=np.int32)),
        "row0": pa.array(windows[:, 0].astype(np.int32)), "row1": pa.array(windows[:, 1].astype(np.int32)),
        "col0": pa.array(windows[:, 2].astype(np.int32)), "col1": pa.array(windows[:, 3].astype(np.int32)),
        "scale": pa.array(windows[:, 4].astype(np.int32)),
        "date": repeat(info.date),
        "fingerprint": repeat(info.fingerprint),
        "model": repeat(recipe.model),
        "preprocessing": repeat(f"{recipe.preprocess};grid={recipe.grid}"),
        "geometry": pa.array(list(shapely.to_wkb(lonlat)) if n else [], type=pa.binary()),
        "footprint_native": pa.array(list(shapely.to_wkb(native)) if n else [], type=pa.binary()),
    }
    bbox = [float(v) for v in shapely.total_bounds(lonlat)] if n else None
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {"encoding": "WKB", "geometry_types": ["Polygon"], **({"bbox": bbox} if bbox else {})},
            "footprint_native": {"encoding": "WKB", "geometry_types": ["Polygon"],
                                 "crs": CRS.from_wkt(info.crs_wkt).to_json_dict()},
        },
    }
    table = pa.table(columns).replace_schema_metadata({"geo": json.dumps(geo)})
    pq.write_table(table, path, compression="zstd", row_group_size=16384)


def read_tile_table(path: Path, columns: list[str] | None = None):
    """A part's tile table (pyarrow.Table), all columns or those named."""
    _, pq = pyarrow_modules()
    return pq.read_table(path, columns=columns)


def pyarrow_modules():
    """(pyarrow, pyarrow.parquet), or a UserError saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UserError("archives need pyarrow: pip install 'rs-vlm[distributed]'") from None
    return pyarrow, pyarrow.parquet
