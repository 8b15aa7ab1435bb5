"""One typed converter between plain JSON/YAML data and (frozen or not) dataclasses, both ways.

Job specs (``rs_vlm_app/jobs/specs.py``) and the dataset build config (``rs_vlm_app/mpgi/config.py``)
both read data that a person or another process wrote, so both need the same thing: walk the
dataclass's type hints, check every value, and fail with one line naming the key. Only the wording
differs (a job spec speaks JSON: "must be a whole number, not \"x\""; a YAML config names the file:
"expected a whole number, got 'x'"), so the wording is data (:data:`SPEC_WORDING`,
:data:`CONFIG_WORDING`) and the walk is written once here.

Handled: bool, int, float, str, Path (relative paths resolved against ``base_dir`` when one is
given), Literal, Optional and other unions (a union of dataclasses that each have a ``type:
Literal[...]`` field is chosen by the value's ``type``; any other union takes the first option that
fits), list / tuple (fixed length or ``...``), dict, nested dataclasses, ``Any``, and per-type
parsers for values written as text (``"1/4"`` for a shard).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from rs_vlm_app.errors import UserError

#: message templates of a job spec (JSON from a front end)
SPEC_WORDING: dict[str, str] = {
    "mapping": "job spec: {where} must be an object, not {show}",
    "unknown": "job spec: {where} has no field {key!r}; fields: {fields}",
    "missing": "job spec: {where} needs {key!r}",
    "required": "job spec: {where} must not be null",
    "none_of": "job spec: {where}: {show} fits none of {types}",
    "literal": "job spec: {where} must be one of {choices_repr}, not {show}",
    "list": "job spec: {where} must be a list, not {show}",
    "count": "job spec: {where} must be a list of {expected} values, not {got}",
    "tag": "job spec: {where}.type must be one of {choices}, not {show}",
    "bool": "job spec: {where} must be true or false, not {show}",
    "int": "job spec: {where} must be a whole number, not {show}",
    "float": "job spec: {where} must be a number, not {show}",
    "str": "job spec: {where} must be a string, not {show}",
    "path": "job spec: {where} must be a file path (a string), not {show}",
    "parse": "job spec: {where}: {error}",
}

#: message templates of a YAML configuration file (the file is named by the error's path)
CONFIG_WORDING: dict[str, str] = {
    "mapping": "{where}: expected a mapping",
    "unknown": "{where_key}: unknown key (known: {fields})",
    "missing": "{where_key}: missing (required)",
    "required": "{where}: a value is required",
    "none_of": "{where}: {value!r} fits none of {types}",
    "literal": "{where}: {value!r} is not one of {choices}",
    "list": "{where}: expected a list of {expected} values",
    "count": "{where}: expected {expected} values, got {got}",
    "tag": "{where}: 'type' must be one of {choices} (got {value!r})",
    "bool": "{where}: expected true or false, got {value!r}",
    "int": "{where}: expected a whole number, got {value!r}",
    "float": "{where}: expected a number, got {value!r}",
    "str": "{where}: expected text, got {value!r}",
    "path": "{where}: expected a path",
    "parse": "{where}: {error}",
}


@dataclass
class Converter:
    """Checks plain data against type hints and builds the dataclasses they name.

    ``wording``: message templates (:data:`SPEC_WORDING` or :data:`CONFIG_WORDING`); ``path``: the
    file the data came from (it prefixes every error); ``base_dir``: relative paths are resolved
    against it (None: kept relative, ``~`` expanded); ``lenient``: YAML habits are accepted (a number
    where text is expected, one item where a list is); ``parsers``: type -> function reading a value
    written as text (raise UserError).
    """

    wording: Mapping[str, str] = field(default_factory=lambda: SPEC_WORDING)
    path: str | Path | None = None
    base_dir: Path | None = None
    lenient: bool = False
    parsers: Mapping[type, Callable[[str], Any]] = field(default_factory=dict)

    # ------------------------------------------------------------------------------- errors
    def fail(self, code: str, where: str, value: Any = None, **extra: Any) -> NoReturn:
        text = self.wording[code].format(where=where, value=value, show=show(value), **extra)
        raise UserError(text.removeprefix(": "), path=self.path)

    # ----------------------------------------------------------------------------- converting
    def dataclass(self, cls: type, data: Any, where: str = "") -> Any:
        """An instance of dataclass ``cls`` from a mapping; unknown and missing keys are errors."""
        if not isinstance(data, dict):
            self.fail("mapping", where, data)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = [k for k in data if k not in fields]
        if unknown:
            key = str(unknown[0])
            self.fail("unknown", where, key=key, where_key=join(where, key), fields=", ".join(fields))
        kwargs = {}
        for name, f in fields.items():
            if name in data:
                kwargs[name] = self.convert(data[name], hints[name], join(where, name))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.fail("missing", where, key=name, where_key=join(where, name))
        return cls(**kwargs)

    def convert(self, value: Any, hint: Any, where: str) -> Any:
        """``value`` checked against (and converted to) the type ``hint``."""
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            return self._union(value, args, where)
        if origin is Literal:
            if value not in args:
                self.fail("literal", where, value, choices=", ".join(map(str, args)),
                          choices_repr=", ".join(map(repr, args)))
            return value
        if origin in (list, tuple):
            return self._sequence(value, origin, args, where)
        if origin is dict:
            if not isinstance(value, dict):
                self.fail("mapping", where, value)
            item = args[1] if len(args) == 2 else Any
            return {str(k): self.convert(v, item, f"{where}.{k}") for k, v in value.items()}
        if hint is Any:
            return value
        if hint in self.parsers:
            if isinstance(value, dict) and dataclasses.is_dataclass(hint):
                return self.dataclass(hint, value, where)
            try:
                return self.parsers[hint](str(value))
            except UserError as exc:
                self.fail("parse", where, value, error=str(exc))
        if dataclasses.is_dataclass(hint):
            return self.dataclass(hint, value, where)
        if hint is Path:
            if not isinstance(value, str | Path) or not str(value).strip():
                self.fail("path", where, value)
            path = Path(value).expanduser()
            if self.base_dir is None or path.is_absolute():
                return path
            return (self.base_dir / path).resolve()
        if hint is bool:
            if not isinstance(value, bool):
                self.fail("bool", where, value)
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail("int", where, value)
            return value
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.fail("float", where, value)
            return float(value)
        if hint is str:
            ok = isinstance(value, str) or (self.lenient and isinstance(value, int | float)
                                             and not isinstance(value, bool))
            if not ok:
                self.fail("str", where, value)
            return str(value)
        raise TypeError(f"{where}: the type {hint!r} is not handled by rs_vlm_app.typed")  # our bug, not the user's

    def _union(self, value: Any, args: tuple, where: str) -> Any:
        options = [a for a in args if a is not type(None)]
        if value is None:
            if type(None) in args:
                return None
            self.fail("required", where, value)
        tags = tagged_union(options)
        if tags is not None:
            if not isinstance(value, dict):
                self.fail("mapping", where, value)
            kind = value.get("type")
            if kind not in tags:
                self.fail("tag", where, kind, choices=", ".join(tags))
            return self.dataclass(tags[kind], value, where)
        if len(options) == 1:
            return self.convert(value, options[0], where)
        for option in options:
            try:
                return self.convert(value, option, where)
            except UserError:
                continue
        self.fail("none_of", where, value, types=" | ".join(_type_name(a) for a in args))

    def _sequence(self, value: Any, origin: type, args: tuple, where: str) -> Any:
        variadic = origin is list or not args or args[-1] is Ellipsis
        if isinstance(value, str) or not isinstance(value, list | tuple):
            if variadic and self.lenient:
                value = [value]  # a single item where a list is expected
            else:
                self.fail("list", where, value, expected="some" if variadic else len(args))
        if variadic:
            item = args[0] if args else Any
            items = [self.convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        else:
            if len(value) != len(args):
                self.fail("count", where, value, expected=len(args), got=len(value))
            items = [self.convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))]
        return tuple(items) if origin is tuple else items


def tagged_union(options: list[Any]) -> dict[str, type] | None:
    """{type tag: class} when every option is a dataclass with a ``type: Literal[tag]`` field, else None."""
    if len(options) < 2 or not all(dataclasses.is_dataclass(o) for o in options):
        return None
    tags: dict[str, type] = {}
    for option in options:
        hint = typing.get_type_hints(option).get("type")
        if typing.get_origin(hint) is not Literal or len(typing.get_args(hint)) != 1:
            return None
        tags[typing.get_args(hint)[0]] = option
    return tags


def to_plain(value: Any, *, as_text: tuple[type, ...] = ()) -> Any:
    """Dataclasses, paths, tuples as JSON data; instances of ``as_text`` types as ``str(value)``."""
    if as_text and isinstance(value, as_text):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name), as_text=as_text) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_plain(v, as_text=as_text) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v, as_text=as_text) for v in value]
    return value


def join(where: str, name: str) -> str:
    """``where.name`` (or ``name`` at the top level)."""
    return f"{where}.{name}" if where else name


def show(value: Any) -> str:
    """A value as short JSON, for messages."""
    text = json.dumps(value, default=str)
    return text if len(text) < 60 else text[:57] + "..."


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))
