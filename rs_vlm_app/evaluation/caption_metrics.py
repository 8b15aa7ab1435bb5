"""Caption metrics with the COCO caption evaluation code (pycocoevalcap): BLEU-1..4, METEOR, ROUGE-L,
CIDEr, and SPICE where it can run.

Captions are tokenised by the Stanford PTB tokenizer (lower case, punctuation removed) as the COCO
evaluation does; METEOR, the tokenizer and SPICE are Java programs. Values are on pycocoevalcap's
scale: BLEU, METEOR, ROUGE-L and SPICE in 0..1, CIDEr (its CIDEr-D variant) in 0..10. SPICE needs
the Stanford CoreNLP 3.6.0 jars, which pycocoevalcap downloads on first use: offline, and without
Java, it is skipped with a note, never waited for.

File formats (``PRED`` and ``REFS``; ids are compared as text):
- JSON: ``{"id": "caption"}`` (PRED) / ``{"id": ["ref", "ref", ...]}`` (REFS), or a list of
  ``{"image_id": ..., "caption": ...}`` records (the COCO results format), or a COCO annotation file
  ``{"annotations": [{"image_id": ..., "caption": ...}, ...]}``.
- CSV (comma, or tab for .tsv): a header with a ``caption`` column and an id column named
  ``image_id``, ``filepath``, ``image`` or ``filename``; one row per caption (REFS: several rows per
  image, the open_clip training CSV layout). PRED must hold one caption per image.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rs_vlm_app.errors import UserError

log = logging.getLogger(__name__)

BLEU = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
METRICS = (*BLEU, "METEOR", "ROUGE-L", "CIDEr", "SPICE")
ID_COLUMNS = ("image_id", "filepath", "image", "filename")
SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


@dataclass
class CaptionScores:
    """Corpus-level scores, per-image scores, and the metrics that could not run (with why)."""

    corpus: dict[str, float]
    per_image: dict[str, dict[str, float]]
    skipped: dict[str, str] = field(default_factory=dict)
    n_images: int = 0
    tokenizer: str = "PTB"


# -- reading files ---------------------------------------------------------------------------------


def read_predictions(path: str | Path) -> dict[str, str]:
    """One caption per image id from a PRED file (see the module docstring)."""
    path = Path(path)
    rows = _read_caption_rows(path)
    out: dict[str, str] = {}
    for image_id, caption in rows:
        if image_id in out:
            raise UserError(f"image {image_id!r} has more than one predicted caption; give one per image", path=path)
        out[image_id] = caption
    return out


def read_references(path: str | Path) -> dict[str, list[str]]:
    """All reference captions per image id from a REFS file (see the module docstring)."""
    path = Path(path)
    out: dict[str, list[str]] = {}
    for image_id, caption in _read_caption_rows(path):
        out.setdefault(image_id, []).append(caption)
    return out


def _read_caption_rows(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise UserError("no such file", path=path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError("not a UTF-8 text file", path=path) from None
    except OSError as exc:
        raise UserError(f"cannot read ({exc.strerror or exc})", path=path) from None
    if path.suffix.lower() == ".json":
        rows = _json_rows(text, path)
    elif path.suffix.lower() in (".csv", ".tsv", ".txt"):
        rows = _csv_rows(text, path)
    else:
        raise UserError("unknown caption file type; use .json or .csv (.tsv)", path=path)
    if not rows:
        raise UserError("no captions in the file", path=path)
    for image_id, caption in rows:
        if not caption.strip():
            raise UserError(f"image {image_id!r} has an empty caption", path=path)
    return rows


def _json_rows(text: str, path: Path) -> list[tuple[str, str]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UserError(f"not valid JSON ({exc})", path=path) from None
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    rows: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for image_id, value in data.items():
            captions = value if isinstance(value, list) else [value]
            for caption in captions:
                if not isinstance(caption, str):
                    raise UserError(f"image {image_id!r}: captions must be text, got {caption!r}", path=path)
                rows.append((str(image_id), caption))
        return rows
    if isinstance(data, list):
        for i, record in enumerate(data):
            if not (isinstance(record, dict) and "image_id" in record and isinstance(record.get("caption"), str)):
                raise UserError(f"record {i} is not an object with image_id and caption", path=path)
            rows.append((str(record["image_id"]), record["caption"]))
        return rows
    raise UserError("expected {id: caption(s)}, a list of {image_id, caption} or a COCO annotation file",
                    path=path)


def _csv_rows(text: str, path: Path) -> list[tuple[str, str]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    id_column = next((c for c in ID_COLUMNS if c in header), None)
    missing = [name for name, ok in (("caption", "caption" in header),
                                     ("/".join(ID_COLUMNS), id_column is not None)) if not ok]
    if missing:
        raise UserError(f"missing column(s) {', '.join(missing)} in the header (found: {', '.join(header) or 'none'})",
                        path=path)
    rows = []
    for number, row in enumerate(reader, start=2):
        image_id, caption = row.get(id_column), row.get("caption")
        if image_id is None or caption is None:
            raise UserError(f"line {number} has too few fields", path=path)
        rows.append((image_id.strip(), caption))
    return rows


def match_ids(predictions: dict[str, str], references: dict[str, list[str]], pred_path: Path | str,
              refs_path: Path | str) -> None:
    """Every prediction needs references and every referenced image a prediction."""
    no_refs = [i for i in predictions if i not in references]
    if no_refs:
        raise UserError(f"{len(no_refs)} predicted image(s) have no reference captions in {refs_path} "
                        f"(first: {no_refs[0]!r}); ids must match exactly", path=pred_path)
    no_pred = [i for i in references if i not in predictions]
    if no_pred:
        raise UserError(f"{len(no_pred)} referenced image(s) have no prediction (first: {no_pred[0]!r})",
                        path=pred_path)


# -- scoring ---------------------------------------------------------------------------------------


def java_available() -> bool:
    return shutil.which("java") is not None


def spice_unavailable_reason() -> str | None:
    """None when SPICE can run here; otherwise why not (one line)."""
    if not java_available():
        return "needs Java, which is not installed"
    from pycocoevalcap import spice

    lib = Path(spice.__file__).parent / "lib"
    missing = [jar for jar in SPICE_JARS if not (lib / jar).is_file()]
    if missing:
        return (f"needs the Stanford CoreNLP 3.6.0 jars in {lib} (pycocoevalcap downloads them on first use; "
                "this machine has none)")
    if not os.access(Path(spice.__file__).parent, os.W_OK):
        return f"needs a writable {Path(spice.__file__).parent} for its cache"
    return None


def caption_metrics(predictions: dict[str, str], references: dict[str, list[str]], *,
                    spice: bool = True) -> CaptionScores:
    """Score ``predictions`` (id -> caption) against ``references`` (id -> captions), same ids."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(predictions) != set(references):
        raise ValueError("predictions and references must cover the same image ids")
    ids = sorted(predictions)
    skipped: dict[str, str] = {}
    res, gts, tokenizer = _tokenize(predictions, references, ids)
    if tokenizer != "PTB":
        skipped["tokenizer"] = "Java is not installed: captions tokenised in Python (lower case, punctuation removed)"
    corpus: dict[str, float] = {}
    per_image: dict[str, dict[str, float]] = {i: {} for i in ids}

    bleu, bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
    for n, name in enumerate(BLEU):
        _store(corpus, per_image, ids, name, bleu[n], bleu_each[n])
    if java_available():
        meteor, meteor_each = _meteor(gts, res)
        _store(corpus, per_image, ids, "METEOR", meteor, meteor_each)
    else:
        skipped["METEOR"] = "needs Java, which is not installed"
    rouge, rouge_each = Rouge().compute_score(gts, res)
    _store(corpus, per_image, ids, "ROUGE-L", rouge, rouge_each)
    cider, cider_each = Cider().compute_score(gts, res)
    _store(corpus, per_image, ids, "CIDEr", cider, cider_each)

    reason = spice_unavailable_reason() if spice else "not asked for"
    if reason is None:
        try:
            value, each = _spice(gts, res)
            _store(corpus, per_image, ids, "SPICE", value, each)
        except Exception as exc:  # a Java failure must not lose the other metrics
            skipped["SPICE"] = f"failed ({' '.join(str(exc).split())[:200]})"
    else:
        skipped["SPICE"] = reason
    return CaptionScores(corpus=corpus, per_image=per_image, skipped=skipped, n_images=len(ids),
                         tokenizer=tokenizer)


