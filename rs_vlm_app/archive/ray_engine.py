"""The ``ray`` engine: units of work on Ray actors, one model-holding actor per GPU (or CPU worker).

Without an address it starts a private local Ray instance (every GPU of the machine, or N CPU
workers; no dashboard; listening on 127.0.0.1 only) and stops it at the end; with ``address`` it
joins a running cluster (``ray start --head`` on one machine, ``ray start --address`` on the others,
or ``ray://host:10001``). Each actor loads the model once. When a worker process or node dies, Ray
restarts the actor (elsewhere if the node is gone) and re-runs the unit it held; units already
returned were committed by the driver, so each unit lands in the archive exactly once. Workers send
tile progress through a small queue actor; the driver turns it into the job's progress events.
Cancel (Ctrl-C) kills the actors: cluster work stops, committed units stay.

Import this module only when the engine is asked for: it imports ray.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import time

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError, WorkerCrashedError

from rs_vlm_app.archive.engines import OnFailure, OnResult, ProgressTracker
from rs_vlm_app.archive.store import Recipe
from rs_vlm_app.archive.units import TileSettings, Unit, UnitResult, encode_unit
from rs_vlm_app.errors import Cancelled, UserError
from rs_vlm_app.reporting import Reporter

log = logging.getLogger(__name__)

#: A unit whose worker died is handed out again at most this many times (Ray retries it first).
MAX_ATTEMPTS = 3
#: Workers report a unit's tile progress at most this often (seconds).
PROGRESS_EVERY_S = 1.0
#: How long to wait for a TCP answer from a cluster address before saying it is unreachable.
CONNECT_TIMEOUT_S = 5.0


@ray.remote(max_restarts=-1, max_task_retries=-1)
class EncoderActor:
    """Holds one loaded encoder; encodes units on request."""

    def __init__(self, model, progress):
        self.progress = progress
        self.error = None
        try:
            from rs_vlm_app.jobs.context import JobContext

            self.encoder = JobContext().clip_encoder(model)
        except Exception as exc:  # reported by describe(): a failed constructor would be restarted forever
            self.error = " ".join(str(exc).split()) or type(exc).__name__

    def describe(self) -> dict:
        if self.error:
            return {"error": self.error}
        from rs_vlm_app.archive.engines import encoder_recipe

        recipe = encoder_recipe(self.encoder, TileSettings())
        return {"model": recipe.model, "model_name": recipe.model_name, "embed_dim": recipe.embed_dim,
                "preprocess": recipe.preprocess, "precision": recipe.precision, "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id()}

    def pid(self) -> int:
        return os.getpid()

    def encode(self, unit: Unit, settings: TileSettings):
        reporter = _QueueReporter(self.progress, unit.key)
        try:
            result = encode_unit(unit, settings, self.encoder, reporter)
        except UserError as exc:
            return {"error": str(exc)}
        except Exception as exc:
            return {"error": f"{unit.path}: cannot be encoded ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]})"}
        result.worker = f"pid {os.getpid()}"
        return result


class _QueueReporter:
    def __init__(self, queue, key):
        self.queue, self.key, self.last = queue, key, 0.0

    def progress(self, stage: str, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            with contextlib.suppress(Exception):  # a full or gone queue only costs a progress update
                self.queue.put_nowait((self.key, int(done)))

    def log(self, message: str, level: str = "info") -> None:
        pass

    def cancel_requested(self) -> bool:
        return False  # the driver cancels by killing the actors


def check_reachable(address: str) -> None:
    """UserError unless something answers at ``address`` (host:port, ray://host:port; "auto" is not checked)."""
    if address == "auto":
        return
    text = address.removeprefix("ray://")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r} is not HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it with "
                        "`ray start --head` there, or check the address and port") from None


def connect(address: str | None, workers: int | None) -> bool:
    """Join the cluster at ``address``, or start a private local instance (every GPU, or ``workers``
    CPUs; no dashboard; 127.0.0.1 only); reuse a connection this process already has. True when
    the instance was started here (stop it with ray.shutdown() at the end)."""
    if ray.is_initialized():
        log.debug("ray is already connected in this process; using that connection")
        return False
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except Exception as exc:
            raise UserError(f"cannot join the Ray cluster at {address} "
                            f"({' '.join(str(exc).split())[:200]})") from None
        return False
    gpus = _local_gpus()
    cpus = max(workers or 1, 1) if not gpus else None
    ray.init(num_cpus=cpus, num_gpus=gpus or None, include_dashboard=False,
             _node_ip_address="127.0.0.1", logging_level=logging.WARNING, log_to_driver=False)
    return True


