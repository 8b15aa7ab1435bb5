"""The model catalogue (resources/models.toml) as typed, validated data.

Standard library only: `rsvlm models list` and argument checks must not pay for importing torch.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Literal

from rs_vlm_app.errors import UserError

Family = Literal["clip", "coca"]
FAMILIES: tuple[str, ...] = ("clip", "coca")

#: OpenAI CLIP's normalisation, used by every catalogue model unless an entry says otherwise.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face repository."""

    repo: str
    file: str
    revision: str | None = None

    @property
    def filename(self) -> str:
        return PurePosixPath(self.file).name

    def describe(self) -> str:
        return f"https://huggingface.co/{self.repo}/blob/{self.revision or 'main'}/{self.file}"


@dataclass(frozen=True)
class UrlFile:
    """A file at a URL; ``archive_member`` names the checkpoint inside a downloaded .zip."""

    url: str
    file: str
    archive_member: str | None = None
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return self.file

    def describe(self) -> str:
        inside = f" ({self.archive_member} inside the archive)" if self.archive_member else ""
        return f"{self.url}{inside}"


@dataclass(frozen=True)
class OpenClipPretrained:
    """Weights from open_clip's pretrained registry (``tag`` for the entry's architecture).

    ``hf_hub`` repeats the registry's "org/repo/" so the cache can be checked without importing
    open_clip; None means "ask open_clip".
    """

    tag: str
    hf_hub: str | None = None

    @property
    def filename(self) -> str:
        # open_clip's Hugging Face exports; the .bin twin is accepted too (resolve.candidate_filenames).
        return "open_clip_model.safetensors"

    def describe(self) -> str:
        return f"open_clip pretrained tag {self.tag!r}"


@dataclass(frozen=True)
class UserFile:
    """Weights the user obtains themselves (no public direct download)."""

    file: str
    hint: str = ""

    @property
    def filename(self) -> str:
        return self.file

    def describe(self) -> str:
        return self.hint or "a file you supply"


Source = HubFile | UrlFile | OpenClipPretrained | UserFile


@dataclass(frozen=True)
class ModelEntry:
    """One known checkpoint: what it is, how open_clip builds it, where its weights come from."""

    name: str
    family: Family
    arch: str
    quick_gelu: bool
    source: Source
    description: str
    paper: str
    license: str
    default: bool = False
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


def default_catalogue_path() -> Path:
    from rs_vlm_app.resources import resource

    return resource("models.toml")


def load_catalogue(path: Path | None = None) -> dict[str, ModelEntry]:
    """Read and validate a catalogue file (the shipped one by default); UserError if it is malformed."""
    if path is None:
        return dict(_shipped_catalogue())
    return _load(Path(path))


@cache
def _shipped_catalogue() -> tuple[tuple[str, ModelEntry], ...]:
    return tuple(_load(default_catalogue_path()).items())


def _load(path: Path) -> dict[str, ModelEntry]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("model catalogue not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the model catalogue: {exc}", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"not a valid TOML model catalogue: {exc}", path=path) from None
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise UserError("model catalogue has no [models.NAME] tables", path=path)
    entries = {name: _entry(name, table, path) for name, table in models.items()}
    for family in FAMILIES:
        defaults = [e.name for e in entries.values() if e.family == family and e.default]
        if len(defaults) > 1:
            raise UserError(f"model catalogue marks several {family} models as default: {', '.join(defaults)}",
                            path=path)
    return entries


_ENTRY_KEYS = {"family", "arch", "quick_gelu", "source", "description", "paper", "license", "default", "mean", "std"}
_SOURCE_KEYS = {
    "hf": ({"repo", "file"}, {"revision"}),
    "url": ({"url", "file"}, {"archive_member", "sha256"}),
    "open_clip": ({"tag"}, {"hf_hub"}),
    "user": ({"file"}, {"hint"}),
}


