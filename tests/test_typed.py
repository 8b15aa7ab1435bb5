"""The one typed converter of job specs and build configs: values checked, one-line errors in each wording."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.typed import CONFIG_WORDING, SPEC_WORDING, Converter, to_plain


@dataclass(frozen=True)
class Cat:
    name: str
    type: Literal["cat"] = "cat"
    lives: int = 9


@dataclass(frozen=True)
class Dog:
    name: str
    type: Literal["dog"] = "dog"
    good: bool = True


@dataclass(frozen=True)
class Range:
    low: int
    high: int

    @classmethod
    def parse(cls, text: str) -> Range:
        low, _, high = text.partition("-")
        if not (low.isdigit() and high.isdigit()):
            raise UserError(f"{text!r} is not LOW-HIGH")
        return cls(int(low), int(high))


@dataclass
class Home:
    path: Path
    pets: tuple[Cat | Dog, ...] = ()
    sizes: tuple[float, float] = (1.0, 2.0)
    tags: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    mode: Literal["a", "b"] = "a"
    span: Range | None = None
    either: str | list[str] = "x"


def config(tmp_path):
    return Converter(CONFIG_WORDING, path="home.yaml", base_dir=tmp_path, lenient=True, parsers={Range: Range.parse})


def test_values_are_converted_and_round_trip(tmp_path):
    data = {"path": "sub/x", "pets": [{"type": "dog", "name": "Rex"}, {"type": "cat", "name": 7}],
            "sizes": [3, 4.5], "tags": "one", "weights": {"a": 1}, "span": "2-5", "either": ["p", "q"]}
    home = config(tmp_path).dataclass(Home, data)
    assert home == Home(tmp_path / "sub" / "x", (Dog("Rex"), Cat("7")), (3.0, 4.5), ["one"], {"a": 1.0}, "a",
                        Range(2, 5), ["p", "q"])
    plain = to_plain(home, as_text=())
    assert Converter(CONFIG_WORDING, lenient=True, parsers={Range: Range.parse}).dataclass(Home, plain) == home


@pytest.mark.parametrize("data, message", [
    ({"path": "x", "pets": [{"type": "bird", "name": "a"}]}, "home.yaml: pets[0]: 'type' must be one of cat, dog (got 'bird')"),
    ({"path": "x", "pets": [{"type": "cat"}]}, "home.yaml: pets[0].name: missing (required)"),
    ({"path": "x", "colour": 1}, "home.yaml: colour: unknown key (known: path, pets, sizes"),
    ({"path": "x", "sizes": [1]}, "home.yaml: sizes: expected 2 values, got 1"),
    ({"path": "x", "mode": "c"}, "home.yaml: mode: 'c' is not one of a, b"),
    ({"path": "x", "span": "5"}, "home.yaml: span: '5' is not LOW-HIGH"),
    ({"path": "x", "weights": {"a": "heavy"}}, "home.yaml: weights.a: expected a number, got 'heavy'"),
    ({"path": ""}, "home.yaml: path: expected a path"),
    ({"path": "x", "either": {"a": 1}}, "home.yaml: either: {'a': 1} fits none of str | list"),
])
def test_config_wording(tmp_path, data, message):
    with pytest.raises(UserError) as caught:
        config(tmp_path).dataclass(Home, data)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("data, message", [
    ({"path": "x", "tags": "one"}, 'job spec: home.tags must be a list, not "one"'),
    ({"path": "x", "pets": [{"type": "cat", "name": 7}]}, "job spec: home.pets[0].name must be a string, not 7"),
    ({"path": 5}, "job spec: home.path must be a file path (a string), not 5"),
    ({"path": "x", "mode": "c"}, "job spec: home.mode must be one of 'a', 'b', not \"c\""),
    ({}, "job spec: home needs 'path'"),
    ({"path": "x", "either": None}, "job spec: home.either must not be null"),
])
def test_spec_wording_is_strict(data, message):
    with pytest.raises(UserError, match="^" + re.escape(message)):
        Converter(SPEC_WORDING).dataclass(Home, data, "home")
    assert Converter(SPEC_WORDING).dataclass(Home, {"path": "~/x"}, "home").path == Path("~/x").expanduser()
