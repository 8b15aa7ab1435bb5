"""Raster foundation: what every task stands on.

- :mod:`.raster`: open anything GDAL reads, choose bands, stretch to uint8 RGB, masks, fingerprint.
- :mod:`.grid`: tile grids as data (the SeLo grid, regular grids) -> window arrays.
- :mod:`.blocks`: the block reader (big row chunks read once, tiles cut in memory, prefetch).
- :mod:`.writers`: GeoTIFF / COG and GeoPackage outputs, window footprints.

Submodules are imported explicitly (``from rs_vlm_app.geo.raster import open_raster``) so that
importing the package costs nothing.
"""
