"""The dataset build configuration: typed, validated, JSON-serialisable.

A YAML file (``rsvlm dataset build CONFIG.yaml``) or a dict (a job spec from the GUI or the QGIS
plugin) becomes a :class:`BuildConfig` through :func:`load_config` / :meth:`BuildConfig.from_dict`.
Every mistake is a one-line :class:`~rs_vlm_app.errors.UserError` naming the file and the key.
:meth:`BuildConfig.to_dict` gives plain JSON data that :meth:`BuildConfig.from_dict` reads back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rs_vlm_app.errors import UserError

Action = Literal["drop", "flag", "off"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".jp2")


# ----------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class FolderSource:
    """Images in class folders, the AID / RESISC45 / EuroSAT layout: ``root/<class>/<image>``.

    Images directly under ``root`` have no scene class.
    """

    root: Path
    type: Literal["folder"] = "folder"
    name: str = ""
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    metadata: Path | None = None
    class_names: dict[str, str] = field(default_factory=dict)
    limit: int | None = None


@dataclass(frozen=True)
class CocoSource:
    """A COCO JSON file with detection boxes; ``file_name`` is relative to ``images``."""

    annotations: Path
    images: Path
    type: Literal["coco"] = "coco"
    name: str = ""
    metadata: Path | None = None
    class_names: dict[str, str] = field(default_factory=dict)
    scene_class: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class DotaSource:
    """DOTA / DIOR style text labels: ``labels/<stem>.txt`` describes ``images/<stem>.<ext>``.

    A line holds an oriented box (8 coordinates and a class, optionally a difficulty flag) or a plain
    box (4 coordinates ``xmin ymin xmax ymax`` and a class, the class first or last).
    """

    labels: Path
    images: Path
    type: Literal["dota"] = "dota"
    name: str = ""
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    metadata: Path | None = None
    class_names: dict[str, str] = field(default_factory=dict)
    scene_class: str | None = None
    limit: int | None = None


Source = FolderSource | CocoSource | DotaSource
SOURCE_TYPES: dict[str, type] = {"folder": FolderSource, "coco": CocoSource, "dota": DotaSource}


# ----------------------------------------------------------------------------------------- backends
@dataclass(frozen=True)
class OpenAIBackend:
    """Any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp server, ``transformers serve``)."""

    base_url: str
    model: str
    type: Literal["openai"] = "openai"
    api_key_env: str | None = None
    concurrency: int = 4
    timeout_s: float = 120.0
    retries: int = 4
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    extra_body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TransformersBackend:
    """A local transformers model folder (image-text-to-text or text generation), batched."""

    model: Path
    type: Literal["transformers"] = "transformers"
    device: str = "cpu"
    dtype: str = "auto"
    batch_size: int = 8
    batch_wait_ms: float = 20.0
    retries: int = 1
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0


Backend = OpenAIBackend | TransformersBackend
BACKEND_TYPES: dict[str, type] = {"openai": OpenAIBackend, "transformers": TransformersBackend}


# ------------------------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class RelayStage:
    """The rule facts and the image go to an MLLM, which writes a grounded description.

    ``chain: [a, b, ...]`` relays it on: model ``a`` writes the first description from the facts and
    the image, each next model gets the facts, the image and the previous model's description
    (``chain_prompt``) and improves it. ``backend: a`` is a chain of one.
    """

    backend: str | None = None
    chain: tuple[str, ...] = ()
    prompt: str = "relay"
    chain_prompt: str = "relay_chain"
    max_tokens: int = 300
    temperature: float = 0.2

    def backends(self) -> list[str]:
        """The backend of each relay step, in order."""
        return list(self.chain) if self.chain else [self.backend or ""]


@dataclass(frozen=True)
class Perspective:
    """One perspective prompt and, where set, its own backend and sampling settings."""

    prompt: str
    backend: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class PerspectiveStage:
    """Further MLLM prompts, each describing the image from one perspective, each on its own backend.

    In YAML either a mapping (``backend``, ``prompts``, ...) or just the list of perspectives; an item
    is a prompt name (or file) or ``{prompt, backend, max_tokens, temperature}``. A perspective without
    a backend uses ``backend`` here, else the relay's (first) backend.
    """

    backend: str | None = None
    prompts: tuple[Perspective, ...] = (Perspective("scene"), Perspective("objects"), Perspective("spatial"))
    max_tokens: int = 300
    temperature: float = 0.7

    def backend_of(self, perspective: Perspective, relay: RelayStage) -> str:
        return perspective.backend or self.backend or relay.backends()[0]


@dataclass(frozen=True)
class CaptionSlot:
    """Final captions of one length: ``count`` captions of about ``words`` words each."""

    name: str
    words: int
    count: int = 1

    def slot_names(self) -> list[str]:
        """The slots this length fills: ``short``, or ``short-1``, ``short-2`` when count > 1."""
        if self.count == 1:
            return [self.name]
        return [f"{self.name}-{i}" for i in range(1, self.count + 1)]


@dataclass(frozen=True)
class IntegrationStage:
    """An LLM merges the relay and perspective descriptions into final captions of several lengths."""

    backend: str
    prompt: str = "integration"
    captions: tuple[CaptionSlot, ...] = (
        CaptionSlot("short", 15, 2), CaptionSlot("medium", 35, 2), CaptionSlot("detailed", 70, 2),
    )
    max_tokens: int | None = None
    temperature: float = 0.7
    #: base of the per-slot ``seed`` sent where the API takes one (None: send no seed)
    seed: int | None = 0
    #: a caption identical to one already written for the image is asked again this many times,
    #: each time ``retry_temperature_step`` warmer, before it is kept (and the duplicate check drops it)
    identical_retries: int = 2
    retry_temperature_step: float = 0.3

    def slots(self) -> list[tuple[str, CaptionSlot]]:
        """Every (slot name, its length) pair, in configured order."""
        return [(name, slot) for slot in self.captions for name in slot.slot_names()]

    def max_tokens_for(self, slot: CaptionSlot) -> int:
        return self.max_tokens if self.max_tokens is not None else 2 * slot.words + 40


# ------------------------------------------------------------------------------------------ quality
@dataclass(frozen=True)
class ClipFilter:
    """Score captions against their image with a CLIP model; low scores are dropped or flagged."""

    name: str | None = None
    checkpoint: Path | None = None
    arch: str | None = None
    model_config: Path | None = None
    min_score: float = 0.2
    action: Action = "drop"
    device: str = "auto"
    batch_size: int = 32


@dataclass(frozen=True)
class QualityConfig:
    """What to do with captions that fail a check: ``drop`` (not exported), ``flag`` or ``off``."""

    contradictions: Action = "drop"
    duplicates: Action = "drop"
    near_duplicate: float = 0.9
    length: Action = "flag"
    length_range: tuple[float, float] = (0.4, 2.5)
    clip: ClipFilter | None = None


@dataclass(frozen=True)
class ImageConfig:
    """How images are sent to MLLMs: longest side in pixels, encoding, bands of multi-band rasters."""

    max_side: int = 1024
    format: Literal["jpeg", "png"] = "jpeg"
    quality: int = 90
    bands: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based): this machine builds only the images hashed to it."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Read ``"i/n"`` with 1 <= i <= n."""
        try:
            index_text, count_text = str(text).split("/")
            index, count = int(index_text), int(count_text)
        except ValueError:
            raise UserError(f"shard {text!r}: expected i/n, e.g. 1/4 for the first of four shards") from None
        if count < 1 or not 1 <= index <= count:
            raise UserError(f"shard {text!r}: i must be between 1 and n (got {index} of {count})")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class BuildConfig:
    """Everything one dataset build needs. Paths are absolute once loaded."""

    output: Path
    sources: tuple[Source, ...]
    backends: dict[str, Backend]
    relay: RelayStage
    integration: IntegrationStage
    perspectives: PerspectiveStage | None = None
    quality: QualityConfig = QualityConfig()
    image: ImageConfig = ImageConfig()
    prompts_dir: Path | None = None
    shard: Shard | None = None

    # ------------------------------------------------------------------------------ (de)serialise
    @classmethod
    def from_dict(cls, data: Any, *, origin: str | Path = "config", base_dir: Path | None = None) -> BuildConfig:
        """Validate ``data``; relative paths are resolved against ``base_dir`` (default: the cwd)."""
        from rs_vlm_app.mpgi.config_parse import parse_config

        return parse_config(data, str(origin), Path(base_dir or Path.cwd()).resolve())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (paths as strings) that :meth:`from_dict` reads back unchanged."""
        from rs_vlm_app.mpgi.config_parse import plain

        return plain(self)

    def with_shard(self, shard: Shard | None) -> BuildConfig:
        return dataclasses.replace(self, shard=shard)

    # --------------------------------------------------------------------------------- helpers
    @property
    def manifest_path(self) -> Path:
        """The manifest of this build: ``manifest.sqlite``, or one file per shard."""
        if self.shard is None:
            return self.output / "manifest.sqlite"
        return self.output / shard_manifest_name(self.shard)

    def stage_backends(self) -> dict[str, str]:
        """Where in the config -> backend name, for every step that calls a model."""
        if self.relay.chain:
            out = {f"relay.chain[{i}]": name for i, name in enumerate(self.relay.chain)}
        else:
            out = {"relay.backend": self.relay.backend or ""}
        if self.perspectives is not None:
            for i, p in enumerate(self.perspectives.prompts):
                out[f"perspectives.prompts[{i}].backend"] = self.perspectives.backend_of(p, self.relay)
        out["integration.backend"] = self.integration.backend
        return out


def shard_manifest_name(shard: Shard) -> str:
    width = len(str(shard.count))
    return f"manifest-shard-{shard.index:0{width}d}-of-{shard.count}.sqlite"


def load_config(path: str | Path) -> BuildConfig:
    """Read a YAML build configuration; relative paths are relative to the file's folder."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError("no such configuration file", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise UserError(f"not valid YAML{line}: {getattr(exc, 'problem', None) or exc}", path=path) from None
    return BuildConfig.from_dict(data, origin=path, base_dir=path.resolve().parent)


def is_path_ref(ref: str) -> bool:
    """A prompt reference that names a file rather than a prompt of the prompt set."""
    return ref.endswith((".yaml", ".yml")) or "/" in ref or "\\" in ref


def source_name(source: Source) -> str:
    """The source's name in image keys: its ``name``, else its folder's name."""
    if source.name:
        return source.name
    folder = source.root if isinstance(source, FolderSource) else source.images
    return folder.name


