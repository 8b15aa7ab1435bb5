"""English helpers for the rule sentences: class names, plurals, number words, lists."""

from __future__ import annotations

import re

_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
NUMBER_VALUES: dict[str, int] = {word: i for i, word in enumerate(_NUMBER_WORDS)}

_IRREGULAR_PLURALS = {"person": "people", "sheep": "sheep", "fish": "fish", "aircraft": "aircraft",
                      "deer": "deer", "series": "series", "bus": "buses", "child": "children"}

# Dataset class names written as one word, or abbreviated; users may add their own (class_names).
KNOWN_CLASS_NAMES = {
    # DIOR
    "airplane": "airplane", "airport": "airport", "baseballfield": "baseball field",
    "basketballcourt": "basketball court", "bridge": "bridge", "chimney": "chimney", "dam": "dam",
    "expressway-service-area": "expressway service area", "expressway-toll-station": "expressway toll station",
    "golffield": "golf course", "groundtrackfield": "ground track field", "harbor": "harbor",
    "overpass": "overpass", "ship": "ship", "stadium": "stadium", "storagetank": "storage tank",
    "tenniscourt": "tennis court", "trainstation": "train station", "vehicle": "vehicle",
    "windmill": "windmill",
    # DOTA
    "plane": "airplane", "baseball-diamond": "baseball diamond", "ground-track-field": "ground track field",
    "small-vehicle": "small vehicle", "large-vehicle": "large vehicle", "tennis-court": "tennis court",
    "basketball-court": "basketball court", "storage-tank": "storage tank",
    "soccer-ball-field": "soccer field", "roundabout": "roundabout", "swimming-pool": "swimming pool",
    "helicopter": "helicopter", "container-crane": "container crane", "helipad": "helipad",
    # EuroSAT
    "annualcrop": "annual crop", "herbaceousvegetation": "herbaceous vegetation",
    "permanentcrop": "permanent crop", "sealake": "sea or lake",
}


def humanise(label: str, overrides: dict[str, str] | None = None) -> str:
    """A dataset label as words: ``storage-tank``, ``StorageTank``, ``storage_tank`` -> ``storage tank``."""
    if overrides and label in overrides:
        return overrides[label]
    known = KNOWN_CLASS_NAMES.get(label.lower())
    if known:
        return known
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", label)  # CamelCase
    spaced = re.sub(r"[_\-]+", " ", spaced)
    return " ".join(spaced.lower().split())


def plural(noun: str) -> str:
    """The plural of a (possibly multi-word) English noun phrase: pluralises the last word."""
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR_PLURALS:
        word = _IRREGULAR_PLURALS[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        word = last + "es"
    elif re.search(r"[^aeiou]y$", last):
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def count_phrase(count: int, noun: str) -> str:
    """``three airplanes``, ``one storage tank``, ``25 small vehicles``."""
    number = _NUMBER_WORDS[count] if 0 <= count < len(_NUMBER_WORDS) else str(count)
    return f"{number} {noun if count == 1 else plural(noun)}"


def number_word(count: int) -> str:
    return _NUMBER_WORDS[count] if 0 <= count < len(_NUMBER_WORDS) else str(count)


def join_list(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def percent(fraction: float) -> str:
    """A share of the image as a short percentage: ``0.4%``, ``12%``."""
    value = 100.0 * fraction
    if value < 0.1:
        return "less than 0.1%"
    return f"{value:.1f}%" if value < 1 else f"{value:.0f}%"
