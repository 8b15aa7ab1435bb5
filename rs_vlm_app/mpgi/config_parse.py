"""Turning plain data (YAML, a JSON job spec) into a checked BuildConfig, and back.

Every mistake is a one-line UserError naming the file and the key: ``sources[0].root: expected a path``.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.config import (
    BuildConfig,
    OpenAIBackend,
    Perspective,
    Shard,
    is_path_ref,
    source_name,
)
from rs_vlm_app.typed import CONFIG_WORDING, Converter, to_plain


def parse_config(data: Any, origin: str, base_dir: Path) -> BuildConfig:
    """Convert and check ``data``; relative paths are resolved against ``base_dir``."""
    ctx = _Context(origin, base_dir)
    if isinstance(data, dict) and isinstance(data.get("perspectives"), list):
        data = {**data, "perspectives": {"prompts": data["perspectives"]}}  # the list form
    config = _absolute_prompt_refs(ctx.converter.dataclass(BuildConfig, data), base_dir)
    _check(config, ctx)
    return config


class _Context:
    def __init__(self, origin: str, base_dir: Path):
        self.origin = origin
        self.converter = Converter(CONFIG_WORDING, path=origin, base_dir=base_dir, lenient=True,
                                   parsers={Shard: Shard.parse, Perspective: lambda text: Perspective(text)})

    def fail(self, where: str, message: str) -> typing.NoReturn:
        raise UserError(f"{where}: {message}" if where else message, path=self.origin)


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
    relay = config.relay
    if relay.chain and relay.backend is not None and relay.backend != relay.chain[0]:
        ctx.fail("relay", "give 'backend' (one model) or 'chain' (models in order), not both")
    if not relay.chain and relay.backend is None:
        ctx.fail("relay.backend", "missing (required): the backend of the relay, or a 'chain' of backends")
    for where, backend in config.stage_backends().items():
        if backend not in config.backends:
            known = ", ".join(config.backends) or "none defined"
            ctx.fail(where, f"no backend named {backend!r} (backends: {known})")
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
    if config.perspectives is not None:
        refs = [p.prompt for p in config.perspectives.prompts]
        if len(set(refs)) != len(refs):
            ctx.fail("perspectives.prompts", "a perspective is listed twice")
    if config.integration.identical_retries < 0 or config.integration.retry_temperature_step < 0:
        ctx.fail("integration", "identical_retries and retry_temperature_step must be 0 or more")
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
        "relay": dataclasses.replace(config.relay, prompt=fix(config.relay.prompt),
                                     chain_prompt=fix(config.relay.chain_prompt)),
        "integration": dataclasses.replace(config.integration, prompt=fix(config.integration.prompt)),
    }
    if config.perspectives is not None:
        changes["perspectives"] = dataclasses.replace(
            config.perspectives,
            prompts=tuple(dataclasses.replace(p, prompt=fix(p.prompt)) for p in config.perspectives.prompts))
    return dataclasses.replace(config, **changes)


def plain(value: Any) -> Any:
    """Dataclasses, paths and tuples as JSON data (a shard as ``"i/n"``)."""
    return to_plain(value, as_text=(Shard,))
