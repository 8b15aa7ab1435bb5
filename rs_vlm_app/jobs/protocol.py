"""The worker protocol: JSON-lines events (worker -> front end) and requests (front end -> worker).

STANDARD LIBRARY ONLY. The QGIS plugin imports this file inside QGIS's own Python, where torch,
rasterio and even the rest of rs_vlm_app must never be imported. Keep it that way.

Every line a worker writes to stdout is one JSON object with an ``"event"`` field; nothing else is
ever written there. Decoding is tolerant: a malformed line is ignored with a warning, an event
type this version does not know is kept as :class:`UnknownEvent` (newer workers may send more),
and unknown fields of known events are kept in ``extra``. docs/jobs.md is the reference.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

log = logging.getLogger(__name__)

#: Bumped when an event or request changes incompatibly; sent in ``hello``.
PROTOCOL_VERSION = 1


# -- events (worker -> front end) ------------------------------------------------------------------


@dataclass
class Event:
    """Base of all events. ``job`` is the id of the job an event belongs to (None: the worker)."""

    type: ClassVar[str] = ""
    job: str | None = field(default=None, kw_only=True)
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.type}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name == "job" and value is None:
                continue
            out[f.name] = _plain(value)
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out


@dataclass
class Hello(Event):
    """First line of every worker: who is talking, and on which device it computes.

    ``mode``: "job" (one spec, then exit), "serve" (persistent, many requests) or "inprocess" (the
    CLI's ``--json``). ``versions``: package -> version. ``device``: {"default": "cuda"|"mps"|"cpu",
    "cuda": [GPU names], ...}. ``model_loads``: models loaded so far by this process.
    """

    type: ClassVar[str] = "hello"
    protocol: int = PROTOCOL_VERSION
    app_version: str = ""
    mode: str = "job"
    pid: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)


@dataclass
class Started(Event):
    """A job began (in serve mode, a queued request starts running)."""

    type: ClassVar[str] = "started"
    kind: str = ""
    title: str = ""


@dataclass
class Progress(Event):
    """``done`` of ``total`` units of ``stage`` are finished. ``rate`` in units/s, ``eta`` in s."""

    type: ClassVar[str] = "progress"
    stage: str = ""
    done: int = 0
    total: int | None = None
    rate: float | None = None
    eta: float | None = None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))


@dataclass
class Log(Event):
    """A line for the person running the job; ``level``: debug, info, warning, error."""

    type: ClassVar[str] = "log"
    message: str = ""
    level: str = "info"


@dataclass
class ResultFile:
    """One file a job wrote. ``role`` tells front ends how to show it:

    heatmap (float GeoTIFF 0..1), vectors (GeoPackage; ``layers`` names its layers), tiles
    (GeoPackage of tile polygons with caption / class fields), classes (a class raster with its
    colour table), raster, table, report, manifest, style, checkpoint, folder.
    """

    path: str
    role: str = "file"
    title: str = ""
    layers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "role": self.role}
        if self.title:
            out["title"] = self.title
        if self.layers:
            out["layers"] = list(self.layers)
        return out

    @classmethod
    def from_value(cls, value: Any) -> ResultFile:
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict) and isinstance(value.get("path"), str):
            layers = value.get("layers") or []
            return cls(value["path"], str(value.get("role") or "file"), str(value.get("title") or ""),
                       [str(x) for x in layers] if isinstance(layers, list) else [])
        raise ValueError(f"not a result file: {value!r}")


@dataclass
class Result(Event):
    """The job finished: every file it wrote, and a summary (kind-specific JSON object)."""

    type: ClassVar[str] = "result"
    kind: str = ""
    files: list[ResultFile] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def paths(self, role: str | None = None) -> list[str]:
        return [f.path for f in self.files if role is None or f.role == role]


@dataclass
class Error(Event):
    """The job failed. ``message`` is one line a person can act on. ``kind``: "user" (bad input
    the user can fix), "model" (a model could not be loaded), "input-changed" (an input file
    changed or vanished during the job), "internal" (a bug; the log has the traceback),
    "protocol" (a bad request)."""

    type: ClassVar[str] = "error"
    message: str = ""
    kind: str = "internal"


@dataclass
class Cancelled(Event):
    """The job stopped on request; finished work is kept and the same job resumes it."""

    type: ClassVar[str] = "cancelled"
    message: str = "cancelled; finished work is kept, run the same job again to resume"


@dataclass
class UnknownEvent(Event):
    """An event type this version does not know; kept so a front end can log or ignore it."""

    type: ClassVar[str] = "unknown"
    name: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls for cls in (Hello, Started, Progress, Log, Result, Error, Cancelled)
}

#: Events after which a job is over (exactly one of them ends every job).
FINAL_EVENTS = ("result", "error", "cancelled")


def encode_event(event: Event) -> str:
    """One event as one line of JSON, newline included."""
    return json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


def decode_event(line: str | bytes) -> Event | None:
    """Parse one line. Blank lines give None; malformed ones None with a warning on this module's
    logger; unknown event types an :class:`UnknownEvent`."""
    data = _parse_object(line)
    if data is None:
        return None
    name = data.get("event")
    if not isinstance(name, str):
        _warn("ignored a worker line without an \"event\" name", line)
        return None
    cls = EVENT_TYPES.get(name)
    if cls is None:
        log.debug("unknown worker event %r tolerated", name)
        return UnknownEvent(name=name, data=data, job=_opt_str(data.get("job")))
    try:
        return _build(cls, data)
    except (TypeError, ValueError) as exc:
        _warn(f"ignored a malformed {name!r} event ({exc})", line)
        return None


def _build(cls: type[Event], data: dict[str, Any]) -> Event:
    known = {f.name for f in fields(cls)} - {"extra"}
    kwargs: dict[str, Any] = {}
    for name in known:
        if name in data:
            kwargs[name] = data[name]
    extra = {k: v for k, v in data.items() if k not in known and k != "event"}
    kwargs["job"] = _opt_str(kwargs.get("job"))
    if cls is Progress:
        kwargs["stage"] = str(kwargs.get("stage", ""))
        kwargs["done"] = _number(kwargs.get("done", 0), int, "done")
        for key in ("total",):
            if kwargs.get(key) is not None:
                kwargs[key] = _number(kwargs[key], int, key)
        for key in ("rate", "eta"):
            if kwargs.get(key) is not None:
                kwargs[key] = _number(kwargs[key], float, key)
    elif cls is Result:
        files = kwargs.get("files", [])
        if not isinstance(files, list):
            raise ValueError("files must be a list")
        kwargs["files"] = [ResultFile.from_value(f) for f in files]
        if not isinstance(kwargs.get("summary", {}), dict):
            raise ValueError("summary must be an object")
        kwargs["kind"] = str(kwargs.get("kind", ""))
    elif cls is Hello:
        kwargs["protocol"] = _number(kwargs.get("protocol", 0), int, "protocol")
        for key in ("versions", "device"):
            if not isinstance(kwargs.get(key, {}), dict):
                raise ValueError(f"{key} must be an object")
    else:
        for key in ("message", "level", "kind", "title"):
            if key in kwargs and not isinstance(kwargs[key], str):
                kwargs[key] = str(kwargs[key])
    return cls(**kwargs, extra=extra)


#: A line longer than this is not an event of ours: it is dropped (with a warning).
MAX_LINE_BYTES = 64 * 1024 * 1024


class EventStream:
    """Turns chunks of worker output (as QProcess or a pipe delivers them) into events.

    ``feed()`` returns the events of every complete line so far; a partial line waits for the
    next chunk. ``close()`` decodes a last line that ended without a newline.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._skipping = False

    def feed(self, chunk: bytes | str) -> list[Event]:
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        if self._skipping and lines:
            lines = lines[1:]  # the rest of an over-long line
            self._skipping = False
        if len(self._buffer) > MAX_LINE_BYTES:
            log.warning("ignored a worker line longer than %d bytes", MAX_LINE_BYTES)
            self._buffer, self._skipping = b"", True
        return [e for e in (decode_event(line) for line in lines) if e is not None]

    def close(self) -> list[Event]:
        rest, self._buffer = self._buffer, b""
        if self._skipping:
            self._skipping = False
            return []
        event = decode_event(rest) if rest.strip() else None
        return [event] if event is not None else []


