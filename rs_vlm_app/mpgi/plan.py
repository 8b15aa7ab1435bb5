"""The build plan: the prompts of every stage, loaded and checked, and the stage names they fill."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from json.encoder import encode_basestring

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.config import BuildConfig, CaptionSlot
from rs_vlm_app.mpgi.prompts import PromptTemplate, load_prompt, resolve_prompt

RELAY = "relay"
PERSPECTIVE_PREFIX = "perspective:"
CAPTION_PREFIX = "caption:"


def relay_stage(step: int) -> str:
    """The manifest stage of relay step ``step`` (0-based): ``relay``, then ``relay:2``, ``relay:3``..."""
    return RELAY if step == 0 else f"{RELAY}:{step + 1}"


@dataclass(frozen=True)
class RelayStep:
    """One model of the relay (chain): its stage, prompt and backend."""

    stage: str
    prompt: PromptTemplate
    backend: str


@dataclass(frozen=True)
class PerspectiveStep:
    """One perspective: its prompt, backend and sampling settings; ``after_relay`` when it uses {relay}."""

    prompt: PromptTemplate
    backend: str
    max_tokens: int
    temperature: float

    @property
    def stage(self) -> str:
        return PERSPECTIVE_PREFIX + self.prompt.name

    @property
    def after_relay(self) -> bool:
        return "relay" in self.prompt.placeholders


@dataclass(frozen=True)
class Plan:
    relay_steps: tuple[RelayStep, ...]
    perspective_steps: tuple[PerspectiveStep, ...]
    integration: PromptTemplate
    slots: tuple[tuple[str, CaptionSlot], ...]

    @property
    def relay(self) -> PromptTemplate:
        """The first relay prompt."""
        return self.relay_steps[0].prompt

    @property
    def relay_final(self) -> str:
        """The stage whose text is the relay's result (the last step of the chain)."""
        return self.relay_steps[-1].stage

    @property
    def perspectives(self) -> tuple[PromptTemplate, ...]:
        return tuple(p.prompt for p in self.perspective_steps)

    @property
    def description_stages(self) -> list[str]:
        """Stages before integration: the relay steps, then each perspective."""
        return [r.stage for r in self.relay_steps] + [p.stage for p in self.perspective_steps]

    @property
    def caption_stages(self) -> list[str]:
        return [CAPTION_PREFIX + name for name, _ in self.slots]

    @property
    def stages(self) -> list[str]:
        return self.description_stages + self.caption_stages

    def stage_backends(self) -> dict[str, str]:
        """Stage -> the backend that writes it."""
        out = {r.stage: r.backend for r in self.relay_steps}
        out.update({p.stage: p.backend for p in self.perspective_steps})
        return out

    def digests(self) -> dict[str, str]:
        """Stage -> hash of its prompt (and, for captions, its target length)."""
        out = {r.stage: r.prompt.digest for r in self.relay_steps}
        out.update({p.stage: p.prompt.digest for p in self.perspective_steps})
        for name, slot in self.slots:
            out[CAPTION_PREFIX + name] = _hash(f"{self.integration.digest}:{slot.words}")
        return out


def load_plan(config: BuildConfig) -> Plan:
    """Load and check every prompt the config names; the first mistake is a one-line UserError."""
    relay_cfg = config.relay
    first = load_prompt(resolve_prompt(relay_cfg.prompt, "relay", config.prompts_dir), "relay")
    if "previous" in first.placeholders:
        raise UserError("the first relay prompt has no previous description: remove {previous}", path=first.path)
    steps = [RelayStep(relay_stage(0), first, relay_cfg.backends()[0])]
    if len(relay_cfg.backends()) > 1:
        chained = load_prompt(resolve_prompt(relay_cfg.chain_prompt, "relay", config.prompts_dir), "relay")
        if "previous" not in chained.placeholders:
            raise UserError("a relay chain prompt must use the placeholder {previous} (the previous model's "
                            "description); add it to 'user' and to 'placeholders'", path=chained.path)
        steps += [RelayStep(relay_stage(i), chained, name) for i, name in enumerate(relay_cfg.backends()[1:], 1)]
    perspectives = []
    if config.perspectives is not None:
        stage = config.perspectives
        for item in stage.prompts:
            prompt = load_prompt(resolve_prompt(item.prompt, "perspective", config.prompts_dir), "perspective")
            perspectives.append(PerspectiveStep(
                prompt, stage.backend_of(item, relay_cfg),
                item.max_tokens if item.max_tokens is not None else stage.max_tokens,
                item.temperature if item.temperature is not None else stage.temperature))
    names = [p.prompt.name for p in perspectives]
    for p in perspectives:
        if names.count(p.prompt.name) > 1:
            raise UserError(f"two perspective prompts are named {p.prompt.name!r}; give each a distinct 'name'",
                            path=p.prompt.path)
    integration = load_prompt(resolve_prompt(config.integration.prompt, "integration", config.prompts_dir),
                              "integration")
    return Plan(tuple(steps), tuple(perspectives), integration, tuple(config.integration.slots()))


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def prompt_hash(model: str, system: str | None, user: str, image_key: str | None, max_tokens: int,
                temperature: float, *, user_json: bytes | None = None) -> str:
    """Identifies exactly what was asked: model, messages, image, sampling settings: the hash of
    ``json.dumps([model, system, user, image_key, max_tokens, temperature], ensure_ascii=False)``,
    written from its parts (``user_json``: the user text already escaped, see ChatRequest.user_json)."""
    if user_json is None:
        user_json = encode_basestring(user).encode("utf-8")
    key = b"null" if image_key is None else encode_basestring(image_key).encode("utf-8")
    parts = (json_value(model), json_value(system), user_json, key, json_value(max_tokens), json_value(temperature))
    return hashlib.sha256(b"[" + b", ".join(parts) + b"]").hexdigest()[:16]


@functools.lru_cache(maxsize=1024, typed=True)
def json_value(value: str | float | None) -> bytes:
    """A value as JSON (UTF-8), remembered: model names, system prompts, sampling settings."""
    if isinstance(value, str):
        return encode_basestring(value).encode("utf-8")
    return json.dumps(value).encode("utf-8")
