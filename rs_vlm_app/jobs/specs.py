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
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from rs_vlm_app.errors import UserError
from rs_vlm_app.jobs.protocol import ResultFile

if TYPE_CHECKING:
    from rs_vlm_app.jobs.context import JobContext

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass
class JobResult:
    """What a finished job hands back: every file it wrote and a JSON-able summary."""

    files: list[ResultFile] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    """Which model, and where it computes. Either a catalogue ``name`` or a ``checkpoint`` (with
    ``arch`` or ``model_config``); all empty = the catalogue's default for the task's family."""

    name: str | None = None
    checkpoint: Path | None = None
    arch: str | None = None
    model_config: Path | None = None
    quick_gelu: bool | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    allow_download: bool | None = None  # None: unless HF_HUB_OFFLINE / RSVLM_OFFLINE is set

    def request(self) -> Any:
        """The rs_vlm_app.models.factory.ModelRequest this spec describes."""
        from rs_vlm_app.models.factory import ModelRequest

        return ModelRequest(name=self.name or None, checkpoint=self.checkpoint, arch=self.arch or None,
                            model_config=self.model_config, quick_gelu=self.quick_gelu,
                            allow_download=self.allow_download)

    def check(self, family: str | None = None) -> None:
        """Cheap checks (no torch): values, files, option combinations, catalogue names, family."""
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise UserError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), not {self.device!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"batch size must be at least 1, not {self.batch_size}")
        for path in (self.checkpoint, self.model_config):
            if path is not None and not Path(path).is_file():
                raise UserError("model file not found", path=path)
        from rs_vlm_app.models.factory import check_request

        check_request(self.request(), expect_family=family)

    def describe(self) -> str:
        if self.name:
            return self.name
        if self.checkpoint:
            return Path(self.checkpoint).name
        if self.model_config:
            return Path(self.model_config).stem
        return "default model"


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


# -- typed conversion between dataclasses and plain JSON values -------------------------------------


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


def _from_plain(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"job spec: {where} must be an object, not {_show(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise UserError(f"job spec: {where} has no field {unknown[0]!r}; fields: {', '.join(names)}")
    kwargs = {}
    for name, f in names.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"job spec: {where} needs {name!r}")
    return cls(**kwargs)


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(value, option, where)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if len(options) == 1 else f"job spec: {where}: {_show(value)} fits none of "
                        f"{' | '.join(_name(o) for o in args)}")
    if origin is Literal:
        if value not in args:
            raise UserError(f"job spec: {where} must be one of {', '.join(map(repr, args))}, not {_show(value)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise UserError(f"job spec: {where} must be a list, not {_show(value)}")
        item = args[0] if args else Any
        items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"job spec: {where} must be an object, not {_show(value)}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"job spec: {where} must be true or false, not {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"job spec: {where} must be a whole number, not {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"job spec: {where} must be a number, not {_show(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"job spec: {where} must be a string, not {_show(value)}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise UserError(f"job spec: {where} must be a file path (a string), not {_show(value)}")
        return Path(value).expanduser()
    if dataclasses.is_dataclass(hint):
        return _from_plain(hint, value, where)
    raise TypeError(f"job spec field {where} has a type the spec format does not support: {hint!r}")


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) < 60 else text[:57] + "..."


def _name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))
