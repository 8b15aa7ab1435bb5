"""Process-wide settings applied by `rsvlm` at start (rs_vlm_app/runtime.py), seen from a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from rs_vlm_app.runtime import usable_cpus

PROBE = ("import json, os; from rs_vlm_app.runtime import configure_process; configure_process(); "
         "print(json.dumps({k: os.environ.get(k) for k in "
         "('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OMP_WAIT_POLICY', 'GDAL_CACHEMAX')}))")


def settings_with(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GDAL_CACHEMAX")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def test_defaults_follow_the_usable_cpus():
    got = settings_with()
    cpus = str(usable_cpus())
    assert got == {"OMP_NUM_THREADS": cpus, "MKL_NUM_THREADS": cpus, "OMP_WAIT_POLICY": "PASSIVE",
                   "GDAL_CACHEMAX": "128"}


def test_a_thread_count_the_user_gave_holds_for_both_libraries_and_is_never_overridden():
    assert settings_with(OMP_NUM_THREADS="1")["MKL_NUM_THREADS"] == "1"
    assert settings_with(MKL_NUM_THREADS="3")["OMP_NUM_THREADS"] == "3"
    got = settings_with(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="ACTIVE", GDAL_CACHEMAX="512")
    assert (got["OMP_NUM_THREADS"], got["OMP_WAIT_POLICY"], got["GDAL_CACHEMAX"]) == ("1", "ACTIVE", "512")


EXIT_SCRIPT = """
import atexit, pathlib, sys, tempfile, threading, time
import torch  # noqa: F401 - exit_process skips the teardown only once torch is loaded
from rs_vlm_app.runtime import exit_process
out = pathlib.Path(sys.argv[1])
folder = tempfile.TemporaryDirectory()
(out / "tempdir").write_text(folder.name)
atexit.register(lambda: (out / "atexit").write_text("ran"))
if sys.argv[2] == "thread":   # a non-daemon thread still working: the interpreter must wait for it
    threading.Thread(target=lambda: (time.sleep(1.0), (out / "thread").write_text("done"))).start()
sys.stdout.write("partial line without newline")
exit_process(3)
"""


def _run_exit_script(tmp_path, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", EXIT_SCRIPT, str(tmp_path), mode], capture_output=True, text=True,
                          env={**os.environ, "RSVLM_FULL_TEARDOWN": ""}, timeout=120)


def test_exit_process_keeps_the_exit_code_output_and_atexit_work(tmp_path):
    done = _run_exit_script(tmp_path, "plain")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "partial line without newline"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not os.path.exists((tmp_path / "tempdir").read_text())   # temporary folders are removed


def test_exit_process_waits_for_a_running_thread(tmp_path):
    done = _run_exit_script(tmp_path, "thread")
    assert done.returncode == 3, done.stderr
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "atexit").read_text() == "ran"
