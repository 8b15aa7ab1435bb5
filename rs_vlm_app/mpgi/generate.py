"""Stage 1 and 2 of MpGI over the manifest: relay and perspective descriptions, then final captions.

Images stream through in id order, a bounded number at a time. For each image the relay (chain)
runs, one model after another, each step handed the previous step's description; perspectives run
beside it on their own backends, or after it when their prompt uses ``{relay}``. When every
description exists, integration writes the caption slots: the lengths concurrently, the slots of one
length one after another, each request told its slot number and the captions already written for
that length (and carrying its own ``seed``), so a deterministic server still gives distinct
captions; a caption identical to one the image already has is asked again, warmer, before it is
kept. Only whole replies become outputs (a reply cut off at the token limit is asked again once
with twice the tokens, then the unit fails with that reason). Every attempt is recorded in the
manifest by the writer thread (:class:`~rs_vlm_app.mpgi.writer.ManifestWriter`): once it ends, or
as running once it has run for half a second; an accepted reply counts as done only once it is
flushed to disk (replies arriving together share one flush), and a unit with an output is never
asked again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import re
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rs_vlm_app.errors import Cancelled, UserError
from rs_vlm_app.mpgi.backends import ChatBackend, ChatRequest, PermanentError, TransientError, TruncatedReply
from rs_vlm_app.mpgi.config import BuildConfig, source_name
from rs_vlm_app.mpgi.imagefiles import EncodedImage, ImageReadError, encode, load_rgb
from rs_vlm_app.mpgi.manifest import CANCELLED, ERROR, ImageRow, Manifest
from rs_vlm_app.mpgi.plan import CAPTION_PREFIX, Plan, prompt_hash
from rs_vlm_app.mpgi.prompts import PromptTemplate
from rs_vlm_app.mpgi.writer import ManifestWriter
from rs_vlm_app.reporting import Reporter

log = logging.getLogger(__name__)

#: Abort when a backend refused this many connections in a row (times its concurrency, at least 10).
UNREACHABLE_STREAK_PER_SLOT = 4
PAGE = 256


class EndpointDown(UserError):
    """A backend stopped accepting connections during the build."""


@dataclass
class _Unit:
    stage: str
    prompt: PromptTemplate
    backend: ChatBackend
    max_tokens: int
    temperature: float
    extra: dict[str, str] = field(default_factory=dict)
    after_relay: bool = False


@dataclass
class GenerationStats:
    requests: int = 0
    succeeded: int = 0
    failed_units: int = 0
    retried: int = 0


class Generator:
    """Runs the model stages of one build over the images of a manifest."""

    def __init__(self, config: BuildConfig, plan: Plan, manifest: Manifest, run_id: int,
                 backends: dict[str, ChatBackend], reporter: Reporter):
        self.config = config
        self.plan = plan
        self.manifest = manifest
        self.run_id = run_id
        self.backends = backends
        self.reporter = reporter
        self.stats = GenerationStats()
        self._writer = ManifestWriter(manifest.path)
        self._next_attempt = 0  # the next attempt row id (handed out here, written by the writer)
        self._tries: dict[int, dict[str, int]] = {}  # image id -> {stage: last attempt number}, images in flight
        self._streak: dict[str, int] = {name: 0 for name in backends}
        self._done: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        self._encoder: ThreadPoolExecutor | None = None  # images are read and encoded here during run()
        relay = config.relay
        self._relay = [_Unit(step.stage, step.prompt, backends[step.backend], relay.max_tokens, relay.temperature)
                       for step in plan.relay_steps]
        self._perspectives = [_Unit(p.stage, p.prompt, backends[p.backend], p.max_tokens, p.temperature,
                                    after_relay=p.after_relay) for p in plan.perspective_steps]
        integration = config.integration
        backend = backends[integration.backend]
        self._captions = [
            _Unit(CAPTION_PREFIX + name, plan.integration, backend, integration.max_tokens_for(slot),
                  integration.temperature, {"length_name": slot.name, "length_words": str(slot.words)})
            for name, slot in plan.slots
        ]

    # --------------------------------------------------------------------------------- driving
    async def run(self) -> GenerationStats:
        sources = [source_name(s) for s in self.config.sources]
        n_images = self.manifest.image_count(sources)
        counts = self.manifest.stage_counts()
        groups = {"descriptions": [u.stage for u in [*self._relay, *self._perspectives]],
                  "captions": [u.stage for u in self._captions]}
        for group, stages in groups.items():
            self._totals[group] = n_images * len(stages)
            self._done[group] = sum(counts.get(s, 0) for s in stages)
            self.reporter.progress(group, self._done[group], self._totals[group])
        limit = max(4, 2 * sum(b.concurrency for b in self.backends.values()))
        self._next_attempt = self.manifest.next_attempt_id()
        await self._writer.start()
        window = _Window(limit)
        watcher = asyncio.create_task(self._watch_cancel(window))
        # what exists now (modules, the plan, the config) is not scanned by the garbage collector
        # until the model stages end: a full collection then takes milliseconds, not tens of them,
        # and the event loop is not held up while replies wait
        gc.freeze()
        # one thread reads and encodes images (tens a second even for 1024 px tiles: more than an
        # MLLM server answers); more would only contend with the event loop for the GIL
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="image-encoder")
        try:
            for row, outputs, tries in self._pending(sources):
                await window.room()
                if self.reporter.cancel_requested():
                    raise Cancelled()
                self._tries[row.id] = tries
                window.add(self._image(row, outputs))
            await window.drain()
        except BaseException:
            await window.cancel_all()
            raise
        finally:
            gc.unfreeze()
            self._encoder.shutdown(wait=False, cancel_futures=True)
            watcher.cancel()
            await self._writer.close()
        if self._writer.error is not None:
            raise self._writer.error
        return self.stats

    def _pending(self, sources: list[str]):
        """(image, its outputs so far) for every image with a unit left to do, a page at a time."""
        needed = [u.stage for u in [*self._relay, *self._perspectives, *self._captions]]
        page: list[ImageRow] = []
        for row in self.manifest.iter_images(sources, page=PAGE):
            page.append(row)
            if len(page) == PAGE:
                yield from self._with_outputs(page, needed)
                page = []
        yield from self._with_outputs(page, needed)

    def _with_outputs(self, rows: list[ImageRow], needed: list[str]):
        ids = [r.id for r in rows]
        outputs = self.manifest.outputs_for(ids)
        tries = self.manifest.attempt_numbers(ids)
        for row in rows:
            done = outputs[row.id]
            if any(stage not in done for stage in needed):
                yield row, done, tries[row.id]

    async def _watch_cancel(self, window: _Window) -> None:
        while not self.reporter.cancel_requested():
            await asyncio.sleep(0.2)
        window.stop()

    # ------------------------------------------------------------------------------- one image
    async def _image(self, row: ImageRow, outputs: dict[str, str]) -> None:
        try:
            await self._image_units(row, outputs)
        finally:
            del self._tries[row.id]

    async def _image_units(self, row: ImageRow, outputs: dict[str, str]) -> None:
        values = prompt_values(row)
        todo = [u for u in [*self._relay, *self._perspectives] if u.stage not in outputs]
        if todo:
            image = None
            if any(u.prompt.image for u in todo):
                try:
                    image = await asyncio.get_running_loop().run_in_executor(self._encoder, self._encode, row)
                except ImageReadError as exc:
                    for unit in todo:
                        self._record_unusable(row, unit, f"unreadable image: {exc}")
                    return
            beside = [u for u in self._perspectives if not u.after_relay and u.stage not in outputs]
            await gather_all([self._relay_chain(row, outputs, values, image),
                              *(self._describe(row, u, values, image, outputs) for u in beside)])
            final = self._relay[-1].stage
            after = [u for u in self._perspectives if u.after_relay and u.stage not in outputs]
            if after and final in outputs:
                relay_values = {**values, "relay": outputs[final]}
                await gather_all(self._describe(row, u, relay_values, image, outputs) for u in after)
            if any(u.stage not in outputs for u in [*self._relay, *self._perspectives]):
                return  # integration waits until every description exists
        if all(u.stage in outputs for u in self._captions):
            return
        descriptions = self.describe(outputs)
        lengths: dict[str, list[_Unit]] = {}
        for unit in self._captions:
            lengths.setdefault(unit.extra["length_name"], []).append(unit)
        norms: dict[str, str] = {}
        await gather_all(self._length(row, units, {**values, "descriptions": descriptions}, outputs, norms)
                         for units in lengths.values())

    async def _relay_chain(self, row: ImageRow, outputs: dict[str, str], values: dict[str, str],
                           image: EncodedImage | None) -> None:
        """The relay steps in order, each given the previous step's description."""
        for i, unit in enumerate(self._relay):
            if unit.stage in outputs:
                continue
            step_values = values if i == 0 else {**values, "previous": outputs[self._relay[i - 1].stage]}
            if not await self._describe(row, unit, step_values, image, outputs):
                return

    async def _describe(self, row: ImageRow, unit: _Unit, values: dict[str, str], image: EncodedImage | None,
                        outputs: dict[str, str]) -> bool:
        text = await self._unit(row, unit, values, image)
        if text is not None:
            outputs[unit.stage] = text
        return text is not None

    async def _length(self, row: ImageRow, units: list[_Unit], values: dict[str, str],
                      outputs: dict[str, str], norms: dict[str, str]) -> None:
        """The slots of one caption length, one after another, each told the captions written before it.
        ``norms``: the image's captions normalised for comparison, by stage (filled as needed)."""
        integration = self.config.integration
        for index, unit in enumerate(units, start=1):
            if unit.stage in outputs:
                continue
            written = written_text([outputs[u.stage] for u in units if u.stage in outputs])
            slot_values = {**values, **unit.extra, "slot_index": str(index), "slot_count": str(len(units)),
                           "written": written}
            suffix = "" if "written" in unit.prompt.placeholders else written
            if len(units) > 1 and "slot_index" not in unit.prompt.placeholders:
                suffix = f"This is caption {index} of {len(units)} of this length.\n{suffix}".strip()
            seed = None if integration.seed is None else slot_seed(integration.seed, row.key, unit.stage)

            def clash(text: str, me: str = unit.stage) -> str | None:
                norm = norms[me] = normalise(text)  # the reply that is kept is the last one checked
                for stage, other in outputs.items():
                    if stage != me and stage.startswith(CAPTION_PREFIX):
                        if stage not in norms:
                            norms[stage] = normalise(other)
                        if norms[stage] == norm:
                            return stage
                return None

            text = await self._unit(row, unit, slot_values, None, seed=seed, suffix=suffix, clash=clash)
            if text is not None:
                outputs[unit.stage] = text

    def describe(self, outputs: dict[str, str]) -> str:
        """The descriptions integration merges, each under a heading: the relay's result, then each perspective."""
        parts = [f"Grounded description:\n{outputs[self._relay[-1].stage]}"]
        for unit in self._perspectives:
            title = unit.prompt.description.rstrip(".") or unit.prompt.name
            parts.append(f"Perspective '{unit.prompt.name}' ({title}):\n{outputs[unit.stage]}")
        return "\n\n".join(parts)

    def _encode(self, row: ImageRow) -> EncodedImage:
        image_config = self.config.image
        picture = load_rgb(row.record.path, max_side=image_config.max_side, bands=image_config.bands)
        return encode(picture, image_config.format, image_config.quality)

    def _record_unusable(self, row: ImageRow, unit: _Unit, error: str) -> None:
        attempt_id, _ = self._begin(row, unit, "")
        self._writer.end((ERROR, error, None, time.time(), None, attempt_id))
        self.stats.failed_units += 1
        log.warning("%s: %s", row.key, error)

    async def _unit(self, row: ImageRow, unit: _Unit, values: dict[str, str], image: EncodedImage | None, *,
                    seed: int | None = None, suffix: str = "",
                    clash: Callable[[str], str | None] | None = None) -> str | None:
        """Ask for one unit, retrying transient failures; its text, or None once it has failed.

        A truncated reply is asked again once with twice the tokens; a reply ``clash`` finds identical
        to another output is asked again (``identical_retries`` times, each warmer) before it is kept.
        """
        system, user = unit.prompt.render(values)
        if suffix:
            user = f"{user.rstrip()}\n\n{suffix}"
        send_image = image if unit.prompt.image else None
        backend = unit.backend
        integration = self.config.integration
        max_tokens, temperature = unit.max_tokens, unit.temperature
        transient = identical = 0
        extended = False
        while True:
            request = ChatRequest(system, user, send_image, max_tokens, temperature, seed)
            digest = prompt_hash(backend.model, system, user, row.key if send_image else None, max_tokens,
                                 temperature, user_json=request.user_json)
            attempt_id, number = self._begin(row, unit, digest)
            self.stats.requests += 1
            try:
                reply = await backend.complete(request)
            except TruncatedReply as exc:
                self._end(attempt_id, ERROR, f"{exc} ({max_tokens} tokens)", exc.seconds)
                self._streak[backend.name] = 0
                if not extended:
                    extended = True
                    max_tokens *= 2
                    self.stats.retried += 1
                    continue
                self._give_up(row, unit, f"{exc} (also with {max_tokens} tokens)", number)
                return None
            except TransientError as exc:
                self._end(attempt_id, ERROR, str(exc), exc.seconds)
                self._note_unreachable(backend, exc.unreachable)
                if transient < backend.retries:
                    self.stats.retried += 1
                    await asyncio.sleep(backoff_delay(transient, backend.backoff_s, backend.backoff_max_s,
                                                      exc.retry_after))
                    transient += 1
                    continue
                self._give_up(row, unit, str(exc), number)
                return None
            except PermanentError as exc:
                self._end(attempt_id, ERROR, str(exc), exc.seconds)
                self._streak[backend.name] = 0
                self._give_up(row, unit, str(exc), number)
                return None
            except asyncio.CancelledError:
                self._end(attempt_id, CANCELLED, "the build was cancelled")
                raise
            text = reply.text
            self._streak[backend.name] = 0
            same = clash(text) if clash is not None else None
            if same is not None and identical < integration.identical_retries:
                identical += 1
                self._end(attempt_id, ERROR, f"identical to {same}; asked again warmer", reply.seconds, text)
                temperature = round(temperature + integration.retry_temperature_step, 3)
                seed = None if seed is None else seed + 7919
                self.stats.retried += 1
                continue
            await self._writer.accept((attempt_id, row.id, unit.stage, text, time.time(), reply.seconds))
            self.stats.succeeded += 1
            group = "captions" if unit.stage.startswith(CAPTION_PREFIX) else "descriptions"
            self._done[group] += 1
            self.reporter.progress(group, self._done[group], self._totals[group])
            return text

    def _begin(self, row: ImageRow, unit: _Unit, digest: str) -> tuple[int, int]:
        """Record that a call of ``unit`` starts; (attempt row id, attempt number)."""
        attempt_id = self._next_attempt
        self._next_attempt += 1
        tries = self._tries[row.id]
        number = tries[unit.stage] = tries.get(unit.stage, 0) + 1
        backend = unit.backend
        self._writer.begin((attempt_id, row.id, unit.stage, number, self.run_id, backend.name, backend.model, digest,
                            time.time()))
        return attempt_id, number

    def _end(self, attempt_id: int, status: str, error: str, latency_s: float | None = None,
             output: str | None = None) -> None:
        """Record that a call ended without an output."""
        self._writer.end((status, error, output, time.time(), latency_s, attempt_id))

    def _give_up(self, row: ImageRow, unit: _Unit, error: str, attempts: int) -> None:
        self.stats.failed_units += 1
        log.warning("%s: %s failed after %d attempt%s: %s", row.key, unit.stage, attempts, "s" * (attempts > 1), error)

    def _note_unreachable(self, backend: ChatBackend, unreachable: bool) -> None:
        if not unreachable:
            self._streak[backend.name] = 0
            return
        self._streak[backend.name] += 1
        if self._streak[backend.name] >= max(10, UNREACHABLE_STREAK_PER_SLOT * backend.concurrency):
            raise EndpointDown(f"backend {backend.name!r}: {backend.describe()} stopped accepting connections; "
                               "finished work is kept: start the server and run the same command again")


