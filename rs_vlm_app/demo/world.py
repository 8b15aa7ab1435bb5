"""A small georeferenced synthetic world with known objects, deterministic from a seed.

Lakes (blue blobs with a light shore), fields (green or yellow rectangles with furrow stripes),
roads (grey bands with a dashed centre line) and buildings (red or white roofs with shadows, in
clusters beside the roads) on a textured meadow. Objects are drawn from their own geometry, so the
picture, the per-class masks and the GeoPackage annotations agree pixel for pixel.

Coordinates: geometries are built in pixel space (x = column, y = row, pixel (r, c) covers
[c, c + 1) x [r, r + 1)), masks hold the pixels whose centre lies inside, and the annotations are
the same geometries in the scene's projected CRS (UTM, metres) through the scene's transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import shapely
from affine import Affine
from shapely import affinity

CLASSES = ("lake", "field", "road", "building")
#: The words a person would type to find each class (the demo's queries).
QUERIES = {"lake": "a lake", "field": "fields", "road": "a road", "building": "buildings"}

#: Objects per square kilometre (roads: per kilometre of scene side).
LAKES_PER_KM2 = 3.0
FIELDS_PER_KM2 = 9.0
CLUSTERS_PER_KM2 = 4.0
ROADS_PER_KM = 1.6

ROOF_COLOURS = ((168, 58, 46), (186, 74, 52), (226, 224, 216), (238, 236, 230))
FIELD_COLOURS = ((76, 142, 52), (96, 158, 60), (206, 184, 88), (218, 196, 104))


@dataclass(frozen=True)
class WorldSpec:
    """What to generate: size, ground sample distance, georeferencing and the random seed."""

    size: int = 2048                      # pixels a side
    pixel_m: float = 0.5                  # metres per pixel
    seed: int = 0
    crs: str = "EPSG:32633"               # WGS 84 / UTM zone 33N
    origin: tuple[float, float] = (431_000.0, 5_302_000.0)  # easting, northing of the upper-left corner

    @property
    def transform(self) -> Affine:
        return Affine(self.pixel_m, 0.0, self.origin[0], 0.0, -self.pixel_m, self.origin[1])

    @property
    def area_km2(self) -> float:
        return (self.size * self.pixel_m / 1000.0) ** 2


@dataclass
class WorldObject:
    """One annotated object: its class, its polygon in pixel space and its group (building cluster)."""

    cls: str
    polygon: shapely.Polygon
    group: int = -1


@dataclass
class World:
    spec: WorldSpec
    image: np.ndarray                         # (H, W, 3) uint8 RGB
    masks: np.ndarray                         # (len(CLASSES), H, W) uint8, 1 inside
    objects: list[WorldObject] = field(default_factory=list)

    def objects_of(self, cls: str) -> list[WorldObject]:
        return [o for o in self.objects if o.cls == cls]

    def regions(self, cls: str) -> list[shapely.Polygon]:
        """The areas a query for ``cls`` should find (pixel space): each object, and for buildings each
        cluster's outline (the hull of its buildings, 10 px wider), as SeLo annotates "a residential area"."""
        if cls != "building":
            return [o.polygon for o in self.objects_of(cls)]
        groups: dict[int, list[shapely.Polygon]] = {}
        for o in self.objects_of("building"):
            groups.setdefault(o.group, []).append(o.polygon)
        return [shapely.MultiPolygon(polys).convex_hull.buffer(10, join_style="mitre") for _, polys in sorted(groups.items())]

    def to_map(self, geometry: shapely.Geometry) -> shapely.Geometry:
        """A pixel-space geometry in the scene's CRS."""
        t = self.spec.transform
        return affinity.affine_transform(geometry, [t.a, t.b, t.d, t.e, t.c, t.f])


