"""Run-directory files: training-state checkpoints (resume) and saved models (use).

RUNDIR/
  run.json                      the run's TrainConfig (what the run is)
  checkpoints/step_00000500.pt  training state: model, optimizer, scaler, schedule, data position, RNG
  epoch_N.safetensors           the model after epoch N (plain open_clip state dict, LoRA merged)
  model.safetensors             the final model
  model_config.json             the open_clip model config of those weights
  open_clip_config.json         the same in open_clip's local-dir format (model_cfg + preprocess_cfg)
  summary.json                  written when the run has finished

Every file is written atomically. Training states hold only tensors, numbers, strings, lists and
dicts, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rs_vlm_app.atomic import atomic_path, write_text_atomic
from rs_vlm_app.errors import UserError
from rs_vlm_app.training.rundir import list_states

STATE_FORMAT = "rs-vlm-train-state"
STATE_VERSION = 1


def prune_states(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` training states."""
    for _step, path in list_states(run_dir)[:-keep]:
        path.unlink(missing_ok=True)


def save_state(path: Path, state: dict[str, Any]) -> Path:
    """Write a training state atomically (a kill while writing leaves the previous one intact)."""
    payload = {"format": STATE_FORMAT, "version": STATE_VERSION, **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_state(path: Path) -> dict[str, Any]:
    """A training state written by :func:`save_state` (weights-only unpickling)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read the training checkpoint: {str(exc).splitlines()[0][:200]}", path=path) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError("not an rs-vlm training checkpoint", path=path)
    if state.get("version") != STATE_VERSION:
        raise UserError(f"training checkpoint version {state.get('version')} is not supported "
                        f"(this rs-vlm reads version {STATE_VERSION})", path=path)
    return state


def load_newest_state(run_dir: Path, warn: Callable[[str], None] | None = None) -> tuple[Path, dict[str, Any]] | None:
    """(path, state) of the newest readable training state in ``run_dir``, None when there is none.

    A newest state that cannot be read (a disk fault, a copy cut short) does not end the run: it is
    renamed ``*.corrupt`` (so pruning never keeps it in place of a good one), ``warn`` is told, and the
    one before it is used. When no state is readable the newest one's error is raised.
    """
    first_error: UserError | None = None
    for _step, path in reversed(list_states(run_dir)):
        try:
            return path, load_state(path)
        except UserError as exc:
            first_error = first_error or exc
            with contextlib.suppress(OSError):
                path.replace(path.with_name(path.name + ".corrupt"))
            if warn is not None:
                warn(f"{exc}; set aside as {path.name}.corrupt, trying the checkpoint before it")
    if first_error is not None:
        raise first_error
    return None


def to_cpu(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}


def save_model(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """A plain state dict as .safetensors, atomically; open_clip and rsvlm load it as is."""
    from safetensors.torch import save_file

    tensors = to_cpu(state_dict)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def write_model_configs(run_dir: Path, model_cfg: dict[str, Any], preprocess_cfg: dict[str, Any]) -> None:
    """model_config.json (plain open_clip config) and open_clip_config.json (local-dir format)."""
    write_text_atomic(run_dir / "model_config.json", json.dumps(model_cfg, indent=2) + "\n")
    pp = {k: list(v) if isinstance(v, tuple) else v for k, v in preprocess_cfg.items()}
    write_text_atomic(run_dir / "open_clip_config.json",
                      json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pp}, indent=2) + "\n")


# --- RNG states as weights-only-safe values ---------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors, numbers and lists."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
