"""The start-up check of one backend, on its own: does it answer, and what does it say?

``rsvlm dataset build`` runs the same check for every backend before any work (an endpoint that is
down is one line then, not a failed unit per image). Front ends run it from a "Test" button while
the configuration is being written. A local transformers model is checked without loading it.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.backends import BackendError, ChatRequest, one_line
from rs_vlm_app.mpgi.config import Backend, OpenAIBackend


@dataclass(frozen=True)
class ProbeAnswer:
    """What the backend answered to the start-up check, and how long it took."""

    backend: str
    where: str
    reply: str
    seconds: float

    def text(self) -> str:
        return f"{self.backend}: {self.where} answers ({self.seconds:.2f} s): “{one_line(self.reply, 80)}”"


def probe_backend(name: str, config: Backend) -> ProbeAnswer:
    """Run the start-up check of backend ``name``; a UserError (one line) when it cannot be used."""
    if not isinstance(config, OpenAIBackend):
        folder = config.model
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise UserError(f"backends.{name}.model: not a transformers model folder (no config.json)", path=folder)
        try:
            model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type", "?")
        except (OSError, ValueError, AttributeError):
            raise UserError(f"backends.{name}.model: unreadable config.json", path=folder) from None
        return ProbeAnswer(name, str(folder), f"a local {model_type} model (loaded when the build starts)", 0.0)
    return asyncio.run(_probe_openai(name, config))


async def _probe_openai(name: str, config: OpenAIBackend) -> ProbeAnswer:
    from rs_vlm_app.mpgi.backends.openai_compat import PREFLIGHT_PROMPT, OpenAICompatBackend

    backend = OpenAICompatBackend(name, config)
    started = time.perf_counter()
    try:
        await backend.start()  # the build's own check: unreachable or refused is a UserError
        try:
            reply = await backend.complete(ChatRequest(None, PREFLIGHT_PROMPT, None, max_tokens=8, temperature=0.0))
            text = reply.text
        except BackendError as exc:
            text = f"(it answers, but this reply failed: {one_line(exc, 120)})"
    finally:
        await backend.close()
    return ProbeAnswer(name, backend.describe(), text, time.perf_counter() - started)