def _entry(name: str, table: object, path: Path) -> ModelEntry:
    def bad(problem: str) -> UserError:
        return UserError(f"model catalogue entry {name!r}: {problem}", path=path)

    if not _NAME.match(name):
        raise bad("names use lower-case letters, digits, '.', '_' and '-'")
    if not isinstance(table, dict):
        raise bad("must be a table")
    unknown = set(table) - _ENTRY_KEYS
    if unknown:
        raise bad(f"unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("family", "arch", "quick_gelu", "source", "description", "paper", "license"):
        if key not in table:
            raise bad(f"missing {key!r}")
    family = table["family"]
    if family not in FAMILIES:
        raise bad(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    for key in ("arch", "description", "paper", "license"):
        if not isinstance(table[key], str) or not table[key].strip():
            raise bad(f"{key!r} must be a non-empty string")
    for key in ("quick_gelu", "default"):
        if key in table and not isinstance(table[key], bool):
            raise bad(f"{key!r} must be true or false")
    mean = _triple(table.get("mean"), "mean", bad)
    std = _triple(table.get("std"), "std", bad)
    if std is not None and min(std) <= 0:
        raise bad("'std' values must be positive")
    return ModelEntry(
        name=name,
        family=family,
        arch=table["arch"].strip(),
        quick_gelu=table["quick_gelu"],
        source=_source(table["source"], bad),
        description=table["description"].strip(),
        paper=table["paper"].strip(),
        license=table["license"].strip(),
        default=table.get("default", False),
        mean=mean,
        std=std,
    )


def _triple(value, key, bad):
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        raise bad(f"{key!r} must be a list of three numbers")
    return tuple(float(v) for v in value)


def _source(table: object, bad) -> Source:
    if not isinstance(table, dict):
        raise bad("'source' must be a table such as { kind = \"hf\", repo = ..., file = ... }")
    kind = table.get("kind")
    if kind not in _SOURCE_KEYS:
        raise bad(f"source kind must be one of {', '.join(_SOURCE_KEYS)}, not {kind!r}")
    required, optional = _SOURCE_KEYS[kind]
    missing = required - set(table)
    if missing:
        raise bad(f"{kind} source needs {', '.join(sorted(missing))}")
    unknown = set(table) - required - optional - {"kind"}
    if unknown:
        raise bad(f"{kind} source has unknown key(s) {', '.join(sorted(unknown))}")
    values = {k: v for k, v in table.items() if k != "kind"}
    for key, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise bad(f"source {key!r} must be a non-empty string")
    file = values.get("file")
    if file is not None and kind != "hf" and ("/" in file or "\\" in file or file in (".", "..")):
        raise bad("source 'file' is a plain file name (it names the file in the model cache)")
    if kind == "hf":
        return HubFile(repo=values["repo"], file=values["file"], revision=values.get("revision"))
    if kind == "url":
        if not values["url"].startswith(("https://", "http://", "file://")):
            raise bad("source 'url' must be an http(s):// or file:// URL")
        return UrlFile(url=values["url"], file=values["file"], archive_member=values.get("archive_member"),
                       sha256=values.get("sha256"))
    if kind == "open_clip":
        return OpenClipPretrained(tag=values["tag"], hf_hub=values.get("hf_hub"))
    return UserFile(file=values["file"], hint=values.get("hint", ""))


def get_entry(name: str, catalogue: dict[str, ModelEntry] | None = None) -> ModelEntry:
    """The catalogue entry called ``name``; a UserError listing close matches when there is none."""
    entries = load_catalogue() if catalogue is None else catalogue
    key = name.strip().lower()
    if key in entries:
        return entries[key]
    partial = [n for n in entries if key and key in n]  # "georsclip", "l-14"
    close = list(dict.fromkeys(partial + difflib.get_close_matches(key, list(entries), n=4, cutoff=0.5)))[:4]
    hint = f"did you mean {', '.join(close)}?" if close else "run `rsvlm models list` to see them"
    raise UserError(f"unknown model {name!r}; {hint} (or give a checkpoint file with its arch)")


def default_entry(family: str = "clip", catalogue: dict[str, ModelEntry] | None = None) -> ModelEntry:
    """The catalogue's default model of ``family`` ("clip" or "coca")."""
    entries = load_catalogue() if catalogue is None else catalogue
    for entry in entries.values():
        if entry.family == family and entry.default:
            return entry
    raise UserError(f"the model catalogue has no default {family} model; name one")