def generate_world(spec: WorldSpec) -> World:
    """Place and draw the objects of ``spec`` (same spec, same world, on every machine)."""
    rng = np.random.default_rng([spec.seed, 20240613])
    placer = _Placer(spec, rng)
    placer.roads(max(1, round(ROADS_PER_KM * spec.size * spec.pixel_m / 1000.0)))
    placer.lakes(max(1, round(LAKES_PER_KM2 * spec.area_km2)))
    placer.building_clusters(max(1, round(CLUSTERS_PER_KM2 * spec.area_km2)))
    placer.fields(max(1, round(FIELDS_PER_KM2 * spec.area_km2)))
    masks = np.stack([rasterize([o.polygon for o in placer.objects if o.cls == c], spec.size) for c in CLASSES])
    image = _Painter(spec, rng).paint(placer.objects, masks)
    return World(spec, image, masks, placer.objects)


def rasterize(polygons: list[shapely.Geometry], size: int) -> np.ndarray:
    """uint8 (size, size) mask of the pixels whose centre lies inside any of the pixel-space polygons."""
    if not polygons:
        return np.zeros((size, size), dtype=np.uint8)
    from rasterio.features import rasterize as gdal_rasterize

    return gdal_rasterize(((p, 1) for p in polygons), out_shape=(size, size), transform=Affine.identity(),
                          fill=0, dtype="uint8")


# ------------------------------------------------------------------------------------------ placing
class _Placer:
    """Draws object shapes at random and keeps those that do not collide with earlier ones."""

    def __init__(self, spec: WorldSpec, rng: np.random.Generator):
        self.spec = spec
        self.rng = rng
        self.size = spec.size
        self.scale = 0.5 / spec.pixel_m     # shapes are designed for 0.5 m pixels
        self.objects: list[WorldObject] = []
        self.road_lines: list[shapely.LineString] = []
        self.frame = shapely.box(0, 0, spec.size, spec.size)

    def _free(self, shape: shapely.Geometry, margin: float, inside: float = 0.0) -> bool:
        if inside and not self.frame.buffer(-inside).contains(shape):
            return False
        grown = shape.buffer(margin)
        return not any(grown.intersects(o.polygon) for o in self.objects)

    def roads(self, count: int) -> None:
        width = 18 * self.scale
        for i in range(count):
            for _ in range(50):
                vertical = (i % 2 == 0) == bool(self.rng.integers(2))
                a, b = self.rng.uniform(0.1, 0.9, size=2) * self.size
                mid = self.rng.uniform(0.3, 0.7) * self.size
                bend = self.rng.uniform(-0.12, 0.12) * self.size
                points = [(a, -20.0), ((a + b) / 2 + bend, mid), (b, self.size + 20.0)]
                if not vertical:
                    points = [(y, x) for x, y in points]
                line = shapely.LineString(points)
                road = line.buffer(width / 2, cap_style="flat", join_style="round").intersection(self.frame)
                if all(road.distance(other) > 150 * self.scale for other in self.road_lines) or \
                        any(line.crosses(other) for other in self.road_lines):
                    self.road_lines.append(line)
                    self.objects.append(WorldObject("road", _largest(road)))
                    break

    def lakes(self, count: int) -> None:
        for _ in range(count):
            for _ in range(200):
                radius = self.rng.uniform(60, 150) * self.scale
                cx, cy = self.rng.uniform(radius, self.size - radius, size=2)
                lake = _blob(cx, cy, radius, self.rng)
                if self._free(lake, 30 * self.scale, inside=8):
                    self.objects.append(WorldObject("lake", lake))
                    break

    def building_clusters(self, count: int) -> None:
        group = 0
        for _ in range(count):
            for _ in range(100):
                line = self.road_lines[int(self.rng.integers(len(self.road_lines)))]
                at = line.interpolate(self.rng.uniform(0.1, 0.9), normalized=True)
                ahead = line.interpolate(min(line.length, line.project(at) + 5.0))
                angle = math.degrees(math.atan2(ahead.y - at.y, ahead.x - at.x))
                side = 1 if self.rng.integers(2) else -1
                offset = self.rng.uniform(60, 110) * self.scale
                normal = math.radians(angle + 90 * side)
                cx, cy = at.x + offset * math.cos(normal), at.y + offset * math.sin(normal)
                if not self.frame.buffer(-100 * self.scale).contains(shapely.Point(cx, cy)):
                    continue
                placed = self._cluster(cx, cy, angle, group)
                if placed >= 4:
                    group += 1
                    break
                self.objects = [o for o in self.objects if o.group != group]

    def _cluster(self, cx: float, cy: float, angle: float, group: int) -> int:
        placed = 0
        wanted = int(self.rng.integers(7, 15))
        for _ in range(wanted * 8):
            if placed == wanted:
                break
            dx, dy = self.rng.normal(0, 55 * self.scale, size=2)
            w, h = self.rng.uniform(18, 34, size=2) * self.scale
            turn = angle + self.rng.choice([0.0, 90.0]) + self.rng.normal(0, 3)
            house = affinity.rotate(shapely.box(-w / 2, -h / 2, w / 2, h / 2), turn, origin=(0, 0))
            house = affinity.translate(house, cx + dx, cy + dy)
            if self._free(house, 7 * self.scale, inside=4):
                self.objects.append(WorldObject("building", house, group))
                placed += 1
        return placed

    def fields(self, count: int) -> None:
        base = self.rng.uniform(0, 180)
        for _ in range(count):
            for _ in range(300):
                w = self.rng.uniform(200, 420) * self.scale
                h = self.rng.uniform(130, 280) * self.scale
                turn = base + self.rng.choice([0.0, 90.0]) + self.rng.normal(0, 4)
                cx, cy = self.rng.uniform(0, self.size, size=2)
                plot = affinity.rotate(shapely.box(-w / 2, -h / 2, w / 2, h / 2), turn, origin=(0, 0))
                plot = affinity.translate(plot, cx, cy)
                if self._free(plot, 14 * self.scale, inside=4):
                    self.objects.append(WorldObject("field", plot))
                    break


