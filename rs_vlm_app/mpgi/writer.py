"""The manifest's writes during the model stages, made by one thread of their own, in groups.

The event loop hands over what happened (a call starts, a call ends without an output, a reply is
accepted) and goes on sending requests; it never waits for SQLite or the disk. The writer thread
commits everything that accumulated since its last commit in one transaction, in the order it was
handed over (a call's start is never written after its end). A group holding accepted replies is
flushed to disk (fsync) before their futures resolve, so a reply counts as done only once a kill -9
or a power cut cannot lose it. Accepted replies are flushed at most every ``flush_interval_s``
(those that arrive in between, or while a flush runs, share the next one: on a busy build one fsync
covers many replies); bookkeeping rides along with them, or is committed on its own (without a
flush) after ``bookkeeping_s`` when no reply comes. A call is recorded as running once it has run
for ``bookkeeping_s``; one that ends sooner is written once, ended (most calls: one row, not an
insert and an update). So a build killed at any instant loses no accepted reply, and at most the
last ``bookkeeping_s`` of records of calls that started or failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

from rs_vlm_app.mpgi.manifest import OK, RUNNING, Manifest

#: accepted replies are flushed to disk at most this often (the ones that arrive meanwhile share it)
FLUSH_INTERVAL_S = 0.02
#: records of calls that started or failed wait at most about this long for a flush to ride along with
BOOKKEEPING_S = 0.5


class ManifestWriter:
    """One thread with its own connection to the manifest that commits what has accumulated.

    ``start()`` and ``close()`` from the event loop; ``begin``, ``end`` and ``accept`` from the loop's
    thread. While it runs, nothing else writes attempts or outputs to the manifest. After an error
    the writer writes nothing more: every later call raises it, and ``error`` holds it.
    """

    def __init__(self, path: Path, *, flush_interval_s: float = FLUSH_INTERVAL_S, bookkeeping_s: float = BOOKKEEPING_S):
        self.path = path
        self.flush_interval_s = flush_interval_s
        self.bookkeeping_s = bookkeeping_s
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # (the hand-over methods take the lock itself: cheaper)
        self._begun: list[tuple] = []
        self._ended: list[tuple] = []
        self._accepted: list[tuple] = []
        self._futures: list[asyncio.Future] = []
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()
        self._idle = False  # the writer waits for an accepted reply (only then does accept() wake it)
        self._empty = False  # the writer waits with nothing to write (only then does bookkeeping wake it)
        self.commits = 0  # transactions committed (for tests and benchmarks)

    async def start(self) -> None:
        """Open the writer's connection in its thread; raises what opening it raised."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="manifest-writer", daemon=True)
        self._thread.start()
        await self._loop.run_in_executor(None, self._opened.wait)
        if self.error is not None:
            raise self.error

    # ----------------------------------------------------------------------------- handing over
    def begin(self, row: tuple) -> None:
        """A call starts: (id, image id, stage, attempt number, run id, backend, model, prompt hash, started_at)."""
        self._hand_over(self._begun, row)

    def end(self, row: tuple) -> None:
        """A call ended without an output: (status, error, output, finished_at, latency_s, id)."""
        self._hand_over(self._ended, row)

    def _hand_over(self, queue: list[tuple], row: tuple) -> None:
        """Queue a bookkeeping row; wake the writer only when it waits with nothing to write."""
        with self._lock:
            self._check()
            queue.append(row)
            if self._empty:
                self._empty = False
                self._cond.notify()

    def accept(self, row: tuple) -> asyncio.Future:
        """A reply becomes its unit's output: (attempt id, image id, stage, text, finished_at, latency_s).
        The future resolves once it is on disk (or fails with the error that stopped the writer)."""
        assert self._loop is not None, "start() the writer first"
        future = self._loop.create_future()
        with self._lock:
            self._check()
            self._accepted.append(row)
            self._futures.append(future)
            if self._idle:
                self._cond.notify()
        return future

    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if self._closing:
            raise RuntimeError("the manifest writer is closed")

    async def close(self) -> None:
        """Write what is left, then stop the thread. Does not raise: see ``error``."""
        if self._thread is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify()
        try:
            await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, self._thread.join))
        finally:
            self._thread.join()  # cancelled while waiting: the last group takes milliseconds

    # ------------------------------------------------------------------------------ the thread
    def _run(self) -> None:
        try:
            manifest = Manifest(self.path)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop by start()
            self.error = exc
            self._opened.set()
            return
        self._opened.set()
        last_flush = 0.0
        unwritten: dict[int, tuple] = {}  # calls started, not recorded yet: id -> begin row
        try:
            while True:
                with self._cond:
                    self._wait_for_work(last_flush, bool(unwritten))
                    begun, ended, accepted, futures = self._begun, self._ended, self._accepted, self._futures
                    self._begun, self._ended, self._accepted, self._futures = [], [], [], []
                    closing = self._closing
                if accepted:
                    last_flush = time.monotonic()
                if self.error is None:
                    group = self._group(unwritten, begun, ended, accepted, closing)
                    try:
                        if any(group):
                            manifest.write_attempts(*group)
                            self.commits += 1
                    except BaseException as exc:  # noqa: BLE001 - stops the build through the loop
                        self.error = exc
                if futures:
                    with contextlib.suppress(RuntimeError):  # a loop torn down without close(): no one waits
                        self._loop.call_soon_threadsafe(_settle, futures, self.error)
                if closing and not (unwritten and self.error is None):
                    return  # everything is written
        finally:
            manifest.close()

    def _group(self, unwritten: dict[int, tuple], begun: list[tuple], ended: list[tuple], accepted: list[tuple],
               closing: bool) -> tuple[list[tuple], list[tuple], list[tuple]]:
        """What to write now, for Manifest.write_attempts: calls that ended go in as one row each (or as
        an update when they were recorded running); calls still running go in once ``bookkeeping_s``
        old (all of them when closing)."""
        for row in begun:
            unwritten[row[0]] = row
        attempts: list[tuple] = []
        updates: list[tuple] = []
        for status, error, output, finished_at, latency_s, attempt_id in ended:
            row = unwritten.pop(attempt_id, None)
            if row is None:
                updates.append((status, error, output, finished_at, latency_s, attempt_id))
            else:
                attempts.append((*row[:8], status, output, error, row[8], finished_at, latency_s))
        outputs = []
        for attempt_id, image_id, stage, text, finished_at, latency_s in accepted:
            row = unwritten.pop(attempt_id, None)
            if row is None:
                updates.append((OK, None, text, finished_at, latency_s, attempt_id))
            else:
                attempts.append((*row[:8], OK, text, None, row[8], finished_at, latency_s))
            outputs.append((image_id, stage, attempt_id, text))
        old = time.time() - self.bookkeeping_s
        for attempt_id, row in list(unwritten.items()):
            if closing or row[8] <= old:
                del unwritten[attempt_id]
                attempts.append((*row[:8], RUNNING, None, None, row[8], None, None))
        return attempts, updates, outputs

    def _wait_for_work(self, last_flush: float, unwritten: bool) -> None:
        """Wait (holding the condition) until there is a group to write: accepted replies once the flush
        interval has passed, bookkeeping that waited ``bookkeeping_s`` (calls not recorded yet count),
        or anything left when closing."""
        since = time.monotonic()
        while not self._closing:
            now = time.monotonic()
            if self._accepted:
                delay = last_flush + self.flush_interval_s - now
                if delay <= 0:
                    return
                self._cond.wait(delay)
            elif self._begun or self._ended or unwritten:
                if now - since >= self.bookkeeping_s:
                    return
                self._idle = True
                self._cond.wait(self.bookkeeping_s - (now - since))
                self._idle = False
            else:
                self._idle = self._empty = True
                self._cond.wait()
                self._idle = self._empty = False
                since = time.monotonic()


def _settle(futures: list[asyncio.Future], error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # its waiter was cancelled; the reply is written all the same
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
