"""Archives: every tile of thousands of scenes, encoded once, searched in one query.

An archive is a folder (local disk, NFS/SMB share, or an object store mounted as a folder) that
needs no server::

    ARCHIVE/archive.json                    model and tile recipe every embedding was made with
    ARCHIVE/scenes/<id>/scene.json          one finished scene: path, fingerprint, CRS, date, parts
    ARCHIVE/scenes/<id>/part-00000.parquet  its tiles (GeoParquet: EPSG:4326 footprint + native one)
    ARCHIVE/scenes/<id>/part-00000.npy      their embeddings, float32 (N, D), memory-mapped on read
    ARCHIVE/scenes/<id>/part-00000.windows.npy  their pixel windows, int32 (N, 5)
    ARCHIVE/index/                          FAISS IVF-PQ index once the archive is large
    ARCHIVE/failures.json                   scenes the last run could not index, and why

Why this store (and not LanceDB): each unit of work (a scene, or a block of a huge scene's tiles)
is committed as immutable files renamed into place, so a finished unit is never lost nor written
twice, resuming is "skip what is there", and readers never see half a scene, without a lock or a
transaction log. The tile tables are GeoParquet 1.1, which geopandas, DuckDB and GDAL builds with
the Parquet driver (hence QGIS) read as they are; embeddings are plain .npy, so exact search streams scene by scene in constant memory and
the exact re-rank of approximate hits reads only the candidate rows. pyarrow + faiss-cpu are a
third of LanceDB + pylance's download and work offline.

Modules: inputs (what to index), store (the folder), units (the unit of work and its encoding),
engines / ray_engine (who runs the units), indexer (rsvlm index), filters (--where, --aoi),
ann (approximate search), search and localize (questions asked of an archive).
"""