class _Window:
    """The image tasks in flight, at most ``limit``; the first error of one (or a cancel) stops the driver."""

    def __init__(self, limit: int):
        self.limit = limit
        self.tasks: set[asyncio.Task] = set()
        self._error: BaseException | None = None
        self._cancelled = False
        self._wake: asyncio.Future | None = None

    def add(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def stop(self) -> None:
        """Cancel requested: the driver raises Cancelled at its next wait."""
        self._cancelled = True
        self._notify()

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._error is None:
            self._error = task.exception()  # an error that must stop the build (endpoint down, a bug)
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _until(self, ready: Callable[[], bool]) -> None:
        while True:
            if self._error is not None:
                raise self._error
            if self._cancelled:
                raise Cancelled()
            if ready():
                return
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake

    async def room(self) -> None:
        """Wait until another image may start."""
        await self._until(lambda: len(self.tasks) < self.limit)

    async def drain(self) -> None:
        """Wait until every image is done."""
        await self._until(lambda: not self.tasks)

    async def cancel_all(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def gather_all(coroutines) -> list:
    """Run coroutines concurrently; if one raises, cancel the others (and wait for them) and re-raise."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def backoff_delay(attempt: int, base_s: float, max_s: float, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter; a server's Retry-After wins when it asks for longer."""
    delay = min(max_s, base_s * (2 ** attempt)) * random.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, 10 * max_s))
    return delay