def _store(corpus, per_image, ids, name, value, each) -> None:
    corpus[name] = float(value)
    for image_id, v in zip(ids, each, strict=True):
        per_image[image_id][name] = float(v)


def _tokenize(predictions, references, ids) -> tuple[dict, dict, str]:
    if java_available():
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer = PTBTokenizer()
        with _quiet_stderr():  # the Java tokenizer reports its speed on stderr
            res = tokenizer.tokenize({i: [{"caption": predictions[i]}] for i in ids})
            gts = tokenizer.tokenize({i: [{"caption": c} for c in references[i]] for i in ids})
        return res, gts, "PTB"
    res = {i: [python_tokenize(predictions[i])] for i in ids}
    gts = {i: [python_tokenize(c) for c in references[i]] for i in ids}
    return res, gts, "python"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 (inherited by child processes) to /dev/null for a moment."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def python_tokenize(caption: str) -> str:
    """Lower-case words without punctuation: the fallback when Java (and PTBTokenizer) is missing."""
    return " ".join(_WORD.findall(caption.lower()))


def _meteor(gts, res) -> tuple[float, list[float]]:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        value, each = scorer.compute_score(gts, res)
    finally:
        scorer.meteor_p.stdin.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()
        scorer.meteor_p = _ClosedProcess()  # its __del__ closes again
    return value, each