class RayEngine:
    """Units on ``workers`` actors of a local or joined Ray cluster."""

    name = "ray"

    def __init__(self, model, reporter: Reporter, *, workers: int | None = None, address: str | None = None):
        self.reporter = reporter
        self.started_here = connect(address, workers)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self.workers = workers or gpus or max(1, int(resources.get("CPU", 1)) // 4)
        per_actor = {"num_gpus": 1} if gpus >= self.workers else {"num_cpus": 1}
        from ray.util.queue import Queue

        self.queue = Queue(maxsize=10_000, actor_options={"num_cpus": 0})
        self.actors = [EncoderActor.options(**per_actor).remote(model, self.queue) for _ in range(self.workers)]
        reporter.log(f"ray engine: {self.workers} worker(s) ({'GPU' if 'num_gpus' in per_actor else 'CPU'}), "
                     f"cluster {'started here' if self.started_here else 'joined'}")
        self._description: dict | None = None

    def describe(self) -> dict:
        """What the first actor loaded (waits for it): raises UserError when the model did not load."""
        if self._description is None:
            self._description = self._get(self.actors[0].describe.remote())
            if "error" in self._description:
                from rs_vlm_app.jobs.context import ModelLoadError

                raise ModelLoadError(self._description["error"])
        return self._description

    def worker_pids(self) -> list[int]:
        return [self._get(a.pid.remote()) for a in self.actors]

    def recipe(self, settings: TileSettings) -> Recipe:
        d = self.describe()
        return Recipe(model=d["model"], model_name=d["model_name"], embed_dim=d["embed_dim"],
                      preprocess=d["preprocess"], precision=d["precision"], grid=settings.grid,
                      bands=list(settings.bands) if settings.bands else None, min_valid=settings.min_valid)

    def _get(self, ref):
        """ray.get that notices a cancel request every half second."""
        while True:
            if self.reporter.cancel_requested():
                raise Cancelled()
            try:
                return ray.get(ref, timeout=0.5)
            except GetTimeoutError:
                continue

    def run(self, units: list[Unit], settings: TileSettings, on_result: OnResult, on_failure: OnFailure,
            progress: ProgressTracker) -> None:
        todo = collections.deque(units)
        attempts: collections.Counter = collections.Counter()
        idle = list(range(len(self.actors)))
        pending: dict = {}
        settings_ref = ray.put(settings)
        while todo or pending:
            if self.reporter.cancel_requested():
                raise Cancelled()
            while idle and todo:
                unit, actor = todo.popleft(), idle.pop()
                pending[self.actors[actor].encode.remote(unit, settings_ref)] = (unit, actor)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            self._drain(progress)
            for ref in ready:
                unit, actor = pending.pop(ref)
                idle.append(actor)
                try:
                    result = ray.get(ref)
                except (RayActorError, WorkerCrashedError) as exc:
                    attempts[unit.key] += 1
                    if attempts[unit.key] < MAX_ATTEMPTS:
                        log.warning("worker lost while encoding %s part %d; handing it out again", *unit.key)
                        todo.append(unit)
                    else:
                        on_failure(unit, f"{unit.path}: its worker died {MAX_ATTEMPTS} times ({type(exc).__name__})")
                    continue
                except RayTaskError as exc:
                    on_failure(unit, f"{unit.path}: cannot be encoded ({' '.join(str(exc.cause).split())[:200]})")
                    continue
                if isinstance(result, dict):
                    on_failure(unit, result["error"])
                    continue
                assert isinstance(result, UnitResult)
                on_result(result)
                progress.finished(unit.key)

    def _drain(self, progress: ProgressTracker) -> None:
        try:
            items = self.queue.get_nowait_batch(self.queue.qsize())
        except Exception:
            return
        for key, done in items:
            progress.unit(tuple(key), done)

    def close(self) -> None:
        for actor in getattr(self, "actors", []):
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        queue = getattr(self, "queue", None)
        if queue is not None:
            with contextlib.suppress(Exception):
                queue.shutdown()
        if self.started_here:
            ray.shutdown()


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0
