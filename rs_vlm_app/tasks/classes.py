"""Class lists and prompt templates for zero-shot classification.

A class list is a text file, one class per line: ``LABEL`` or ``LABEL = prompt words``. LABEL is
what outputs show and what evaluation folders are matched against (ignoring case, spaces, ``_``
and ``-``); the prompt words go into the templates (default: LABEL with CamelCase and underscores
split, lower case). Blank lines and lines starting with ``#`` are ignored. The shipped lists
(resources/classes/): ``aid`` (30 classes), ``resisc45`` (45), ``eurosat`` (10).

A template file holds one prompt per line with ``{}`` where the class's prompt words go
(default: resources/templates/remote_sensing.txt).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rs_vlm_app.errors import UserError
from rs_vlm_app.resources import resource

BUILTIN_CLASS_LISTS = ("aid", "resisc45", "eurosat")
DEFAULT_TEMPLATES = "remote_sensing"


@dataclass(frozen=True)
class ClassList:
    """Class labels (shown in outputs) and the words that stand for each class in prompts."""

    labels: tuple[str, ...]
    prompt_names: tuple[str, ...]
    source: str  # a built-in name or the file it came from

    def __len__(self) -> int:
        return len(self.labels)

    def index_of(self, name: str) -> int | None:
        """Index of the class whose label matches ``name`` (e.g. a folder name), or None."""
        wanted = label_key(name)
        for i, label in enumerate(self.labels):
            if label_key(label) == wanted:
                return i
        return None


def label_key(label: str) -> str:
    """Comparison key of a label: lower case, letters and digits only ("Dense_Residential" == "denseresidential")."""
    return re.sub(r"[^0-9a-z]+", "", label.lower())


def humanize(label: str) -> str:
    """Prompt words for a bare label: "DenseResidential" / "dense_residential" -> "dense residential"."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", label)
    return " ".join(re.sub(r"[_\-]+", " ", words).split()).lower()


def load_classes(spec: str | Path) -> ClassList:
    """A built-in list (``aid``, ``resisc45``, ``eurosat``) or a class file."""
    text_spec = str(spec)
    if text_spec.lower() in BUILTIN_CLASS_LISTS:
        path = resource("classes", f"{text_spec.lower()}.txt")
        return parse_classes(path.read_text(encoding="utf-8"), source=text_spec.lower())
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"no such class file; give one of {', '.join(BUILTIN_CLASS_LISTS)} or a text file "
                        "with one class per line", path=path)
    return parse_classes(_read_text(path), source=str(path))


def parse_classes(text: str, source: str) -> ClassList:
    """Parse a class list (see the module docstring); one-line UserError for a bad list."""
    labels: list[str] = []
    prompt_names: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        label, sep, words = (part.strip() for part in line.partition("="))
        if not label or (sep and not words):
            raise UserError(f"line {number}: expected 'LABEL' or 'LABEL = prompt words', got {line!r}",
                            path=source)
        key = label_key(label)
        if not key:
            raise UserError(f"line {number}: the class name {label!r} has no letters or digits", path=source)
        if key in seen:
            raise UserError(f"line {number}: duplicate class name {label!r} (same as line {seen[key]})",
                            path=source)
        seen[key] = number
        labels.append(label)
        prompt_names.append(" ".join(words.split()) if sep else humanize(label))
    if not labels:
        raise UserError("the class list is empty; write one class name per line", path=source)
    if len(labels) < 2:
        raise UserError("a classifier needs at least two classes", path=source)
    return ClassList(tuple(labels), tuple(prompt_names), source)


def template_sets() -> tuple[str, ...]:
    """Names of the shipped template sets (resources/templates/*.txt): ours and published ones."""
    folder = resource("templates")
    return tuple(sorted(p.stem for p in Path(folder).glob("*.txt")))


def load_templates(spec: str | Path | None = None) -> tuple[str, ...]:
    """Prompt templates: a shipped set by name (None: the remote-sensing set every zero-shot
    classifier uses by default: ``rsvlm classify``, ``eval zeroshot`` and the training hook), or a
    template file. ``template_sets()`` lists the names (published sets such as ``clip_resisc45``)."""
    name = DEFAULT_TEMPLATES if spec is None else str(spec)
    if name in template_sets():
        path = resource("templates", f"{name}.txt")
        source = name
    else:
        path = Path(spec)
        source = str(path)
        if not path.is_file():
            raise UserError(f"no such template file or template set (sets: {', '.join(template_sets())})",
                            path=path)
    templates = []
    for number, raw in enumerate(_read_text(path).splitlines(), start=1):
        line = " ".join(raw.split())
        if not line or line.startswith("#"):
            continue
        if line.count("{}") != 1:
            raise UserError(f"line {number}: a template needs exactly one '{{}}' where the class goes, got {line!r}",
                            path=source)
        templates.append(line)
    if not templates:
        raise UserError("no templates in the file; write one prompt per line with '{}' for the class", path=source)
    return tuple(dict.fromkeys(templates))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError("not a UTF-8 text file", path=path) from None
    except OSError as exc:
        raise UserError(f"cannot read ({exc.strerror or exc})", path=path) from None