class _ClosedProcess:
    class _Stdin:
        def close(self) -> None:
            pass

    stdin = _Stdin()

    def kill(self) -> None:
        pass

    def wait(self) -> None:
        pass


def _spice(gts, res) -> tuple[float, list[float]]:
    from pycocoevalcap.spice.spice import Spice

    value, each = Spice().compute_score(gts, res)
    return value, [float(e["All"]["f"]) for e in each]


# -- the evaluation run ----------------------------------------------------------------------------

RESULT_JSON = "caption_metrics.json"
RESULT_CSV = "caption_metrics.csv"
PER_IMAGE_CSV = "caption_metrics_per_image.csv"


def evaluate_captions(pred_path: str | Path, refs_path: str | Path, out_dir: str | Path, *,
                      spice: bool = True) -> CaptionScores:
    """Read PRED and REFS, score them, write OUT/caption_metrics.json, .csv and _per_image.csv."""
    from rs_vlm_app.evaluation.report_files import write_csv, write_json

    pred_path, refs_path, out_dir = Path(pred_path), Path(refs_path), Path(out_dir)
    predictions = read_predictions(pred_path)
    references = read_references(refs_path)
    match_ids(predictions, references, pred_path, refs_path)
    scores = caption_metrics(predictions, references, spice=spice)
    names = [m for m in METRICS if m in scores.corpus]
    write_json(out_dir / RESULT_JSON, {
        "predictions": str(pred_path), "references": str(refs_path), "images": scores.n_images,
        "references_per_image": sum(len(v) for v in references.values()) / max(1, len(references)),
        "tokenizer": scores.tokenizer, "metrics": scores.corpus, "skipped": scores.skipped,
        "scale": "BLEU, METEOR, ROUGE-L, SPICE in 0..1; CIDEr (CIDEr-D) in 0..10",
    })
    write_csv(out_dir / RESULT_CSV, ["metric", "value"], [[m, scores.corpus[m]] for m in names])
    write_csv(out_dir / PER_IMAGE_CSV, ["image_id", "prediction", *names],
              [[i, predictions[i], *(scores.per_image[i][m] for m in names)] for i in sorted(predictions)])
    return scores
