"""The synthetic world: georeferenced, deterministic, and its annotations match its pixels."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.features import rasterize

from rs_vlm_app.demo.world import CLASSES, QUERIES, WorldSpec, generate_world, write_world

SPEC = WorldSpec(size=768, pixel_m=0.5, seed=3)


@pytest.fixture(scope="module")
def world():
    return generate_world(SPEC)


@pytest.fixture(scope="module")
def written(world, tmp_path_factory):
    return write_world(world, tmp_path_factory.mktemp("world"), "scene")


def read_objects(gpkg, layer="objects"):
    from pyogrio.raw import read

    meta, _, geometry, values = read(str(gpkg), layer=layer)
    return meta, [shapely.from_wkb(g) for g in geometry], dict(zip(meta["fields"], values, strict=True))


def test_scene_is_georeferenced_in_utm(written):
    with rasterio.open(written["scene"]) as ds:
        assert ds.crs.to_epsg() == 32633
        assert (ds.width, ds.height, ds.count, ds.dtypes[0]) == (768, 768, 3, "uint8")
        assert ds.transform == SPEC.transform
        assert ds.bounds.left == pytest.approx(431_000.0) and ds.bounds.top == pytest.approx(5_302_000.0)
        assert ds.bounds.right == pytest.approx(431_000.0 + 768 * 0.5)
    with rasterio.open(written["masks"]) as ds:
        assert ds.crs.to_epsg() == 32633 and ds.transform == SPEC.transform
        assert list(ds.descriptions) == list(CLASSES)


def test_every_class_is_present(world):
    for cls in CLASSES:
        assert world.objects_of(cls), cls
        assert world.masks[CLASSES.index(cls)].sum() > 100


def test_annotation_geometry_coincides_with_mask_pixels(written):
    """Rasterizing the GeoPackage's map geometries on the scene's grid gives the mask bands back."""
    meta, geometries, fields = read_objects(written["objects"])
    assert meta["crs"] == "EPSG:32633"
    with rasterio.open(written["masks"]) as ds:
        masks = ds.read()
        transform = ds.transform
    for index, cls in enumerate(CLASSES):
        shapes = [(g, 1) for g, c in zip(geometries, fields["class"], strict=True) if c == cls]
        burned = rasterize(shapes, out_shape=masks.shape[1:], transform=transform, fill=0, dtype="uint8")
        differing = np.count_nonzero(burned != masks[index])
        # pixel centres lying exactly on an outline may fall either way after the map transform
        assert differing <= 0.002 * max(1, masks[index].sum()), (cls, differing)


def test_objects_do_not_overlap(world):
    assert world.masks.sum(axis=0).max() == 1


def test_pixels_look_like_their_class(world):
    """The picture shows each class where its mask is: blue water, grey roads, red or white roofs."""
    image = world.image.astype(np.float32)
    r, g, b = (image[..., i] for i in range(3))
    lake = world.masks[CLASSES.index("lake")].astype(bool)
    assert (b[lake] - r[lake]).mean() > 40
    road = world.masks[CLASSES.index("road")].astype(bool)
    assert abs((r[road] - b[road]).mean()) < 15 and 90 < g[road].mean() < 160
    building = world.masks[CLASSES.index("building")].astype(bool)
    roofs = image[building]
    red = (roofs[:, 0] - roofs[:, 1]) > 60
    white = roofs.min(axis=1) > 190
    assert (red | white).mean() > 0.95
    field = world.masks[CLASSES.index("field")].astype(bool)
    open_land = world.masks.sum(axis=0) == 0
    assert abs(image[field].mean(axis=0) - image[open_land].mean(axis=0)).max() > 20


def test_same_seed_same_world_other_seed_other_world(world):
    again = generate_world(SPEC)
    assert np.array_equal(again.image, world.image)
    assert [o.polygon.wkt for o in again.objects] == [o.polygon.wkt for o in world.objects]
    other = generate_world(WorldSpec(size=768, seed=4))
    assert not np.array_equal(other.image, world.image)


def test_regions_layer_holds_each_query_area(written, world):
    _, geometries, fields = read_objects(written["objects"], "regions")
    for cls in CLASSES:
        in_layer = [g for g, q in zip(geometries, fields["query"], strict=True) if q == QUERIES[cls]]
        assert len(in_layer) == len(world.regions(cls))
    # a building cluster's region holds all its buildings
    cluster = world.regions("building")[0]
    members = [o.polygon for o in world.objects_of("building") if o.group == 0]
    assert all(cluster.contains(p) for p in members)
