"""Sources of images and annotations: class folders, COCO JSON, DOTA / DIOR text labels.

Each reader is a generator of :class:`~rs_vlm_app.mpgi.records.SourceItem` (an image and what its
annotations say) and :class:`~rs_vlm_app.mpgi.records.SourceIssue` (bad input, one line each). They
stream: a folder of 200K images is never listed whole in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

from rs_vlm_app.mpgi.config import CocoSource, DotaSource, FolderSource, Source, source_name
from rs_vlm_app.mpgi.records import SourceIssue, SourceItem


def iter_source(source: Source) -> Iterator[SourceItem | SourceIssue]:
    """The items of one configured source, in a stable order."""
    name = source_name(source)
    if isinstance(source, FolderSource):
        from rs_vlm_app.mpgi.sources.folders import iter_folder

        return iter_folder(source, name)
    if isinstance(source, CocoSource):
        from rs_vlm_app.mpgi.sources.coco import iter_coco

        return iter_coco(source, name)
    if isinstance(source, DotaSource):
        from rs_vlm_app.mpgi.sources.dota import iter_dota

        return iter_dota(source, name)
    raise TypeError(f"unknown source {source!r}")
