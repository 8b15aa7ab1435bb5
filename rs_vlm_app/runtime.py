"""Process-wide settings, applied once when a command starts, before torch, OpenMP or GDAL load.

Why each one (docs/performance.md has the measurements):

- ``OMP_WAIT_POLICY=PASSIVE``: by default OpenMP threads spin for a while after every parallel
  region. On a busy machine (2 shared cores, another job, GDAL decoding on the prefetch thread) the
  spinning threads steal the cores the other threads need: torch ran 15-30x slower there. Passive
  threads sleep instead; on an idle machine that costs a few per cent at most for our batch sizes.
- ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``: the CPUs this process may really use (its affinity
  mask and its cgroup's CPU quota), not the machine's core count, which torch would see in a
  container and oversubscribe.
- ``GDAL_CACHEMAX``: GDAL's block cache defaults to 5 % of RAM (over 1 GiB on a 24 GiB machine) and
  fills with blocks the block reader never reads twice; 128 MiB keeps memory flat on any raster.
- glibc's mmap threshold is pinned at 4 MiB: big arrays (row chunks, cut tiles) are then always
  mapped and given back to the system when freed. Left dynamic, glibc raises the threshold to
  32 MiB after the first big free and serves later chunks from a heap that never shrinks.

A variable the user has set is never changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
from pathlib import Path
from typing import NoReturn

#: GDAL's block cache, in MiB (GDAL reads a plain number as MiB).
GDAL_CACHE_MIB = 128
#: Allocations at least this big are served by mmap (and returned to the system on free).
MMAP_THRESHOLD = 4 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number

_configured = False


def usable_cpus() -> int:
    """CPUs this process can use: its affinity mask, bounded by a cgroup v2 CPU quota if any."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def configure_process() -> None:
    """Apply the settings above (once per process; before torch or rasterio is imported)."""
    global _configured
    if _configured:
        return
    _configured = True
    # A thread count the user gave for one library holds for the other: OMP_NUM_THREADS=1 alone must
    # not leave MKL on every CPU (different threads, different float summation order).
    threads = os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS") or str(usable_cpus())
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OMP_NUM_THREADS", threads)
    os.environ.setdefault("MKL_NUM_THREADS", threads)
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MIB))
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        _pin_mmap_threshold()


def _pin_mmap_threshold() -> None:
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass  # not glibc (musl, macOS, Windows): nothing to pin


#: Set to 1 to let the interpreter tear everything down at exit (see exit_process).
FULL_TEARDOWN_VARIABLE = "RSVLM_FULL_TEARDOWN"


def exit_process(code: int) -> NoReturn:
    """End a finished command with ``code``, without the interpreter's teardown once torch is loaded.

    Tearing down a process that imported torch (freeing every module and object one by one) takes
    about a second here, as long as the rest of a cached query. Every output is already written and
    renamed when a command returns, so this runs what exit would run that matters (the ``atexit``
    handlers: logging, temporary folders, Ray, multiprocessing), flushes the standard streams and
    ends the process. It falls back to an ordinary exit when torch was not imported, when a
    non-daemon thread is still running (the interpreter would wait for it), or when
    RSVLM_FULL_TEARDOWN=1.
    """
    import sys
    import threading

    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if "torch" not in sys.modules or others or os.environ.get(FULL_TEARDOWN_VARIABLE, "") not in ("", "0"):
        sys.exit(code)
    import atexit
    import contextlib

    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