def _blob(cx: float, cy: float, radius: float, rng: np.random.Generator) -> shapely.Polygon:
    """A star-shaped lake outline: a circle bent by a few low harmonics."""
    theta = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    r = np.ones_like(theta)
    for k in (2, 3, 4, 5):
        r += rng.uniform(0.02, 0.16) / (k - 1) ** 0.5 * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    stretch = rng.uniform(0.7, 1.0)
    xs = cx + radius * r * np.cos(theta)
    ys = cy + radius * stretch * r * np.sin(theta)
    return shapely.Polygon(np.column_stack([xs, ys])).buffer(0)


def _largest(geometry: shapely.Geometry) -> shapely.Polygon:
    if geometry.geom_type == "Polygon":
        return geometry
    return max(geometry.geoms, key=lambda g: g.area)


# ----------------------------------------------------------------------------------------- painting
class _Painter:
    """Paints the ground, then each class through its mask, with texture and noise."""

    def __init__(self, spec: WorldSpec, rng: np.random.Generator):
        self.spec = spec
        self.rng = rng
        self.size = spec.size

    def smooth_noise(self, cells: int) -> np.ndarray:
        """Noise in [-1, 1] varying over about size / cells pixels."""
        grid = self.rng.uniform(-1, 1, size=(cells + 3, cells + 3)).astype(np.float32)
        big = cv2.resize(grid, (self.size + 3 * self.size // cells,) * 2, interpolation=cv2.INTER_CUBIC)
        off = self.size // cells
        return np.clip(big[off: off + self.size, off: off + self.size], -1, 1)

    def paint(self, objects: list[WorldObject], masks: np.ndarray) -> np.ndarray:
        n = self.size
        meadow = np.array([118, 128, 74], np.float32)
        dry = np.array([152, 142, 98], np.float32)
        mix = (self.smooth_noise(6) * 0.5 + 0.5)[..., None]
        image = meadow * (1 - mix) + dry * mix
        image += (self.smooth_noise(max(8, n // 24)) * 10)[..., None]
        self._trees(image, masks)
        self._fields(image, objects)
        self._lakes(image, masks[CLASSES.index("lake")])
        self._roads(image, masks[CLASSES.index("road")])
        self._buildings(image, objects)
        image += self.rng.normal(0, 4.0, size=image.shape).astype(np.float32)
        return np.clip(image, 0, 255).astype(np.uint8)

    def _trees(self, image: np.ndarray, masks: np.ndarray) -> None:
        """Dark tree crowns scattered on open ground (not annotated: part of the background)."""
        n = self.size
        count = int(n * n / 9000)
        crowns = np.zeros((n, n), np.uint8)
        for x, y, r in zip(self.rng.uniform(0, n, count), self.rng.uniform(0, n, count),
                           self.rng.uniform(3, 8, count), strict=True):
            cv2.circle(crowns, (int(x), int(y)), int(r), 1, -1)
        crowns &= (masks.max(axis=0) == 0).astype(np.uint8)
        image[crowns.astype(bool)] = (58, 78, 44)

    def _fields(self, image: np.ndarray, objects: list[WorldObject]) -> None:
        yy, xx = np.mgrid[0: self.size, 0: self.size].astype(np.float32)
        for o in objects:
            if o.cls != "field":
                continue
            x0, y0, x1, y1 = (int(v) for v in o.polygon.bounds)
            x0, y0 = max(x0 - 1, 0), max(y0 - 1, 0)
            x1, y1 = min(x1 + 2, self.size), min(y1 + 2, self.size)
            local = _local_mask(o.polygon, x0, y0, x1, y1).astype(bool)
            colour = np.array(FIELD_COLOURS[int(self.rng.integers(len(FIELD_COLOURS)))], np.float32)
            ring = np.asarray(o.polygon.exterior.coords)
            edge = ring[1] - ring[0]
            angle = math.atan2(edge[1], edge[0])
            period = self.rng.uniform(7, 12)
            along = xx[y0:y1, x0:x1] * math.sin(angle) - yy[y0:y1, x0:x1] * math.cos(angle)
            stripes = np.sin(2 * np.pi * along / period)[..., None] * 14
            patch = image[y0:y1, x0:x1]
            patch[local] = (colour + stripes + self.rng.normal(0, 3, size=3))[local]

    def _lakes(self, image: np.ndarray, mask: np.ndarray) -> None:
        if not mask.any():
            return
        depth = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
        deep = np.array([28, 58, 104], np.float32)
        shallow = np.array([62, 108, 140], np.float32)
        t = np.clip(depth / 25.0, 0, 1)[..., None]
        water = shallow * (1 - t) + deep * t + (self.smooth_noise(max(8, self.size // 64)) * 6)[..., None]
        inside = mask.astype(bool)
        image[inside] = water[inside]
        shore = (cv2.dilate(mask, np.ones((7, 7), np.uint8)) > 0) & ~inside
        image[shore] = image[shore] * 0.4 + np.array([196, 186, 150], np.float32) * 0.6

    def _roads(self, image: np.ndarray, mask: np.ndarray) -> None:
        if not mask.any():
            return
        inside = mask.astype(bool)
        asphalt = 118 + self.smooth_noise(max(8, self.size // 16)) * 8
        image[inside] = np.stack([asphalt] * 3, axis=-1)[inside] + np.array([0, 2, 6], np.float32)
        centre = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
        ridge = (centre >= centre.max() * 0.9) & inside if centre.max() else inside & False
        # dashes: ridge pixels of alternating 10-pixel blocks along both axes
        yy, xx = np.nonzero(ridge)
        dash = ((xx + yy) // 10) % 2 == 0
        image[yy[dash], xx[dash]] = (214, 214, 204)

    def _buildings(self, image: np.ndarray, objects: list[WorldObject]) -> None:
        houses = [o for o in objects if o.cls == "building"]
        offset = 3 * 0.5 / self.spec.pixel_m
        shadow = rasterize([affinity.translate(o.polygon, offset, offset) for o in houses], self.size)
        image[shadow.astype(bool)] *= 0.45
        for o in houses:
            x0, y0, x1, y1 = (int(v) for v in o.polygon.bounds)
            x0, y0 = max(x0 - 1, 0), max(y0 - 1, 0)
            x1, y1 = min(x1 + 2, self.size), min(y1 + 2, self.size)
            local = _local_mask(o.polygon, x0, y0, x1, y1).astype(bool)
            roof = np.array(ROOF_COLOURS[int(self.rng.integers(len(ROOF_COLOURS)))], np.float32)
            patch = image[y0:y1, x0:x1]
            patch[local] = roof + self.rng.normal(0, 3, size=3)


def _local_mask(polygon: shapely.Polygon, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """The polygon's mask over pixels [y0:y1, x0:x1] (same pixel-centre rule as :func:`rasterize`)."""
    from rasterio.features import rasterize as gdal_rasterize

    return gdal_rasterize([(polygon, 1)], out_shape=(y1 - y0, x1 - x0),
                          transform=Affine.translation(x0, y0), fill=0, dtype="uint8")


# ------------------------------------------------------------------------------------------ writing
def write_world(world: World, folder: Path, stem: str) -> dict[str, Path]:
    """Write ``STEM.tif`` (RGB GeoTIFF), ``STEM_objects.gpkg`` (layers objects and regions) and
    ``STEM_masks.tif`` (one uint8 band per class) into ``folder``, each atomically."""
    from rs_vlm_app.atomic import write_text_atomic
    from rs_vlm_app.geo.writers import VectorLayer, write_geotiff, write_gpkg

    spec = world.spec
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"scene": folder / f"{stem}.tif", "objects": folder / f"{stem}_objects.gpkg",
             "masks": folder / f"{stem}_masks.tif", "spec": folder / f"{stem}.json"}
    write_geotiff(paths["scene"], np.moveaxis(world.image, 2, 0), crs=spec.crs, transform=spec.transform,
                  band_descriptions=["red", "green", "blue"],
                  tags={"RSVLM_DEMO_SEED": str(spec.seed), "CONTENT": "rs-vlm synthetic demo world"})
    write_geotiff(paths["masks"], world.masks, crs=spec.crs, transform=spec.transform, nodata=None,
                  band_descriptions=list(CLASSES), overviews=False)
    objects = world.objects
    region_rows = [(cls, QUERIES[cls], world.to_map(r)) for cls in CLASSES for r in world.regions(cls)]
    write_gpkg(paths["objects"], [
        VectorLayer("objects", [world.to_map(o.polygon) for o in objects],
                    {"id": np.arange(1, len(objects) + 1), "class": [o.cls for o in objects],
                     "cluster": np.array([o.group for o in objects]),
                     "area_m2": np.array([o.polygon.area * spec.pixel_m ** 2 for o in objects])},
                    "Polygon"),
        VectorLayer("regions", [g for _, _, g in region_rows],
                    {"class": [c for c, _, _ in region_rows], "query": [q for _, q, _ in region_rows]},
                    "Polygon"),
    ], crs=spec.crs)
    import json

    write_text_atomic(paths["spec"], json.dumps({
        "size": spec.size, "pixel_m": spec.pixel_m, "seed": spec.seed, "crs": spec.crs,
        "origin": list(spec.origin), "classes": list(CLASSES),
        "counts": {c: len(world.objects_of(c)) for c in CLASSES},
    }, indent=1))
    return paths
