"""Pictures of the demo's results: quick-looks, heat-map overlays, class maps, a loss curve (SVG).

Everything is drawn with OpenCV and numpy (no plotting library) at a fixed quick-look size; map
geometries are placed through the scene's transform.
"""

from __future__ import annotations

import html
from pathlib import Path

import cv2
import numpy as np
import shapely

from rs_vlm_app.atomic import atomic_path

#: Outline colours (RGB) of the truth per class.
CLASS_COLOURS = {"lake": (80, 200, 255), "field": (255, 230, 60), "road": (255, 255, 255), "building": (255, 80, 200)}
HOTSPOT_COLOUR = (0, 255, 120)


class QuickLook:
    """A scene read at ``size`` pixels on its long side, and the map-to-picture transform."""

    def __init__(self, scene: Path, size: int = 768):
        import rasterio
        from rasterio.enums import Resampling

        with rasterio.open(scene) as ds:
            scale = size / max(ds.width, ds.height)
            self.shape = (max(1, round(ds.height * scale)), max(1, round(ds.width * scale)))
            data = ds.read([1, 2, 3], out_shape=(3, *self.shape), resampling=Resampling.average)
            self.to_pixel = ~ds.transform
            self.scale = (self.shape[1] / ds.width, self.shape[0] / ds.height)
        self.rgb = np.ascontiguousarray(np.moveaxis(data, 0, 2))

    def points(self, geometry: shapely.Geometry) -> list[np.ndarray]:
        """Outline rings of a (multi)polygon in picture pixels, as int32 arrays for cv2.polylines."""
        rings = []
        polygons = getattr(geometry, "geoms", [geometry])
        for polygon in polygons:
            if polygon.is_empty or polygon.geom_type != "Polygon":
                continue
            for ring in (polygon.exterior, *polygon.interiors):
                xy = np.asarray(ring.coords)
                cols, rows = self.to_pixel * (xy[:, 0], xy[:, 1])
                pts = np.column_stack([np.asarray(cols) * self.scale[0], np.asarray(rows) * self.scale[1]])
                rings.append(np.round(pts).astype(np.int32))
        return rings

    def outline(self, image: np.ndarray, geometries, colour, thickness: int = 1) -> np.ndarray:
        for geometry in geometries:
            cv2.polylines(image, self.points(geometry), True, colour, thickness, cv2.LINE_AA)
        return image


def read_layer(gpkg: Path, layer: str) -> tuple[list[shapely.Geometry], dict[str, np.ndarray]]:
    """Geometries and fields of one GeoPackage layer (read with geopandas)."""
    from rs_vlm_app.geo.vectors import read_vector

    table = read_vector(gpkg, layer)
    fields = {name: table[name].to_numpy() for name in table.columns if name != table.geometry.name}
    return list(table.geometry.values), fields


def truth_figure(look: QuickLook, objects_gpkg: Path) -> np.ndarray:
    """The scene with every annotated object outlined in its class colour."""
    image = look.rgb.copy()
    geometries, fields = read_layer(objects_gpkg, "objects")
    for geometry, cls in zip(geometries, fields["class"], strict=True):
        look.outline(image, [geometry], CLASS_COLOURS.get(str(cls), (255, 255, 255)), 2)
    return image


def heat_figure(look: QuickLook, heatmap: Path, regions: list[shapely.Geometry],
                hotspots: list[shapely.Geometry]) -> np.ndarray:
    """The scene under the heat map (inferno colours), true regions in white, hot spots in green."""
    import rasterio

    with rasterio.open(heatmap) as ds:
        heat = ds.read(1).astype(np.float32)
        valid = heat != ds.nodata if ds.nodata is not None else np.isfinite(heat)
    heat = np.where(valid, heat, 0.0)
    heat = cv2.resize(heat, (look.shape[1], look.shape[0]), interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_INFERNO)[:, :, ::-1]
    image = np.uint8(0.45 * look.rgb + 0.55 * colours)
    look.outline(image, regions, (255, 255, 255), 1)
    look.outline(image, hotspots, HOTSPOT_COLOUR, 2)
    return image


def class_figure(classes_tif: Path, colours: list[tuple[int, int, int]], shape: tuple[int, int]) -> np.ndarray:
    """A class map in its classes' colours (nodata black)."""
    import rasterio

    with rasterio.open(classes_tif) as ds:
        index = ds.read(1)
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(colours)] = colours
    return cv2.resize(palette[index], (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def write_png(path: Path, rgb: np.ndarray) -> bytes:
    """Encode an RGB picture as PNG, write it atomically, return the bytes."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())
    return data.tobytes()


def loss_svg(losses: list[tuple[int, float]], width: int = 520, height: int = 220) -> str:
    """The training loss against the step as an inline SVG line chart."""
    if len(losses) < 2:
        return "<p>(no loss values logged)</p>"
    steps = np.array([s for s, _ in losses], float)
    values = np.array([v for _, v in losses], float)
    left, right, top, bottom = 48, 12, 12, 30
    lo, hi = float(values.min()), float(values.max())
    hi = hi if hi > lo else lo + 1.0
    xs = left + (steps - steps.min()) / max(steps.max() - steps.min(), 1) * (width - left - right)
    ys = top + (hi - values) / (hi - lo) * (height - top - bottom)
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    ticks = []
    for value in np.linspace(lo, hi, 4):
        y = top + (hi - value) / (hi - lo) * (height - top - bottom)
        ticks.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.2f}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11" '
            f'font-family="sans-serif" role="img" aria-label="{html.escape("training loss by step")}">'
            + "".join(ticks)
            + f'<polyline fill="none" stroke="#c0392b" stroke-width="2" points="{path}"/>'
            f'<text x="{left}" y="{height - 8}">step {int(steps.min())}</text>'
            f'<text x="{width - right}" y="{height - 8}" text-anchor="end">step {int(steps.max())}</text>'
            "</svg>")
