"""The run directory: is it new, the same run to continue, a finished run, or something else?

Standard library only, so the CLI can refuse a wrong directory before importing torch.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rs_vlm_app import __version__
from rs_vlm_app.atomic import write_text_atomic
from rs_vlm_app.errors import UserError
from rs_vlm_app.training.config import TrainConfig, identity, identity_differences

log = logging.getLogger(__name__)

RUN_JSON = "run.json"
SUMMARY_JSON = "summary.json"
CHECKPOINT_DIR = "checkpoints"
_STATE_NAME = re.compile(r"^step_(\d+)\.pt$")


def state_path(run_dir: Path, step: int) -> Path:
    """Where the training state after optimizer step ``step`` is kept."""
    return run_dir / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def list_states(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the training states in ``run_dir``, oldest first."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _STATE_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_state(run_dir: Path) -> Path | None:
    states = list_states(run_dir)
    return states[-1][1] if states else None


@dataclass(frozen=True)
class RunStart:
    """How a run begins: fresh, from a training state, or not at all (already finished)."""

    state: Path | None = None
    existing: bool = False
    finished: bool = False
    summary: dict[str, Any] | None = None


def inspect(config: TrainConfig) -> RunStart:
    """Decide how ``config`` starts in its run directory; refuse a directory holding anything else."""
    run_dir = config.run_dir
    run_json = run_dir / RUN_JSON
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError("exists and is not a folder; choose a run directory with -o", path=run_dir)
    if not run_json.is_file():
        if config.resume:
            raise UserError("--resume: this folder holds no training run to continue", path=run_dir)
        if run_dir.is_dir() and any(not p.name.startswith(".") for p in run_dir.iterdir()):
            raise UserError("folder is not empty and holds no rs-vlm training run; choose a new or empty "
                            "run directory with -o", path=run_dir)
        return RunStart()
    try:
        saved = json.loads(run_json.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError("unreadable run.json; this does not look like an rs-vlm run directory", path=run_dir) from None
    differences = identity_differences(identity(saved), identity(config))
    if differences:
        more = f" and {len(differences) - 1} more" if len(differences) > 1 else ""
        raise UserError(
            f"already holds a different training run ({differences[0]}{more}); choose another run directory "
            "with -o, or give that run's settings to continue it",
            path=run_dir,
        )
    summary_path = run_dir / SUMMARY_JSON
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        return RunStart(existing=True, finished=True, summary=summary)
    state = latest_state(run_dir)
    if state is None and config.resume:
        log.warning("%s: no checkpoint was written yet; starting the run from the beginning", run_dir)
    return RunStart(state=state, existing=True)


def remove_stale_temporaries(run_dir: Path) -> int:
    """Delete half-written files a killed run left behind (atomic writes' ``.NAME.*.tmp*`` siblings)."""
    removed = 0
    for folder in (run_dir, run_dir / CHECKPOINT_DIR):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(".") and ".tmp" in path.name and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def write_run_json(config: TrainConfig, world_size: int) -> None:
    record = {
        "rs_vlm_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "world_size": world_size,
        "config": config.to_dict(),
    }
    write_text_atomic(config.run_dir / RUN_JSON, json.dumps(record, indent=1, sort_keys=True) + "\n")


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_text_atomic(run_dir / SUMMARY_JSON, json.dumps(summary, indent=1, sort_keys=True) + "\n")


@dataclass(frozen=True)
class RunInfo:
    """A run folder as a front end shows it: what it trains, how far it got, its model once finished."""

    run_dir: Path
    task: str
    config: dict[str, Any]
    finished: bool
    steps: int | None = None
    model: Path | None = None          # the final model (safetensors), once finished
    model_config: Path | None = None   # the open_clip model config beside it

    @property
    def epochs(self) -> int | None:
        value = self.config.get("epochs")
        return int(value) if isinstance(value, int) else None


def describe_run(run_dir: Path) -> RunInfo:
    """Read ``run_dir``'s run.json and summary.json; a UserError when it holds no rs-vlm training run."""
    run_dir = Path(run_dir)
    run_json = run_dir / RUN_JSON
    if not run_dir.is_dir():
        raise UserError("no such run folder", path=run_dir)
    if not run_json.is_file():
        raise UserError(f"holds no rs-vlm training run (no {RUN_JSON})", path=run_dir)
    try:
        config = json.loads(run_json.read_text(encoding="utf-8"))["config"]
        task = str(config["task"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"unreadable {RUN_JSON}; this does not look like an rs-vlm run folder", path=run_dir) from None
    summary: dict[str, Any] = {}
    if (run_dir / SUMMARY_JSON).is_file():
        try:
            summary = json.loads((run_dir / SUMMARY_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {}
    finished = bool(summary.get("finished"))
    model = run_dir / str(summary.get("model") or "model.safetensors")
    model_config = run_dir / str(summary.get("model_config") or "model_config.json")
    return RunInfo(run_dir, task, config, finished, summary.get("steps"),
                   model if finished and model.is_file() else None,
                   model_config if model_config.is_file() else None)
