"""``rsvlm dataset status``: what a build has done, what failed and why."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.datasetdir import MANIFEST_NAME, shard_manifests
from rs_vlm_app.mpgi.manifest import ERROR, Manifest


def dataset_status(target: Path, *, limit: int | None = 20) -> dict[str, Any]:
    """Status of a dataset folder (its manifest and any shard manifests) or of one manifest file."""
    if target.is_file():
        return {"manifests": [manifest_status(target, limit=limit)]}
    if not target.is_dir():
        raise UserError("no such dataset folder", path=target)
    paths = []
    if (target / MANIFEST_NAME).is_file():
        paths.append(target / MANIFEST_NAME)
    paths += [path for _, _, path in shard_manifests(target)]
    if not paths:
        raise UserError(f"no {MANIFEST_NAME} or shard manifests here; run `rsvlm dataset build CONFIG.yaml` first",
                        path=target)
    return {"manifests": [manifest_status(p, limit=limit) for p in paths]}


def manifest_status(path: Path, *, limit: int | None = 20) -> dict[str, Any]:
    with Manifest(path, readonly=True) as manifest:
        db = manifest.db
        stages = manifest.get_meta("stages") or []
        n_images = manifest.image_count()
        done = manifest.stage_counts()
        failures = [f for f in manifest.failed_units() if f["status"] == ERROR]
        failed_per_stage: dict[str, int] = {}
        failure_reasons: dict[str, int] = {}
        for f in failures:
            failed_per_stage[f["stage"]] = failed_per_stage.get(f["stage"], 0) + 1
            reason = failure_reason(f["error"])
            failure_reasons[reason] = failure_reasons.get(reason, 0) + 1
        writers = manifest.get_meta("stage_models") or {}
        stage_rows = []
        for stage in ["rules", *stages]:
            d = done.get(stage, 0)
            failed = failed_per_stage.get(stage, 0)
            stage_rows.append({"stage": stage, "done": d, "failed": failed, "pending": max(0, n_images - d - failed),
                               "written_by": writers.get(stage)})
        verdicts = dict(db.execute("SELECT COALESCE(verdict, 'unchecked'), COUNT(*) FROM outputs "
                                   "WHERE stage LIKE 'caption:%' GROUP BY 1").fetchall())
        reasons = dict(db.execute(
            "SELECT json_extract(r.value, '$.check'), COUNT(*) FROM outputs o, json_each(o.reasons) r "
            "WHERE o.stage LIKE 'caption:%' AND o.reasons IS NOT NULL GROUP BY 1").fetchall())
        issues = manifest.issues()
        runs = manifest.runs()
        return {
            "manifest": str(path),
            "merged_from": manifest.get_meta("merged_from"),
            "shard": (manifest.get_meta("config") or {}).get("shard"),
            "images": n_images,
            "stages": stage_rows,
            "captions": verdicts,
            "quality_reasons": reasons,
            "attempts": manifest.attempt_counts(),
            "last_run": runs[-1] if runs else None,
            "runs": len(runs),
            "input_errors": sum(1 for i in issues if i["severity"] == "error"),
            "input_warnings": sum(1 for i in issues if i["severity"] == "warning"),
            "issues": issues if limit is None else issues[:limit],
            "failed_units": len(failures),
            "failure_reasons": failure_reasons,
            "failures": failures if limit is None else failures[:limit],
        }


def failure_reason(error: str | None) -> str:
    """A failed unit's reason in a word or two: the error's text before its first colon."""
    return (error or "unknown").split(":", 1)[0].strip() or "unknown"


def format_status(status: dict[str, Any]) -> str:
    """The status as text for a terminal."""
    blocks = [_format_one(m) for m in status["manifests"]]
    return "\n\n".join(blocks)


def _format_one(s: dict[str, Any]) -> str:
    lines = [f"manifest {s['manifest']}"]
    if s.get("shard"):
        lines[0] += f" (shard {s['shard']})"
    if s.get("merged_from"):
        lines.append(f"merged from {len(s['merged_from'])} shards: {', '.join(s['merged_from'])}")
    lines.append(f"images: {s['images']} ingested, {s['input_errors']} input errors (skipped), "
                 f"{s['input_warnings']} input warnings (corrected)")
    width = max([len(r["stage"]) for r in s["stages"]] + [5])
    lines.append(f"  {'stage':<{width}}  {'done':>8}  {'failed':>8}  {'pending':>8}")
    for r in s["stages"]:
        writer = r.get("written_by")
        by = f"  {writer['backend']} ({writer['model']})" if writer else ""
        lines.append(f"  {r['stage']:<{width}}  {r['done']:>8}  {r['failed']:>8}  {r['pending']:>8}{by}")
    captions = s["captions"]
    if captions:
        parts = [f"{captions.get(v, 0)} {v}" for v in ("keep", "flag", "drop", "unchecked") if captions.get(v)]
        reason_text = ", ".join(f"{k} {v}" for k, v in sorted(s["quality_reasons"].items()))
        lines.append(f"captions: {', '.join(parts)}" + (f" (reasons: {reason_text})" if reason_text else ""))
    attempts = s["attempts"]
    if attempts:
        lines.append("model calls: " + ", ".join(f"{n} {k}" for k, n in sorted(attempts.items())))
    run = s.get("last_run")
    if run:
        when = datetime.datetime.fromtimestamp(run["started_at"]).strftime("%Y-%m-%d %H:%M:%S")
        text = f"last run: #{run['id']} started {when}, {run['status']}"
        if run.get("error"):
            text += f": {run['error']}"
        lines.append(text)
    if s["failures"]:
        more = s["failed_units"] - len(s["failures"])
        lines.append(f"failed ({s['failed_units']}, retried on the next build):")
        lines.append("  by reason: " + ", ".join(f"{k} {n}" for k, n in sorted(s["failure_reasons"].items())))
        for f in s["failures"]:
            lines.append(f"  {f['image']} {f['stage']}: {f['error']} ({f['attempts']} attempts)")
        if more > 0:
            lines.append(f"  ... {more} more (--all lists every one)")
    if s["issues"]:
        total = s["input_errors"] + s["input_warnings"]
        more = total - len(s["issues"])
        lines.append(f"input problems ({total}):")
        for i in s["issues"]:
            lines.append(f"  {i['severity']}: {i['message']}")
        if more > 0:
            lines.append(f"  ... {more} more (--all lists every one)")
    return "\n".join(lines)


def status_json(status: dict[str, Any]) -> str:
    return json.dumps(status, indent=1, ensure_ascii=False)
