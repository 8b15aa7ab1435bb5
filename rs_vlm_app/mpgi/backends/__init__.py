"""Model backends: one chat request in, one reply text out.

Two kinds: any OpenAI-compatible chat endpoint (:mod:`.openai_compat`) and a local transformers
model (:mod:`.local_transformers`). A backend makes one attempt per call and classifies failures:
:class:`TransientError` (worth retrying: 429, 5xx, timeouts, dropped connections, malformed or empty
replies) or :class:`PermanentError` (retrying cannot help: a 400, an image the model cannot take, a
reply with only reasoning in it); a reply cut off by the token limit is :class:`TruncatedReply`, which
the pipeline asks again once with more tokens. Only whole replies become outputs. The pipeline
retries, records every attempt in the manifest and backs off.
"""

from __future__ import annotations

import functools
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from json.encoder import encode_basestring

from rs_vlm_app.mpgi.config import Backend, OpenAIBackend
from rs_vlm_app.mpgi.imagefiles import EncodedImage


@dataclass(frozen=True)
class ChatRequest:
    """A system and a user message, an optional image, and the sampling settings."""

    system: str | None
    user: str
    image: EncodedImage | None = None
    max_tokens: int = 256
    temperature: float = 0.7
    seed: int | None = None

    @functools.cached_property
    def user_json(self) -> bytes:
        """The user message as a JSON string (UTF-8, as ``json.dumps(..., ensure_ascii=False)`` writes it),
        escaped once for both the request body and the prompt hash."""
        return encode_basestring(self.user).encode("utf-8")


@dataclass(frozen=True)
class Reply:
    """A model's answer and how long the call itself took (not counting waiting for a free slot)."""

    text: str
    seconds: float


class BackendError(Exception):
    """A failed attempt; ``str(exc)`` is one line for the manifest, ``seconds`` how long the call took."""

    seconds: float | None = None


class TransientError(BackendError):
    """Worth another try after a pause (``retry_after`` seconds when the server said so)."""

    def __init__(self, message: str, retry_after: float | None = None, unreachable: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.unreachable = unreachable


class PermanentError(BackendError):
    """Another try would fail the same way."""


class TruncatedReply(BackendError):
    """The reply stopped at the token limit (finish_reason "length"): it is not a whole answer."""


#: what a reasoning model that spent its tokens thinking needs
REASONING_FIX = ("raise max_tokens for this stage, or turn thinking off (e.g. backends.NAME.extra_body: "
                 "{chat_template_kwargs: {enable_thinking: false}})")


class ChatBackend(ABC):
    """A model that answers chat requests. Use ``start()`` once, ``complete()`` many times, ``close()``."""

    #: whether the model takes images (None: cannot tell, e.g. a remote endpoint)
    accepts_images: bool | None = None

    def __init__(self, name: str, model: str, retries: int, backoff_s: float, backoff_max_s: float):
        self.name = name
        self.model = model
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s

    @property
    @abstractmethod
    def concurrency(self) -> int:
        """How many requests it usefully takes at once."""

    @abstractmethod
    def describe(self) -> str:
        """Where it runs, for messages: URL or folder, and model."""

    @abstractmethod
    async def start(self) -> None:
        """Connect / load, and check the backend answers; a UserError if it cannot be used."""

    @abstractmethod
    async def complete(self, request: ChatRequest) -> Reply:
        """One attempt: the reply (text cleaned); raises TransientError or PermanentError."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass


def create_backend(name: str, config: Backend) -> ChatBackend:
    if isinstance(config, OpenAIBackend):
        from rs_vlm_app.mpgi.backends.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(name, config)
    from rs_vlm_app.mpgi.backends.local_transformers import LocalTransformersBackend

    return LocalTransformersBackend(name, config)


_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_THINK_END = re.compile(r"^.*?</think>", re.DOTALL | re.IGNORECASE)
_PREAMBLE = re.compile(r"^(caption|description|answer)\s*:\s*", re.IGNORECASE)


def strip_reasoning(text: str) -> tuple[str, bool]:
    """(text without reasoning, whether there was any): ``<think>...</think>`` blocks removed, an
    unclosed ``<think>`` removes everything after it, and text before a lone ``</think>`` (a chat
    template that opened the block in the prompt) is reasoning too."""
    stripped = _THINK.sub(" ", text)
    stripped = _THINK_END.sub(" ", stripped)
    return stripped, stripped != text


def clean_reply(text: str) -> str:
    """A reply as one tidy paragraph: reasoning blocks, a 'Caption:' label and wrapping quotes removed.

    Raises PermanentError for a reply that was all reasoning (asking again gives the same), and
    TransientError for a reply with no text at all (a model may answer properly next time).
    """
    text, reasoned = strip_reasoning(text)
    text = " ".join(text.split())
    if not text and reasoned:
        raise PermanentError(f"reasoning only: the reply has a <think> block and no answer after it; {REASONING_FIX}")
    text = _PREAMBLE.sub("", text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if not text:
        raise TransientError("malformed reply: no text")
    return text


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
