"""Exports of a built dataset: open_clip CSV, WebDataset tar shards, JSON Lines with every perspective.

Only captions that passed the quality stage are exported: ``keep`` always, ``flag`` unless
``include_flagged`` is off, ``drop`` never. Everything streams from the manifest one image at a time,
and every output is written atomically (a half-written export never appears under its name).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rs_vlm_app.atomic import atomic_dir, atomic_path
from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.datasetdir import main_manifest
from rs_vlm_app.mpgi.imagefiles import ImageReadError, encode, load_rgb
from rs_vlm_app.mpgi.manifest import ImageRow, Manifest
from rs_vlm_app.mpgi.plan import CAPTION_PREFIX, PERSPECTIVE_PREFIX, RELAY
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled

log = logging.getLogger(__name__)

FORMATS = ("csv", "wds", "jsonl")
DEFAULT_NAMES = {"csv": "captions.csv", "wds": "wds", "jsonl": "captions.jsonl"}
_WDS_IMAGE_TYPES = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


@dataclass
class ExportSummary:
    format: str
    output: str
    images: int = 0
    captions: int = 0
    files: int = 1
    images_without_captions: int = 0
    unchecked_captions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Caption:
    slot: str
    text: str
    verdict: str | None
    reasons: list[dict[str, str]]
    clip_score: float | None


def export_dataset(target: Path, fmt: str, *, output: Path | None = None, include_flagged: bool = True,
                   relative_to: Path | None = None, csv_separator: str = ",", samples_per_shard: int = 1000,
                   wds_layout: str = "per-caption", reporter: Reporter | None = None) -> ExportSummary:
    """Write the dataset at ``target`` (folder or manifest) in format ``fmt``; returns what was written."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r} (choose {', '.join(FORMATS)})")
    if wds_layout not in ("per-caption", "per-image"):
        raise UserError(f"unknown WebDataset layout {wds_layout!r} (choose per-caption or per-image)")
    if samples_per_shard < 1:
        raise UserError("--samples-per-shard must be at least 1")
    manifest_path = main_manifest(target)
    folder = manifest_path.parent
    output = output or folder / "export" / DEFAULT_NAMES[fmt]
    _check_output(output, fmt)
    reporter = reporter or NullReporter()
    with Manifest(manifest_path, readonly=True) as manifest:
        summary = ExportSummary(fmt, str(output))
        summary.unchecked_captions = int(manifest.db.execute(
            "SELECT COUNT(*) FROM outputs WHERE stage LIKE ? AND verdict IS NULL", (CAPTION_PREFIX + "%",)).fetchone()[0])
        order = {stage: i for i, stage in enumerate(manifest.get_meta("stages") or [])}
        accepted = {"keep", "flag"} if include_flagged else {"keep"}
        rows = _rows(manifest, order, accepted if fmt != "jsonl" else None, reporter)
        if fmt == "csv":
            _write_csv(rows, output, summary, relative_to, csv_separator)
        elif fmt == "jsonl":
            _write_jsonl(rows, output, summary, relative_to, accepted, manifest.get_meta("stage_models") or {})
        else:
            _write_wds(rows, output, summary, samples_per_shard, wds_layout)
    if summary.unchecked_captions:
        log.warning("%d captions have not been through the quality checks yet and were left out; run the build "
                    "again to finish it", summary.unchecked_captions)
    return summary


def _check_output(output: Path, fmt: str) -> None:
    """Never replace something that is not an earlier export of the same kind."""
    if fmt == "wds":
        if output.is_file():
            raise UserError("is a file; a WebDataset export is a folder of tar shards", path=output)
        if output.is_dir():
            strangers = [p.name for p in output.iterdir() if not (p.name.startswith("shard-") and p.suffix == ".tar")]
            if strangers:
                raise UserError(f"exists and holds other files ({strangers[0]}, ...); choose another --output", path=output)
    elif output.is_dir():
        raise UserError("is a folder; give a file name for the export", path=output)


def _rows(manifest: Manifest, order: dict[str, int], accepted: set[str] | None,
          reporter: Reporter) -> Iterator[tuple[ImageRow, dict[str, str], list[Caption]]]:
    """Each image with its description outputs and its exportable captions (all, for ``accepted`` None)."""
    total = manifest.image_count()
    done = 0
    for row in manifest.iter_images():
        outputs = {}
        captions = []
        for stage, text, verdict, reasons, score in manifest.db.execute(
                "SELECT stage, text, verdict, reasons, clip_score FROM outputs WHERE image_id = ?", (row.id,)):
            if not stage.startswith(CAPTION_PREFIX):
                outputs[stage] = text
            elif verdict is not None and (accepted is None or verdict in accepted):
                captions.append(Caption(stage[len(CAPTION_PREFIX):], text, verdict, json.loads(reasons or "[]"), score))
        captions.sort(key=lambda c: order.get(CAPTION_PREFIX + c.slot, len(order)))
        yield row, outputs, captions
        done += 1
        if done % 500 == 0:
            reporter.progress("export", done, total)
            check_cancelled(reporter)
    reporter.progress("export", done, total)


def _filepath(row: ImageRow, relative_to: Path | None) -> str:
    path = row.record.path
    if relative_to is None:
        return str(path)
    return os.path.relpath(path, relative_to)


