"""The demo folder's bookkeeping: which stages are finished, with which settings (demo_state.json).

A stage is done when its record is in the state file and its outputs exist; a re-run skips it. The
settings are part of the state: a folder made with other settings is refused (``--fresh`` starts
over), and a non-empty folder that is not a demo folder is never touched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from rs_vlm_app import __version__
from rs_vlm_app.atomic import write_text_atomic
from rs_vlm_app.errors import UserError

STATE_NAME = "demo_state.json"
#: Everything the demo writes at the top of its folder (what --fresh removes, and nothing else).
DEMO_ENTRIES = ("world", "dataset", "model", "localize", "classify", "selo", "cache", "figures",
                "report.html", "demo.json", STATE_NAME)


class DemoState:
    """Finished stages and their summaries, persisted after every stage."""

    def __init__(self, folder: Path, settings: dict[str, Any]):
        self.folder = folder
        self.path = folder / STATE_NAME
        self.settings = settings
        self.stages: dict[str, dict[str, Any]] = {}

    @classmethod
    def open(cls, folder: Path, settings: dict[str, Any], *, fresh: bool) -> DemoState:
        """The state of ``folder`` for a run with ``settings`` (checks and, with ``fresh``, clears it)."""
        folder = Path(folder)
        state = cls(folder, settings)
        if not folder.exists():
            return state
        if not folder.is_dir():
            raise UserError("exists and is not a folder; give a new or empty folder for the demo", path=folder)
        entries = [p.name for p in folder.iterdir()]
        if not entries:
            return state
        path = folder / STATE_NAME
        if not path.is_file():
            raise UserError("is not empty and holds no rsvlm demo; give a new or empty folder "
                            f"(found {sorted(entries)[0]!r} there)", path=folder)
        if fresh:
            for name in DEMO_ENTRIES:
                target = folder / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            return state
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the demo's state file ({exc}); add --fresh to start over",
                            path=path) from None
        if saved.get("settings") != settings:
            differences = sorted(k for k in set(settings) | set(saved.get("settings", {}))
                                 if settings.get(k) != saved.get("settings", {}).get(k))
            raise UserError(f"holds a demo made with other settings ({', '.join(differences)}); add --fresh to "
                            "start over, or choose another folder", path=folder)
        state.stages = dict(saved.get("stages", {}))
        return state

    def done(self, stage: str) -> dict[str, Any] | None:
        """The record of a finished stage, or None."""
        return self.stages.get(stage)

    def finish(self, stage: str, record: dict[str, Any]) -> None:
        self.stages[stage] = record
        self.save()

    def forget_from(self, stages: tuple[str, ...], stage: str) -> None:
        """Forget ``stage`` and every later one (their inputs are being remade)."""
        for name in stages[stages.index(stage):]:
            self.stages.pop(name, None)
        self.save()

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps({"rs_vlm_version": __version__, "settings": self.settings,
                                                 "stages": self.stages}, indent=1))
