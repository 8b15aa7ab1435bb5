"""The build plan: the prompts of every stage, loaded and checked, and the stage names they fill."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.config import BuildConfig, CaptionSlot
from rs_vlm_app.mpgi.prompts import PromptTemplate, load_prompt, resolve_prompt

RELAY = "relay"
PERSPECTIVE_PREFIX = "perspective:"
CAPTION_PREFIX = "caption:"


@dataclass(frozen=True)
class Plan:
    relay: PromptTemplate
    perspectives: tuple[PromptTemplate, ...]
    integration: PromptTemplate
    slots: tuple[tuple[str, CaptionSlot], ...]

    @property
    def description_stages(self) -> list[str]:
        """Stages whose outputs integration merges: relay, then each perspective."""
        return [RELAY] + [PERSPECTIVE_PREFIX + p.name for p in self.perspectives]

    @property
    def caption_stages(self) -> list[str]:
        return [CAPTION_PREFIX + name for name, _ in self.slots]

    @property
    def stages(self) -> list[str]:
        return self.description_stages + self.caption_stages

    def digests(self) -> dict[str, str]:
        """Stage -> hash of its prompt (and, for captions, its target length)."""
        out = {RELAY: self.relay.digest}
        out.update({PERSPECTIVE_PREFIX + p.name: p.digest for p in self.perspectives})
        for name, slot in self.slots:
            out[CAPTION_PREFIX + name] = _hash(f"{self.integration.digest}:{slot.words}")
        return out


def load_plan(config: BuildConfig) -> Plan:
    """Load and check every prompt the config names; the first mistake is a one-line UserError."""
    relay = load_prompt(resolve_prompt(config.relay.prompt, "relay", config.prompts_dir), "relay")
    perspectives = []
    if config.perspectives is not None:
        for ref in config.perspectives.prompts:
            perspectives.append(load_prompt(resolve_prompt(ref, "perspective", config.prompts_dir),
                                            "perspective"))
    names = [p.name for p in perspectives]
    for p in perspectives:
        if names.count(p.name) > 1:
            raise UserError(f"two perspective prompts are named {p.name!r}; give each a distinct 'name'", path=p.path)
    integration = load_prompt(resolve_prompt(config.integration.prompt, "integration", config.prompts_dir),
                              "integration")
    return Plan(relay, tuple(perspectives), integration, tuple(config.integration.slots()))


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def prompt_hash(model: str, system: str | None, user: str, image_key: str | None, max_tokens: int,
                temperature: float) -> str:
    """Identifies exactly what was asked: model, messages, image, sampling settings."""
    payload = json.dumps([model, system, user, image_key, max_tokens, temperature], ensure_ascii=False)
    return _hash(payload)
