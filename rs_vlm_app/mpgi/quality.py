"""Quality checks on final captions: contradictions of the rule facts, duplicates, length, CLIP score.

Each caption gets a verdict once: ``keep``, ``flag`` (exported unless asked otherwise) or ``drop``
(never exported), with the reasons. What a failed check does is configured per check
(``quality:`` in the build config). Captions are checked in manifest order, so "duplicate" means
"the same text as a caption checked before it".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rs_vlm_app.mpgi.config import BuildConfig, CaptionSlot
from rs_vlm_app.mpgi.manifest import Manifest
from rs_vlm_app.mpgi.plan import CAPTION_PREFIX, Plan
from rs_vlm_app.mpgi.records import ImageRecord
from rs_vlm_app.mpgi.rules import class_counts
from rs_vlm_app.mpgi.wording import NUMBER_VALUES, plural
from rs_vlm_app.reporting import Reporter, check_cancelled

_WORD = re.compile(r"[a-z0-9]+")
NEGATIONS = frozenset({"no", "not", "without", "none", "zero", "nor", "never", "absent", "lacks", "lack"})
#: words that end the search for a count before a class name ("two rows of airplanes" counts rows)
_COUNT_STOP = frozenset({"of", "and", "or", "with", "in", "on", "at", "near", "by", "from", "to", "for", "the",
                         "their", "its", "is", "are", "was", "were", "than", "as", "among", "between", "per"})
_ONE = {"single": 1, "lone": 1, "sole": 1}
PAGE = 256


@dataclass
class QualityStats:
    checked: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    check: str
    action: str
    detail: str


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalised(text: str) -> str:
    """Lower case, punctuation dropped, spaces collapsed: what 'the same caption' compares."""
    return " ".join(words(text))


def text_key(text: str) -> str:
    return hashlib.sha1(normalised(text).encode("utf-8")).hexdigest()[:20]


# -------------------------------------------------------------------------------------- the checks
def contradictions(text: str, counts: dict[str, int], vocabulary: Iterable[str]) -> list[str]:
    """How a caption contradicts the annotations: a wrong count, or a class the image does not contain.

    ``counts`` holds the objects per class of an exhaustively annotated image, ``vocabulary`` every
    class its source annotates. A class mentioned after a negation ("no ships") is not a claim.
    """
    tokens = words(text)
    used = [False] * len(tokens)
    problems: list[str] = []
    classes = sorted(set(vocabulary) | set(counts), key=lambda c: (-len(words(c)), c))
    for label in classes:
        forms = {tuple(words(label)), tuple(words(plural(label)))}
        for start, length in _occurrences(tokens, forms):
            if any(used[start:start + length]):
                continue  # part of a longer class name ("small vehicles" is not "vehicles")
            for i in range(start, start + length):
                used[i] = True
            window = tokens[max(0, start - 3):start]
            if any(w in NEGATIONS for w in window):
                continue
            actual = counts.get(label, 0)
            if actual == 0:
                problem = f"mentions {plural(label)}, which the annotations do not contain"
            else:
                said = _count_before(tokens, start)
                if said is None or said == actual:
                    continue
                problem = f"says {said} {label if said == 1 else plural(label)}, the annotations count {actual}"
            if problem not in problems:
                problems.append(problem)
    return problems


def _occurrences(tokens: list[str], forms: set[tuple[str, ...]]):
    for form in forms:
        n = len(form)
        for i in range(len(tokens) - n + 1):
            if tuple(tokens[i:i + n]) == form:
                yield i, n


def _count_before(tokens: list[str], start: int) -> int | None:
    for i in range(start - 1, max(-1, start - 4), -1):
        token = tokens[i]
        if token in _COUNT_STOP:
            return None
        if token.isdigit():
            return int(token)
        if token in NUMBER_VALUES:
            return NUMBER_VALUES[token]
        if token in _ONE:
            return 1
    return None


def length_problem(text: str, slot: CaptionSlot, low: float, high: float) -> str | None:
    n = len(text.split())
    lo, hi = max(1, round(slot.words * low)), max(1, round(slot.words * high))
    if lo <= n <= hi:
        return None
    return f"{n} words; a {slot.name} caption should have about {slot.words} ({lo}-{hi})"


def jaccard(a: str, b: str) -> float:
    sa, sb = set(words(a)), set(words(b))
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / len(sa | sb)


def verdict_of(findings: list[Finding]) -> str:
    actions = {f.action for f in findings}
    if "drop" in actions:
        return "drop"
    return "flag" if "flag" in actions else "keep"


# ------------------------------------------------------------------------------------- the stage
def run_quality(config: BuildConfig, plan: Plan, manifest: Manifest, reporter: Reporter,
                clip_scorer: Callable[[list[tuple[ImageRecord, str]]], list[float]] | None = None) -> QualityStats:
    """Give every caption without a verdict its verdict and reasons, in manifest order."""
    quality = config.quality
    slots = {CAPTION_PREFIX + name: slot for name, slot in plan.slots}
    stats = QualityStats()
    vocabularies: dict[str, set[str]] = {}
    total = manifest.db.execute(f"SELECT COUNT(*) FROM outputs WHERE verdict IS NULL AND stage LIKE '{CAPTION_PREFIX}%'"
                                ).fetchone()[0]
    if not total:
        return stats
    reporter.progress("quality", 0, total)
    rank = {stage: i for i, stage in enumerate(plan.caption_stages)}
    last = 0
    while True:
        ids = [i for (i,) in manifest.db.execute(
            "SELECT DISTINCT image_id FROM outputs WHERE verdict IS NULL AND stage LIKE ? AND image_id > ? "
            "ORDER BY image_id LIMIT ?", (CAPTION_PREFIX + "%", last, PAGE))]
        if not ids:
            break
        last = ids[-1]
        marks = ",".join("?" * len(ids))
        rows = manifest.db.execute(
            f"SELECT image_id, stage, text FROM outputs WHERE verdict IS NULL AND stage LIKE ? AND image_id IN ({marks})",
            (CAPTION_PREFIX + "%", *ids)).fetchall()
        rows.sort(key=lambda r: (r[0], rank.get(r[1], len(rank)), r[1]))  # configured slot order
        images = {i: manifest.image(i) for i in sorted({r[0] for r in rows})}
        scores: list[float | None] = [None] * len(rows)
        if quality.clip is not None and quality.clip.action != "off" and clip_scorer is not None:
            scores = list(clip_scorer([(images[r[0]].record, r[2]) for r in rows]))
        with manifest.transaction():
            for (image_id, stage, text), score in zip(rows, scores, strict=True):
                record = images[image_id].record
                if record.source not in vocabularies:
                    vocabularies[record.source] = set(manifest.get_meta(f"classes:{record.source}", []))
                findings = _check_one(manifest, config, image_id, stage, text, record, slots.get(stage),
                                      vocabularies[record.source], score)
                verdict = verdict_of(findings)
                manifest.db.execute(
                    "UPDATE outputs SET verdict = ?, reasons = ?, norm = ?, clip_score = ? WHERE image_id = ? AND stage = ?",
                    (verdict, json.dumps([f.__dict__ for f in findings]), text_key(text), score, image_id, stage))
                stats.checked += 1
                stats.verdicts[verdict] = stats.verdicts.get(verdict, 0) + 1
                for f in findings:
                    stats.reasons[f.check] = stats.reasons.get(f.check, 0) + 1
        reporter.progress("quality", stats.checked, total)
        check_cancelled(reporter)
    return stats


def _check_one(manifest: Manifest, config: BuildConfig, image_id: int, stage: str, text: str, record: ImageRecord,
               slot: CaptionSlot | None, vocabulary: set[str], score: float | None) -> list[Finding]:
    quality = config.quality
    findings: list[Finding] = []
    if quality.contradictions != "off" and record.objects is not None:
        for problem in contradictions(text, class_counts(record), vocabulary):
            findings.append(Finding("contradiction", quality.contradictions, problem))
    if quality.duplicates != "off":
        key = text_key(text)
        earlier = manifest.db.execute(
            "SELECT i.key, o.stage FROM outputs o JOIN images i ON i.id = o.image_id WHERE o.norm = ? AND "
            "o.verdict IS NOT NULL AND o.verdict != 'drop' LIMIT 1", (key,)).fetchone()
        if earlier:
            findings.append(Finding("duplicate", quality.duplicates, f"same text as {earlier[0]} {earlier[1]}"))
        else:
            siblings = manifest.db.execute(
                "SELECT stage, text FROM outputs WHERE image_id = ? AND stage LIKE ? AND stage != ? AND "
                "verdict IS NOT NULL AND verdict != 'drop'", (image_id, CAPTION_PREFIX + "%", stage)).fetchall()
            for other_stage, other_text in siblings:
                overlap = jaccard(text, other_text)
                if overlap >= quality.near_duplicate:
                    findings.append(Finding("near_duplicate", quality.duplicates,
                                            f"{overlap:.0%} word overlap with this image's {other_stage}"))
                    break
    if quality.length != "off" and slot is not None:
        problem = length_problem(text, slot, *quality.length_range)
        if problem:
            findings.append(Finding("length", quality.length, problem))
    clip = quality.clip
    if clip is not None and clip.action != "off" and score is not None and score < clip.min_score:
        findings.append(Finding("clip", clip.action, f"CLIP score {score:.3f} below {clip.min_score:g}"))
    return findings


def recheck_duplicates(manifest: Manifest, config: BuildConfig) -> int:
    """After a merge: mark duplicates across shards (each shard only saw its own). Returns how many were new.

    Works one group of equal texts at a time, so memory follows the duplicates, not the dataset.
    """
    action = config.quality.duplicates
    if action == "off":
        return 0
    found = 0
    rank = {stage: i for i, stage in enumerate(manifest.get_meta("stages") or [])}
    groups = [norm for (norm,) in manifest.db.execute(
        "SELECT norm FROM outputs WHERE verdict IS NOT NULL AND stage LIKE ? GROUP BY norm HAVING COUNT(*) > 1",
        (CAPTION_PREFIX + "%",))]
    with manifest.transaction():
        for norm in groups:
            rows = manifest.db.execute(
                "SELECT o.image_id, o.stage, o.reasons, i.key FROM outputs o JOIN images i ON i.id = o.image_id "
                "WHERE o.norm = ? AND o.verdict IS NOT NULL AND o.stage LIKE ?", (norm, CAPTION_PREFIX + "%")).fetchall()
            rows.sort(key=lambda r: (r[0], rank.get(r[1], len(rank)), r[1]))  # the order the checks run in
            first: tuple[str, str] | None = None
            for image_id, stage, reasons_text, key in rows:
                before = [Finding(**r) for r in json.loads(reasons_text or "[]")]
                others = [f for f in before if f.check != "duplicate"]
                was_duplicate = len(others) != len(before)
                if verdict_of(others) == "drop":
                    continue  # dropped for another reason: it does not count as the original
                if first is None:
                    first = (key, stage)
                    findings = others
                else:
                    findings = [*others, Finding("duplicate", action, f"same text as {first[0]} {first[1]}")]
                    found += not was_duplicate
                manifest.db.execute("UPDATE outputs SET verdict = ?, reasons = ? WHERE image_id = ? AND stage = ?",
                                    (verdict_of(findings), json.dumps([f.__dict__ for f in findings]), image_id, stage))
    return found