# -- requests (front end -> worker, on its stdin) ------------------------------------------------


REQUEST_TYPES = ("run", "cancel", "shutdown")


@dataclass
class Request:
    """``run`` (``spec``: a job spec object, ``id``: the job id its events will carry),
    ``cancel`` (``id``: which job; None = the running one) or ``shutdown``."""

    request: str
    id: str | None = None
    spec: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"request": self.request}
        if self.id is not None:
            out["id"] = self.id
        if self.spec is not None:
            out["spec"] = self.spec
        return out


def encode_request(request: Request) -> str:
    return json.dumps(request.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"


def run_request(job_id: str, spec: dict[str, Any]) -> str:
    """The line asking a persistent worker to run ``spec`` as job ``job_id``."""
    return encode_request(Request("run", job_id, spec))


def cancel_request(job_id: str | None = None) -> str:
    """The line asking a worker to cancel job ``job_id`` (None: whatever is running)."""
    return encode_request(Request("cancel", job_id))


def decode_request(line: str | bytes) -> Request | None:
    """Parse a stdin line. The bare words ``cancel`` and ``shutdown`` are accepted too. Blank
    lines give None; anything else that is not a request raises ValueError (the worker answers it
    with an ``error`` event of kind "protocol")."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.strip()
    if not text:
        return None
    if text in ("cancel", "shutdown"):
        return Request(text)
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(f"not a request (expected JSON or the word cancel): {text[:80]!r}") from None
    if not isinstance(data, dict):
        raise ValueError("a request must be a JSON object")
    name = data.get("request")
    if name not in REQUEST_TYPES:
        raise ValueError(f"unknown request {name!r}; expected one of {', '.join(REQUEST_TYPES)}")
    job_id = data.get("id")
    if job_id is not None and not isinstance(job_id, str | int):
        raise ValueError("request id must be a string")
    spec = data.get("spec")
    if name == "run" and not isinstance(spec, dict):
        raise ValueError("a run request needs a \"spec\" object")
    return Request(name, None if job_id is None else str(job_id), spec if name == "run" else None)


# -- helpers ------------------------------------------------------------------------------------------


def _parse_object(line: str | bytes) -> dict[str, Any] | None:
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    text = line.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        _warn("ignored a worker line that is not JSON", line)
        return None
    if not isinstance(data, dict):
        _warn("ignored a worker line that is not a JSON object", line)
        return None
    return data


def _warn(message: str, line: str | bytes) -> None:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = " ".join(text.split())
    log.warning("%s: %s", message, text[:200] + ("..." if len(text) > 200 else ""))


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any, kind: type, name: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, not {value!r}")
    return kind(value)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN / Infinity
    if isinstance(value, ResultFile):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
