"""Prompts as data: YAML files with a system and a user message and their declared placeholders.

A prompt file::

    name: scene
    kind: perspective            # relay | perspective | integration
    description: Scene type and land use.
    image: true                  # send the image with the prompt
    placeholders: [scene_class, metadata]
    system: You are an expert in remote sensing image interpretation.
    user: |
      The scene is labelled {scene_class}. ...

``{name}`` is a placeholder; write ``{{`` and ``}}`` for literal braces. Every placeholder used must be
declared, every declared one used, each must be one the stage provides, and the stage's essential
ones (a relay prompt's ``{facts}``) must be there. Mistakes are found when the build starts, one line
each, before any image is touched.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from rs_vlm_app.errors import UserError

KINDS = ("relay", "perspective", "integration")

_COMMON = {
    "facts": "the rule sentences from the annotations, one per line",
    "scene_class": "the scene class, or 'not given'",
    "metadata": "the image's metadata as 'field: value' lines, or 'none'",
    "image_size": "width x height in pixels",
}
#: placeholders each kind of prompt may use
AVAILABLE: dict[str, dict[str, str]] = {
    "relay": {**_COMMON, "previous": "the previous model's description (the steps of a relay chain after the first)"},
    "perspective": {**_COMMON, "relay": "the relay's grounded description (the perspective then runs after the relay)"},
    "integration": {
        **_COMMON,
        "descriptions": "the relay and perspective descriptions, each under its name",
        "length_name": "the caption length's name (short, medium, ...)",
        "length_words": "the caption's target length in words",
        "slot_index": "which caption of this length this is (1, 2, ...)",
        "slot_count": "how many captions of this length each image gets",
        "written": "the captions of this length already written for the image, with an instruction to differ",
    },
}
#: placeholders each kind of prompt must use
REQUIRED: dict[str, dict[str, str]] = {
    "relay": {"facts": "the rule facts it relays to the model"},
    "perspective": {},
    "integration": {"descriptions": "the descriptions it merges", "length_words": "the caption's target length"},
}

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    kind: str
    path: Path
    system: str
    user: str
    image: bool
    placeholders: tuple[str, ...]
    description: str = ""

    @property
    def digest(self) -> str:
        """A hash of what the prompt says (changes when the file's text does)."""
        text = "\x00".join((self.kind, self.system, self.user, str(self.image)))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def render(self, values: dict[str, str]) -> tuple[str | None, str]:
        """(system, user) with the placeholders filled in."""
        return _fill(self.system, values) or None, _fill(self.user, values)


def _fill(text: str, values: dict[str, str]) -> str:
    return _format_string(text).format_map(values)


@functools.lru_cache(maxsize=256)
def _format_string(text: str) -> str:
    """The template as a str.format string, made once: ``{name}`` placeholders kept, every other brace
    (``{{``, ``}}``, a lone brace, ``{0}``, ``{a.b}``) doubled so that it stays literal text."""
    parts, last = [], 0
    for match in _TOKEN.finditer(text):
        parts.append(_literal(text[last:match.start()]))
        parts.append(_literal(match.group(0)[0]) if match.group(1) is None else "{" + match.group(1) + "}")
        last = match.end()
    parts.append(_literal(text[last:]))
    return "".join(parts)


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def placeholders_in(text: str) -> set[str]:
    """The placeholder names a template text uses."""
    return {m.group(1) for m in _TOKEN.finditer(text) if m.group(1)}


def builtin_prompts_dir() -> Path:
    """The shipped prompt set: resources/prompts/mpgi."""
    from rs_vlm_app.resources import resource

    return resource("prompts", "mpgi")


def resolve_prompt(ref: str, kind: str, prompts_dir: Path | None) -> Path:
    """Where prompt ``ref`` lives: a file path, or a name in the prompt set (``perspectives/<name>.yaml``)."""
    from rs_vlm_app.mpgi.config import is_path_ref

    if is_path_ref(ref):
        return Path(ref).expanduser()
    folder = prompts_dir or builtin_prompts_dir()
    return folder / "perspectives" / f"{ref}.yaml" if kind == "perspective" else folder / f"{ref}.yaml"


def load_prompt(path: Path, kind: str) -> PromptTemplate:
    """Read and check one prompt file; any mistake is a one-line UserError naming the file."""
    import yaml

    if not path.is_file():
        raise UserError(f"prompt file not found (a {kind} prompt)", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"not valid YAML ({getattr(exc, 'problem', None) or exc})", path=path) from None
    if not isinstance(data, dict):
        raise UserError("a prompt file must be a mapping with 'user' (and 'system', 'placeholders')", path=path)
    known = {"name", "kind", "description", "image", "placeholders", "system", "user"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})", path=path)
    file_kind = data.get("kind", kind)
    if file_kind != kind:
        raise UserError(f"this is a {file_kind!r} prompt, but it is used as the {kind} prompt", path=path)
    user = data.get("user")
    if not isinstance(user, str) or not user.strip():
        raise UserError("'user' (the prompt text) is missing or empty", path=path)
    system = data.get("system") or ""
    if not isinstance(system, str):
        raise UserError("'system' must be text", path=path)
    declared_raw = data.get("placeholders") or []
    if not isinstance(declared_raw, list) or not all(isinstance(p, str) for p in declared_raw):
        raise UserError("'placeholders' must be a list of names, e.g. [facts, metadata]", path=path)
    declared = tuple(p.strip("{} ") for p in declared_raw)
    available = AVAILABLE[kind]
    used = placeholders_in(system) | placeholders_in(user)
    for name in sorted(used | set(declared)):
        if name not in available:
            raise UserError(f"unknown placeholder {{{name}}}; a {kind} prompt can use "
                            f"{', '.join('{' + n + '}' for n in available)}", path=path)
    undeclared = sorted(used - set(declared))
    if undeclared:
        raise UserError(f"uses the placeholder {{{undeclared[0]}}} but does not declare it in 'placeholders'", path=path)
    for name in declared:
        if name not in used:
            raise UserError(f"declares the placeholder {{{name}}} but its text never uses it", path=path)
    for name, why in REQUIRED[kind].items():
        if name not in used:
            raise UserError(f"a {kind} prompt must use the placeholder {{{name}}} ({why}); add it to 'user' "
                            "and to 'placeholders'", path=path)
    image = data.get("image", kind != "integration")
    if not isinstance(image, bool):
        raise UserError("'image' must be true or false", path=path)
    name = str(data.get("name") or path.stem)
    return PromptTemplate(name, kind, path, system, user, image, declared, str(data.get("description") or ""))


def list_prompts(kind: str, prompts_dir: Path | None = None) -> list[tuple[str, str, Path]]:
    """(name, description, file) of the ``kind`` prompts of a prompt set (default: the shipped one),
    by file name; for choosing prompts in a form. A file that is not a readable mapping is left out
    (the build's own check names its problem)."""
    import yaml

    folder = prompts_dir or builtin_prompts_dir()
    folder = folder / "perspectives" if kind == "perspective" else folder
    found = []
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and data.get("kind", kind) == kind:
            found.append((path.stem, str(data.get("description") or ""), path))
    return found
