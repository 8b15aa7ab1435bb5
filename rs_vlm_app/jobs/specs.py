"""Job specs: one typed, validated, JSON-serialisable dataclass per kind of job, and their registry.

A spec says everything a job needs (inputs, outputs, model, options) and nothing about who runs
it: the CLI runs it in-process, the GUI and the QGIS plugin send it to a worker process as JSON.

Adding a kind of job = one module in ``rs_vlm_app/jobs/kinds/`` defining a ``@register``-ed
subclass of :class:`JobSpec` (see docs/jobs.md). Modules there are imported on first lookup and
must not import heavy libraries (torch, open_clip, rasterio) at module level: do that in ``run``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rs_vlm_app.errors import UserError
from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.models.spec import DEVICES, PRECISIONS, ModelSpec  # noqa: F401 - the job field type
from rs_vlm_app.typed import SPEC_WORDING, Converter, to_plain

if TYPE_CHECKING:
    from rs_vlm_app.jobs.context import JobContext


@dataclass
class JobResult:
    """What a finished job hands back: every file it wrote and a JSON-able summary."""

    files: list[ResultFile] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


class JobSpec:
    """Base of all job specs. Subclasses are dataclasses with a class attribute ``kind``."""

    kind: ClassVar[str] = ""

    def title(self) -> str:
        """A short line naming the job in a jobs list."""
        return self.kind

    def inputs(self) -> list[Path]:
        """Files the job reads; a job that fails after one of them vanished says so."""
        return []

    def check(self) -> None:
        """Cheap checks (files exist, outputs writable, values in range) before any model loads.
        Raise UserError."""

    def run(self, ctx: JobContext) -> JobResult:
        """Do the work, reporting through ``ctx.reporter``; raise UserError or Cancelled."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, ``kind`` first; ``spec_from_dict(spec.to_dict()) == spec``."""
        return {"kind": self.kind, **_to_plain(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Build and type-check a spec; UserError names the field and what was expected."""
        data = {k: v for k, v in data.items() if k != "kind"}
        return _from_plain(cls, data, cls.kind)


_REGISTRY: dict[str, type[JobSpec]] = {}
_discovered = False


def register(cls: type[JobSpec]) -> type[JobSpec]:
    """Class decorator: make ``cls`` (a dataclass subclass of JobSpec) known by its ``kind``."""
    if not dataclasses.is_dataclass(cls) or not issubclass(cls, JobSpec) or not cls.kind:
        raise TypeError(f"{cls.__name__} must be a dataclass subclass of JobSpec with a kind")
    other = _REGISTRY.get(cls.kind)
    if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"job kind {cls.kind!r} is registered twice ({other.__name__}, {cls.__name__})")
    _REGISTRY[cls.kind] = cls
    return cls


def spec_kinds() -> dict[str, type[JobSpec]]:
    """Every registered kind (imports the modules of rs_vlm_app/jobs/kinds/ once)."""
    global _discovered
    if not _discovered:
        from rs_vlm_app.jobs import kinds

        for module in pkgutil.iter_modules(kinds.__path__):
            importlib.import_module(f"{kinds.__name__}.{module.name}")
        _discovered = True
    return dict(_REGISTRY)


def spec_from_dict(data: Any) -> JobSpec:
    """The spec a JSON object describes (its ``kind`` picks the class)."""
    if not isinstance(data, dict):
        raise UserError("a job spec must be a JSON object with a \"kind\"")
    kind = data.get("kind")
    known = spec_kinds()
    if kind not in known:
        raise UserError(f"unknown job kind {kind!r}; known kinds: {', '.join(sorted(known))}")
    return known[kind].from_dict(data)


def load_spec(path: str | Path) -> JobSpec:
    """Read a spec from a JSON file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("job spec file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the job spec ({exc})", path=path) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UserError(f"not valid JSON ({exc})", path=path) from None
    try:
        return spec_from_dict(data)
    except UserError as exc:
        raise UserError(str(exc), path=path) from None


# -- typed conversion between dataclasses and plain JSON values: rs_vlm_app/typed.py ------------------


def _to_plain(value: Any) -> Any:
    return to_plain(value)


def _from_plain(cls: type, data: Any, where: str) -> Any:
    return Converter(SPEC_WORDING).dataclass(cls, data, where)