_NOT_WORD = re.compile(r"[^0-9a-z]+")


def normalise(text: str) -> str:
    """Text compared for identity: lower case, words only."""
    return _NOT_WORD.sub(" ", text.lower()).strip()


def written_text(captions: list[str]) -> str:
    """The ``{written}`` placeholder: captions of this length so far, and the instruction to differ."""
    if not captions:
        return ""
    lines = "\n".join(f"- {c}" for c in captions)
    return ("Captions of this length already written for this image:\n" + lines + "\n"
            "Write a different one: other wording, another sentence structure, and lead with other details.")


def slot_seed(base: int, image_key: str, stage: str) -> int:
    """A seed of its own for each image and caption slot (stable across runs)."""
    return (base + zlib.crc32(f"{image_key}\x00{stage}".encode())) % (2**31 - 1)


def prompt_values(row: ImageRow) -> dict[str, str]:
    """What the prompts' placeholders are filled with for one image."""
    record = row.record
    facts = "\n".join(f"- {f}" for f in row.facts) or "- (no annotations for this image)"
    lines = [f"- {k}: {' '.join(str(v).split())}" for k, v in record.metadata.items()]
    bounds = (record.footprint or {}).get("bounds_wgs84")
    if bounds:
        lon, lat = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
        lines.append(f"- location: {abs(lat):.4f} {'N' if lat >= 0 else 'S'}, {abs(lon):.4f} {'E' if lon >= 0 else 'W'}")
    return {
        "facts": facts,
        "metadata": "\n".join(lines) or "- none",
        "scene_class": record.scene_class or "not given",
        "image_size": f"{record.width} x {record.height} pixels",
    }
