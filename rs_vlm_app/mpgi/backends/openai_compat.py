"""Any OpenAI-compatible chat endpoint: vLLM, Ollama, llama.cpp server, ``transformers serve``, ...

POST ``{base_url}/chat/completions`` with the model name, the messages (an image as a base64 data
URL) and the sampling settings. The API key, if any, comes from the environment variable the config
names, and is sent only as the Authorization header: never logged, never stored.

The HTTP client is aiohttp: it spends about a third of the CPU per request that httpx does, which
is what decides the request rate a single builder process can keep up (bench/dataset_build.py).
The proxy, if any, comes from the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, as with curl),
looked up once when the backend starts.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import os
import time
import urllib.parse
import urllib.request
from typing import Any

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.backends import (
    REASONING_FIX,
    BackendError,
    ChatBackend,
    ChatRequest,
    PermanentError,
    Reply,
    TransientError,
    TruncatedReply,
    clean_reply,
    one_line,
)
from rs_vlm_app.mpgi.config import OpenAIBackend
from rs_vlm_app.mpgi.plan import json_value

#: statuses worth another try: timeouts, conflicts, rate limits, server errors
RETRY_STATUSES = frozenset({408, 409, 425, 429})
#: the tiny request that checks an endpoint when the build starts
PREFLIGHT_PROMPT = "Reply with the word OK."
#: the fields body() writes itself
_BODY_KEYS = frozenset({"model", "messages", "max_tokens", "temperature", "stream", "seed"})


class OpenAICompatBackend(ChatBackend):
    def __init__(self, name: str, config: OpenAIBackend):
        super().__init__(name, config.model, config.retries, config.backoff_s, config.backoff_max_s)
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self._client = None
        self._slots: asyncio.Semaphore | None = None
        self._proxy: str | None = None

    @property
    def concurrency(self) -> int:
        return self.config.concurrency

    def describe(self) -> str:
        return f"{self.config.base_url} (model {self.config.model})"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        variable = self.config.api_key_env
        if variable:
            key = os.environ.get(variable)
            if not key:
                raise UserError(f"backends.{self.name}.api_key_env: the environment variable {variable} is not set "
                                "(it should hold the endpoint's API key)")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    async def start(self) -> None:
        import aiohttp

        headers = self._headers()
        # total: the whole exchange (a connection is always free: the slots semaphore is the pool's
        # size); connect: opening a connection
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s, connect=min(10.0, self.config.timeout_s))
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency)
        # trust_env stays off: with it aiohttp reads ~/.netrc on every request (a thread hop each)
        self._proxy = environment_proxy(self.url)
        self._client = aiohttp.ClientSession(timeout=timeout, connector=connector, headers=headers,
                                             cookie_jar=aiohttp.DummyCookieJar())  # an API: no cookies
        self._slots = asyncio.Semaphore(self.concurrency)
        try:
            await self._preflight()
        except BaseException:
            await self.close()
            raise

    async def _preflight(self) -> None:
        """One tiny request: an endpoint that is down or refuses the model is a clear error now."""
        probe = ChatRequest(None, PREFLIGHT_PROMPT, None, max_tokens=2, temperature=0.0)
        last: Exception | None = None
        for pause in (0.0, 0.5, 1.5):
            await asyncio.sleep(pause)
            try:
                await self.complete(probe)
                return
            except TruncatedReply:
                return  # it answers (two tokens are not a whole reply, and need not be)
            except PermanentError as exc:
                raise UserError(f"backend {self.name!r}: {self.describe()} refused a test request: {exc}") from None
            except TransientError as exc:
                if not exc.unreachable:
                    return  # it answers; a busy or odd reply now is retried during the build
                last = exc
        raise UserError(f"backend {self.name!r}: {self.config.base_url} is not reachable ({last}); start the server "
                        "or fix base_url in the config") from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The request body (what :meth:`payload` writes as JSON)."""
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        if request.image is not None:
            content: Any = [
                {"type": "text", "text": request.user},
                {"type": "image_url", "image_url": {"url": request.image.data_url()}},
            ]
        else:
            content = request.user
        messages.append({"role": "user", "content": content})
        body = {"model": self.config.model, "messages": messages, "max_tokens": request.max_tokens,
                "temperature": request.temperature, "stream": False}
        if request.seed is not None:
            body["seed"] = request.seed
        body.update(self.config.extra_body)
        return body

    def payload(self, request: ChatRequest) -> bytes:
        """``body(request)`` as the JSON bytes ``json.dumps`` writes for it (compact, UTF-8), put together
        from parts escaped once: the user text (shared with the prompt hash), the image's data URL (once
        per image), the model name, system prompt and sampling settings (remembered)."""
        if _BODY_KEYS.intersection(self.config.extra_body):  # extra_body replaces a field: the plain way
            return _json_bytes(self.body(request))
        parts = [b'{"model":', json_value(self.config.model), b',"messages":[']
        if request.system:
            parts += [b'{"role":"system","content":', json_value(request.system), b"},"]
        if request.image is not None:
            parts += [b'{"role":"user","content":[{"type":"text","text":', request.user_json,
                      b'},{"type":"image_url","image_url":{"url":', request.image.url_json, b"}}]}"]
        else:
            parts += [b'{"role":"user","content":', request.user_json, b"}"]
        parts += [b'],"max_tokens":', json_value(request.max_tokens), b',"temperature":',
                  _json_number(request.temperature), b',"stream":false']
        if request.seed is not None:
            parts += [b',"seed":', _json_number(request.seed)]
        for key, value in self.config.extra_body.items():
            parts += [b",", json_value(key), b":", _json_bytes(value)]
        parts.append(b"}")
        return b"".join(parts)

    async def complete(self, request: ChatRequest) -> Reply:
        assert self._client is not None and self._slots is not None, "start() the backend first"
        payload = self.payload(request)
        async with self._slots:
            started = time.perf_counter()
            try:
                status, headers, content = await self._post(payload)
            except BackendError as exc:
                exc.seconds = time.perf_counter() - started
                raise
            seconds = time.perf_counter() - started
        try:
            return Reply(parse_response(status, headers, content), seconds)
        except BackendError as exc:
            exc.seconds = seconds
            raise

    async def _post(self, payload: bytes) -> tuple[int, Any, bytes]:
        """(status, headers, body) of one POST; a failure to get them is a :class:`TransientError`."""
        import aiohttp

        try:  # the session's headers say Content-Type: application/json
            async with self._client.post(self.url, data=payload, proxy=self._proxy) as response:
                return response.status, response.headers, await response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise TransientError(f"no reply within {self.config.timeout_s:g} s (timeout)") from None
        except aiohttp.ClientConnectorError as exc:
            raise TransientError(f"connection failed: {one_line(exc) or type(exc).__name__}",
                                 unreachable=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientError(f"connection failed: {one_line(exc) or type(exc).__name__}") from None


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (HTTP_PROXY / HTTPS_PROXY), or None (none, or NO_PROXY)."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass_environment(parts.hostname or ""):
        return None
    return urllib.request.getproxies_environment().get(parts.scheme)


def _json_bytes(body: Any) -> bytes:
    """A body as compact UTF-8 JSON (what OpenAI's own clients send)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _json_number(value: float) -> bytes:
    """A number as JSON (a seed is new for every request: not worth remembering)."""
    if type(value) is int:
        return str(value).encode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"out of range float values are not JSON compliant: {value!r}")
    return json_value(value)


def parse_response(status: int, headers, content: bytes) -> str:
    """The reply text of a chat-completions response, or the error it amounts to."""
    if status in RETRY_STATUSES or status >= 500:
        raise TransientError(f"HTTP {status}: {_snippet(content)}", retry_after=_retry_after(headers.get("retry-after")))
    if status >= 400:
        raise PermanentError(f"HTTP {status}: {_snippet(content)}")
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TransientError(f"malformed reply (not JSON): {_snippet(content)}") from None
    try:
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise TransientError(f"malformed reply (no choices[0].message): {_snippet(content)}") from None
    if isinstance(text, list):  # content given as parts
        text = " ".join(p.get("text", "") for p in text if isinstance(p, dict))
    if choice.get("finish_reason") == "length":
        raise TruncatedReply("truncated: the reply was cut off at max_tokens (finish_reason \"length\")")
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if text is None or (isinstance(text, str) and not text.strip() and reasoning):
        if reasoning:
            raise PermanentError(f"reasoning only: the reply has reasoning_content and no content; {REASONING_FIX}")
        raise PermanentError("content null: the reply has no message content (a reasoning or tool-calling model?); "
                             f"{REASONING_FIX}")
    if not isinstance(text, str):
        raise TransientError(f"malformed reply (message content is {type(text).__name__}): {_snippet(content)}")
    return clean_reply(text)


def _snippet(content: bytes) -> str:
    """The start of a response body, on one line, for an error message."""
    return one_line(content.decode("utf-8", errors="replace"), 200)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
