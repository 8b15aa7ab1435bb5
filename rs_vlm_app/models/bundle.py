"""Model bundles: catalogue models' weights in one ZIP file, for machines without internet.

``rsvlm models export NAME... -o bundle.zip`` on a connected machine (the weights must be in its
cache: `rsvlm models fetch NAME`), ``rsvlm models import bundle.zip`` on the air-gapped one. The
bundle holds ``manifest.json`` (each model's name, file, size and SHA-256) and ``models/<name>/<file>``,
stored uncompressed (weights do not compress). Import checks every checksum before it writes
anything, then places each file where the model resolver looks (rs_vlm_app.models.resolve), so a
damaged bundle leaves the cache as it was.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from rs_vlm_app import __version__
from rs_vlm_app.atomic import atomic_path
from rs_vlm_app.errors import UserError

FORMAT = "rsvlm-model-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_CHUNK = 4 << 20


@dataclass(frozen=True)
class BundledModel:
    name: str
    file: str          # the weights file's name (as the resolver expects it in the model's cache folder)
    size: int
    sha256: str
    family: str = ""
    arch: str = ""

    @property
    def member(self) -> str:
        return f"models/{self.name}/{self.file}"


def export_bundle(names: list[str], out: str | Path) -> list[BundledModel]:
    """Write the cached weights of the catalogue models ``names`` into the ZIP ``out`` (atomically)."""
    from rs_vlm_app.models.catalogue import get_entry
    from rs_vlm_app.models.resolve import find_cached

    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise UserError("the bundle must be a .zip file", path=out)
    if not names:
        raise UserError("name at least one model to export (`rsvlm models list`)")
    entries, files = [], []
    for name in dict.fromkeys(names):
        entry = get_entry(name)
        found = find_cached(entry)
        if found is None:
            raise UserError(f"model {entry.name!r} is not in this machine's cache; run `rsvlm models fetch "
                            f"{entry.name}` first (or put its weights where `rsvlm models path {entry.name}` says)")
        entries.append(entry)
        files.append(found)
    bundled = []
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for entry, path in zip(entries, files, strict=True):
            model = BundledModel(entry.name, path.name, path.stat().st_size, "", entry.family, entry.arch)
            digest = hashlib.sha256()
            with path.open("rb") as src, archive.open(model.member, "w", force_zip64=True) as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
            bundled.append(BundledModel(**{**asdict(model), "sha256": digest.hexdigest()}))
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "rs_vlm": __version__,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "models": [asdict(m) for m in bundled]}
        archive.writestr(MANIFEST, json.dumps(manifest, indent=1))
    return bundled


@dataclass(frozen=True)
class ImportedModel:
    model: BundledModel
    path: Path
    status: str  # "added", "replaced" or "unchanged"


def import_bundle(bundle: str | Path) -> list[ImportedModel]:
    """Verify every checksum of ``bundle``, then copy its weights into this machine's model cache."""
    from rs_vlm_app.models.catalogue import get_entry
    from rs_vlm_app.models.resolve import cache_folder, find_cached

    bundle = Path(bundle)
    if not bundle.is_file():
        raise UserError("file not found", path=bundle)
    try:
        archive = zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"not a model bundle: not a readable ZIP file ({exc})", path=bundle) from None
    with archive:
        models = _read_manifest(archive, bundle)
        targets = []
        for model in models:
            entry = get_entry(model.name)  # a model this version's catalogue does not know: one line
            targets.append(cache_folder(entry) / model.file)
        for model in models:  # nothing is written until every file checks out
            _copy_checked(archive, model, None, bundle)
        imported = []
        for model, target in zip(models, targets, strict=True):
            status = "added"
            if target.is_file():
                status = "unchanged" if _sha256(target) == model.sha256 else "replaced"
            if status != "unchanged":
                with atomic_path(target) as tmp:
                    _copy_checked(archive, model, tmp, bundle)
            if find_cached(get_entry(model.name)) is None:
                raise UserError(f"model {model.name!r}: {model.file} is not a file name this version looks for; "
                                "export the bundle with the same rs-vlm version", path=bundle)
            imported.append(ImportedModel(model, target, status))
    return imported


def _read_manifest(archive: zipfile.ZipFile, bundle: Path) -> list[BundledModel]:
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except KeyError:
        raise UserError(f"not a model bundle: it has no {MANIFEST} (make one with `rsvlm models export`)",
                        path=bundle) from None
    except (ValueError, zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"corrupt model bundle: {MANIFEST} cannot be read ({exc})", path=bundle) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError("not a model bundle made by `rsvlm models export`", path=bundle)
    if manifest.get("version") != FORMAT_VERSION:
        raise UserError(f"model bundle version {manifest.get('version')} is not supported (this rs-vlm reads "
                        f"version {FORMAT_VERSION})", path=bundle)
    models = []
    try:
        for item in manifest["models"]:
            model = BundledModel(**item)
            if PurePosixPath(model.file).name != model.file or model.file in ("", ".", ".."):
                raise ValueError(f"bad file name {model.file!r}")
            models.append(model)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"corrupt model bundle: bad {MANIFEST} ({exc})", path=bundle) from None
    if not models:
        raise UserError("the model bundle holds no model", path=bundle)
    return models


def _copy_checked(archive: zipfile.ZipFile, model: BundledModel, target: Path | None, bundle: Path) -> None:
    """Stream one member (into ``target``, or nowhere), checking its size and SHA-256."""
    digest, size = hashlib.sha256(), 0
    try:
        with archive.open(model.member) as src:
            dst = target.open("wb") if target is not None else None
            try:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    if dst is not None:
                        dst.write(chunk)
            finally:
                if dst is not None:
                    dst.close()
    except KeyError:
        raise UserError(f"corrupt model bundle: {model.member} is missing", path=bundle) from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UserError(f"corrupt model bundle: {model.member} cannot be read ({exc}); copy the bundle again",
                        path=bundle) from None
    if size != model.size or digest.hexdigest() != model.sha256:
        raise UserError(f"corrupt model bundle: the checksum of {model.member} does not match; copy the bundle "
                        "again", path=bundle)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
