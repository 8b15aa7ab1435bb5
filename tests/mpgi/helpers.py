"""Helpers of the dataset-builder tests: configs over small folders, manifest queries, the CLI."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from rs_vlm_app.mpgi.config import BuildConfig
from tests.mpgi import data

REPO = Path(__file__).resolve().parents[2]


def folder_config(tmp_path: Path, base_url: str, model: str = "fake", *, images: int = 3, backend: dict | None = None,
                  **extra) -> BuildConfig:
    """A build over ``images`` class-folder images (two classes) with every stage on one endpoint."""
    root = tmp_path / "AID"
    if not root.exists():
        data.class_folders(root, {"forest": (images + 1) // 2, "river": images // 2})
    backend = backend or data.openai_backend(base_url, model)
    config = data.build_config(tmp_path / "out", [{"type": "folder", "root": str(root)}], backend, **extra)
    return BuildConfig.from_dict(config)


def query(manifest: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(f"file:{manifest}?mode=ro", uri=True) as db:
        return db.execute(sql, args).fetchall()


def outputs(manifest: Path) -> dict[tuple[str, str], str]:
    """{(image key, stage): text} of every accepted output."""
    rows = query(manifest, "SELECT i.key, o.stage, o.text FROM outputs o JOIN images i ON i.id = o.image_id")
    return {(key, stage): text for key, stage, text in rows}


def ok_attempts_per_unit(manifest: Path) -> dict[tuple[str, str], int]:
    rows = query(manifest, "SELECT i.key, a.stage, COUNT(*) FROM attempts a JOIN images i ON i.id = a.image_id "
                           "WHERE a.status = 'ok' GROUP BY a.image_id, a.stage")
    return {(key, stage): n for key, stage, n in rows}


def rsvlm(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m rs_vlm_app ARGS` in a subprocess importing this tree."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "rs_vlm_app", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=REPO)


def kill_build_mid_captions(config_path: Path, manifest: Path, captions: int, *, timeout_s: float = 120,
                            poll_s: float = 0.05) -> None:
    """Run `rsvlm dataset build CONFIG` in a subprocess and SIGKILL it once ``captions`` captions are
    committed to ``manifest`` (failing the test if the build ends first)."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "rs_vlm_app", "dataset", "build", str(config_path)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(poll_s)
            if not manifest.exists():
                continue
            try:
                if query(manifest, "SELECT COUNT(*) FROM outputs WHERE stage LIKE 'caption:%'")[0][0] >= captions:
                    break
            except sqlite3.OperationalError:  # the tables are being created
                continue
        assert process.poll() is None, "the build finished before it could be killed; give it more work"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