def _write_csv(rows, output: Path, summary: ExportSummary, relative_to: Path | None, separator: str) -> None:
    with atomic_path(output) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=separator)
        writer.writerow(["filepath", "caption"])
        for row, _, captions in rows:
            if not captions:
                summary.images_without_captions += 1
                continue
            summary.images += 1
            for caption in captions:
                writer.writerow([_filepath(row, relative_to), caption.text])
                summary.captions += 1


def _write_jsonl(rows, output: Path, summary: ExportSummary, relative_to: Path | None, accepted: set[str],
                 writers: dict[str, dict[str, str]]) -> None:
    with atomic_path(output) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row, outputs, captions in rows:
            record = row.record
            exported = [c for c in captions if c.verdict in accepted]
            if exported:
                summary.images += 1
                summary.captions += len(exported)
            else:
                summary.images_without_captions += 1
            counts: dict[str, int] = {}
            for box in record.objects or []:
                counts[box.label] = counts.get(box.label, 0) + 1
            line = {
                "key": record.key,
                "filepath": _filepath(row, relative_to),
                "source": record.source,
                "width": record.width,
                "height": record.height,
                "scene_class": record.scene_class,
                "object_counts": counts if record.objects is not None else None,
                "metadata": record.metadata,
                "footprint": record.footprint,
                "facts": row.facts,
                "relay": relay_result(outputs),
                "relay_chain": [outputs[s] for s in relay_stages(outputs)],
                "perspectives": {s[len(PERSPECTIVE_PREFIX):]: t for s, t in sorted(outputs.items())
                                 if s.startswith(PERSPECTIVE_PREFIX)},
                "captions": [{"slot": c.slot, "text": c.text, "verdict": c.verdict, "exported": c.verdict in accepted,
                              "reasons": c.reasons, "clip_score": c.clip_score} for c in captions],
                "written_by": {s: f"{w['backend']} ({w['model']})" for s, w in writers.items()
                               if s in outputs or s[len(CAPTION_PREFIX):] in {c.slot for c in captions}},
            }
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def relay_stages(outputs: dict[str, str]) -> list[str]:
    """The relay steps an image has, in chain order: ``relay``, ``relay:2``, ..."""
    steps = [s for s in outputs if s == RELAY or (s.startswith(RELAY + ":") and s[len(RELAY) + 1:].isdigit())]
    return sorted(steps, key=lambda s: 1 if s == RELAY else int(s.split(":")[1]))


def relay_result(outputs: dict[str, str]) -> str | None:
    """The relay's description: the last step of its chain."""
    steps = relay_stages(outputs)
    return outputs[steps[-1]] if steps else None


def _write_wds(rows, output: Path, summary: ExportSummary, per_shard: int, layout: str) -> None:
    with atomic_dir(output) as tmp:
        writer = _ShardWriter(tmp, per_shard)
        try:
            for row, _outputs, captions in rows:
                if not captions:
                    summary.images_without_captions += 1
                    continue
                try:
                    image_bytes, image_ext = _image_payload(row)
                except ImageReadError as exc:
                    log.warning("%s: left out of the WebDataset export (%s)", row.record.path, exc)
                    continue
                summary.images += 1
                base = f"{row.id:09d}"
                info = {"key": row.record.key, "filepath": str(row.record.path), "source": row.record.source,
                        "scene_class": row.record.scene_class, "footprint": row.record.footprint, "facts": row.facts}
                if layout == "per-caption":
                    for caption in captions:
                        meta = {**info, "slot": caption.slot, "verdict": caption.verdict}
                        writer.write(f"{base}_{caption.slot}", {image_ext: image_bytes,
                                                                "txt": caption.text.encode("utf-8"),
                                                                "json": json.dumps(meta, ensure_ascii=False).encode()})
                        summary.captions += 1
                else:
                    meta = {**info, "captions": {c.slot: c.text for c in captions}}
                    writer.write(base, {image_ext: image_bytes,
                                        "txt": "\n".join(c.text for c in captions).encode("utf-8"),
                                        "json": json.dumps(meta, ensure_ascii=False).encode()})
                    summary.captions += len(captions)
        finally:
            writer.close()
        summary.files = writer.shards


def _image_payload(row: ImageRow) -> tuple[bytes, str]:
    """The image as a WebDataset member: the file itself if loaders decode it, else an RGB PNG."""
    path = row.record.path
    kind = _WDS_IMAGE_TYPES.get(path.suffix.lower())
    if kind is not None:
        try:
            return path.read_bytes(), kind
        except OSError as exc:
            raise ImageReadError(exc.strerror or str(exc)) from None
    picture = load_rgb(path)
    return encode(picture, "png").data, "png"


class _ShardWriter:
    """Tar shards ``shard-000000.tar`` ... of at most ``per_shard`` samples, deterministic member headers."""

    def __init__(self, folder: Path, per_shard: int):
        self.folder = folder
        self.per_shard = per_shard
        self.shards = 0
        self._tar: tarfile.TarFile | None = None
        self._count = 0

    def write(self, key: str, members: dict[str, bytes]) -> None:
        if self._tar is None or self._count >= self.per_shard:
            self.close()
            self._tar = tarfile.open(  # noqa: SIM115 - closed by close()
                self.folder / f"shard-{self.shards:06d}.tar", "w", format=tarfile.USTAR_FORMAT)
            self.shards += 1
            self._count = 0
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
