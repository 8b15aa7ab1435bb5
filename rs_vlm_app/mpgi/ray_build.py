"""`rsvlm dataset build --engine ray`: the build's shards as Ray tasks, merged at the end.

Each task builds one shard (``Shard(i, n)``: the images hashed to it) into its own manifest
(DIR/manifest-shard-i-of-n.sqlite), exactly as ``--shard i/n`` does on a machine of its own; when
every shard is complete the manifests are merged into DIR/manifest.sqlite (rs_vlm_app.mpgi.merge).
A task whose worker dies is re-run by Ray and resumes from its shard's manifest; cancel stops the
tasks and keeps every reply committed so far. Every worker must reach the config's model endpoints
and the dataset folder (a shared filesystem on a multi-machine cluster).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rs_vlm_app.errors import Cancelled, UserError
from rs_vlm_app.reporting import NullReporter, Reporter

#: A shard whose worker dies is re-run this many times before the build gives up on it.
TASK_RETRIES = 3


def _build_shard(config, index: int, count: int) -> dict[str, Any]:
    from rs_vlm_app.mpgi.config import Shard
    from rs_vlm_app.mpgi.pipeline import build_dataset

    return build_dataset(config.with_shard(Shard(index, count))).to_dict()


def build_on_ray(config, *, shards: int | None = None, address: str | None = None,
                 reporter: Reporter | None = None) -> dict[str, Any]:
    """Build ``config`` (an mpgi BuildConfig without a shard) as ``shards`` Ray tasks (default: one per
    CPU of the cluster) and merge them. Returns a BuildSummary-like dict with ``shards`` added."""
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install 'rs-vlm[distributed]'") from None
    from rs_vlm_app.archive.ray_engine import connect
    from rs_vlm_app.mpgi.merge import merge_shards

    reporter = reporter or NullReporter()
    if getattr(config, "shard", None) is not None:
        raise UserError("--engine ray makes its own shards; leave out --shard")
    started_here = connect(address, shards)
    try:
        count = shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(max_retries=TASK_RETRIES, num_cpus=1)(_build_shard)
        config_ref = ray.put(config)
        pending = {task.remote(config_ref, i, count): i for i in range(1, count + 1)}
        reporter.log(f"dataset build: {count} shard(s) on Ray")
        results: list[dict] = []
        reporter.progress("shards", 0, count)
        while pending:
            if reporter.cancel_requested():
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise Cancelled()
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                index = pending.pop(ref)
                try:
                    results.append(ray.get(ref))
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if isinstance(exc.cause, UserError) else None
                    raise UserError(str(cause) if cause else f"shard {index}/{count} failed: "
                                    f"{' '.join(str(exc).split())[:300]}") from None
                reporter.progress("shards", len(results), count)
    finally:
        if started_here:
            ray.shutdown()
    merged = merge_shards(config.output, force=True)
    verdicts: Counter = Counter()
    for r in results:
        verdicts.update(r.get("verdicts", {}))
    summary = {key: sum(r.get(key, 0) for r in results) for key in
               ("images_added", "inputs_skipped", "input_warnings", "requests", "retried", "failed_units",
                "complete_images")}
    summary.update(output=str(config.output), manifest=merged.output, images=merged.images, captions=merged.captions,
                   verdicts=dict(verdicts), shards=count,
                   status="completed" if all(r.get("status") == "completed" for r in results) else "incomplete")
    return summary


