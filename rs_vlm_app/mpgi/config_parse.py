"""Turning plain data (YAML, a JSON job spec) into a checked BuildConfig, and back.

Every mistake is a one-line UserError naming the file and the key: ``sources[0].root: expected a path``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.config import (
    BACKEND_TYPES,
    SOURCE_TYPES,
    BuildConfig,
    CocoSource,
    DotaSource,
    FolderSource,
    OpenAIBackend,
    Shard,
    TransformersBackend,
    is_path_ref,
    source_name,
)


def parse_config(data: Any, origin: str, base_dir: Path) -> BuildConfig:
    """Convert and check ``data``; relative paths are resolved against ``base_dir``."""
    ctx = _Context(origin, base_dir)
    config = _absolute_prompt_refs(ctx.convert(data, BuildConfig, ""), base_dir)
    _check(config, ctx)
    return config


class _Context:
    def __init__(self, origin: str, base_dir: Path):
        self.origin = origin
        self.base_dir = base_dir

    def fail(self, where: str, message: str) -> typing.NoReturn:
        raise UserError(f"{where}: {message}" if where else message, path=self.origin)

    def convert(self, value: Any, annotation: Any, where: str) -> Any:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in args if a is not type(None)]
            if value is None:
                if type(None) in args:
                    return None
                self.fail(where, "a value is required")
            if options[0] in (FolderSource, CocoSource, DotaSource):
                return self._tagged(value, SOURCE_TYPES, where)
            if options[0] in (OpenAIBackend, TransformersBackend):
                return self._tagged(value, BACKEND_TYPES, where)
            return self.convert(value, options[0], where)
        if origin is Literal:
            if value not in args:
                self.fail(where, f"{value!r} is not one of {', '.join(map(str, args))}")
            return value
        if origin is tuple:
            if isinstance(value, str) or not isinstance(value, list | tuple):
                if args and args[-1] is Ellipsis:
                    value = [value]  # a single item where a list is expected
                else:
                    self.fail(where, f"expected a list of {len(args)} values")
            if args and args[-1] is Ellipsis:
                return tuple(self.convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
            if len(value) != len(args):
                self.fail(where, f"expected {len(args)} values, got {len(value)}")
            return tuple(self.convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        if origin is dict:
            if not isinstance(value, dict):
                self.fail(where, "expected a mapping")
            return {str(k): self.convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
        if annotation is Any:
            return value
        if annotation is Shard:
            if isinstance(value, dict):
                return self._dataclass(value, Shard, where)
            try:
                return Shard.parse(str(value))
            except UserError as exc:
                self.fail(where, str(exc))
        if dataclasses.is_dataclass(annotation):
            return self._dataclass(value, annotation, where)
        if annotation is Path:
            if not isinstance(value, str | Path) or not str(value).strip():
                self.fail(where, "expected a path")
            path = Path(value).expanduser()
            return path if path.is_absolute() else (self.base_dir / path).resolve()
        if annotation is bool:
            if not isinstance(value, bool):
                self.fail(where, f"expected true or false, got {value!r}")
            return value
        if annotation is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(where, f"expected a whole number, got {value!r}")
            return value
        if annotation is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.fail(where, f"expected a number, got {value!r}")
            return float(value)
        if annotation is str:
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                self.fail(where, f"expected text, got {value!r}")
            return str(value)
        raise TypeError(f"config field type {annotation!r} is not handled")  # our bug, not the user's

    def _tagged(self, value: Any, kinds: dict[str, type], where: str) -> Any:
        if not isinstance(value, dict):
            self.fail(where, "expected a mapping")
        kind = value.get("type")
        if kind not in kinds:
            self.fail(where, f"'type' must be one of {', '.join(kinds)} (got {kind!r})")
        return self._dataclass(value, kinds[kind], where)

    def _dataclass(self, value: Any, cls: type, where: str) -> Any:
        if not isinstance(value, dict):
            self.fail(where, "expected a mapping")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in value if k not in fields]
        if unknown:
            self.fail(_join(where, str(unknown[0])), f"unknown key (known: {', '.join(fields)})")
        kwargs = {}
        for name, f in fields.items():
            if name in value:
                kwargs[name] = self.convert(value[name], hints[name], _join(where, name))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.fail(_join(where, name), "missing (required)")
        return cls(**kwargs)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _check(config: BuildConfig, ctx: _Context) -> None:
    if not config.sources:
        ctx.fail("sources", "at least one source is required")
    names: dict[str, int] = {}
    for i, source in enumerate(config.sources):
        name = source_name(source)
        if not name or "/" in name:
            ctx.fail(f"sources[{i}].name", f"{name!r} is not a usable name (no slashes, not empty)")
        if name in names:
            ctx.fail(f"sources[{i}].name", f"{name!r} is also the name of sources[{names[name]}]; give each source a distinct 'name'")
        names[name] = i
        if source.limit is not None and source.limit < 1:
            ctx.fail(f"sources[{i}].limit", "must be at least 1")
    for stage, backend in config.stage_backends().items():
        if backend not in config.backends:
            known = ", ".join(config.backends) or "none defined"
            ctx.fail(f"{stage}.backend", f"no backend named {backend!r} (backends: {known})")
    for name, backend in config.backends.items():
        if isinstance(backend, OpenAIBackend):
            if not backend.base_url.startswith(("http://", "https://")):
                ctx.fail(f"backends.{name}.base_url", f"{backend.base_url!r} must start with http:// or https://")
            if backend.concurrency < 1:
                ctx.fail(f"backends.{name}.concurrency", "must be at least 1")
            if backend.timeout_s <= 0:
                ctx.fail(f"backends.{name}.timeout_s", "must be positive")
        elif backend.batch_size < 1:
            ctx.fail(f"backends.{name}.batch_size", "must be at least 1")
        if backend.retries < 0:
            ctx.fail(f"backends.{name}.retries", "must be 0 or more")
    slots = config.integration.captions
    if not slots:
        ctx.fail("integration.captions", "at least one caption length is required")
    seen: set[str] = set()
    for i, slot in enumerate(slots):
        if not slot.name or not slot.name.replace("_", "").isalnum():
            ctx.fail(f"integration.captions[{i}].name", f"{slot.name!r}: use letters, digits and '_' only")
        if slot.words < 1 or slot.count < 1:
            ctx.fail(f"integration.captions[{i}]", "words and count must be at least 1")
        for name in slot.slot_names():
            if name in seen:
                ctx.fail(f"integration.captions[{i}].name", f"{slot.name!r} is used twice")
            seen.add(name)
    if config.perspectives is not None and len(set(config.perspectives.prompts)) != len(config.perspectives.prompts):
        ctx.fail("perspectives.prompts", "a perspective is listed twice")
    low, high = config.quality.length_range
    if not 0 <= low < high:
        ctx.fail("quality.length_range", "expected [low, high] with 0 <= low < high (ratios of the target length)")
    if not 0 < config.quality.near_duplicate <= 1:
        ctx.fail("quality.near_duplicate", "expected a word-overlap ratio in (0, 1]")
    clip = config.quality.clip
    if clip is not None and clip.name is None and clip.checkpoint is None:
        ctx.fail("quality.clip", "give a catalogue 'name' or a 'checkpoint' file")
    if config.image.max_side < 32:
        ctx.fail("image.max_side", "must be at least 32 pixels")


def _absolute_prompt_refs(config: BuildConfig, base_dir: Path) -> BuildConfig:
    def fix(ref: str) -> str:
        if not is_path_ref(ref):
            return ref
        path = Path(ref).expanduser()
        return str(path if path.is_absolute() else (base_dir / path).resolve())

    changes: dict[str, Any] = {
        "relay": dataclasses.replace(config.relay, prompt=fix(config.relay.prompt)),
        "integration": dataclasses.replace(config.integration, prompt=fix(config.integration.prompt)),
    }
    if config.perspectives is not None:
        changes["perspectives"] = dataclasses.replace(
            config.perspectives, prompts=tuple(fix(r) for r in config.perspectives.prompts))
    return dataclasses.replace(config, **changes)


def plain(value: Any) -> Any:
    """Dataclasses, paths and tuples as JSON data."""
    if dataclasses.is_dataclass(value):
        if isinstance(value, Shard):
            return str(value)
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
