"""Stage 1 and 2 of MpGI over the manifest: relay and perspective descriptions, then final captions.

Images stream through in id order, a bounded number at a time. For each image the relay and
perspective prompts run concurrently on the MLLM backend(s); when all have an output, one
integration request per caption slot runs on the LLM backend. Every attempt is written to the
manifest before the request is sent and updated when it ends; a reply is committed the moment it
arrives, and a unit with an output is never asked again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field

from rs_vlm_app.errors import Cancelled, UserError
from rs_vlm_app.mpgi.backends import ChatBackend, ChatRequest, PermanentError, TransientError
from rs_vlm_app.mpgi.config import BuildConfig, source_name
from rs_vlm_app.mpgi.imagefiles import EncodedImage, ImageReadError, encode, load_rgb
from rs_vlm_app.mpgi.manifest import CANCELLED, ERROR, ImageRow, Manifest
from rs_vlm_app.mpgi.plan import CAPTION_PREFIX, PERSPECTIVE_PREFIX, RELAY, Plan, prompt_hash
from rs_vlm_app.mpgi.prompts import PromptTemplate
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
        self._streak: dict[str, int] = {name: 0 for name in backends}
        self._done: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        relay_backend = backends[config.relay.backend]
        self._relay = _Unit(RELAY, plan.relay, relay_backend, config.relay.max_tokens, config.relay.temperature)
        self._perspectives = []
        if config.perspectives is not None and plan.perspectives:
            backend = backends[config.perspectives.backend]
            for prompt in plan.perspectives:
                self._perspectives.append(_Unit(PERSPECTIVE_PREFIX + prompt.name, prompt, backend,
                                                config.perspectives.max_tokens, config.perspectives.temperature))
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
        groups = {"descriptions": [u.stage for u in [self._relay, *self._perspectives]],
                  "captions": [u.stage for u in self._captions]}
        for group, stages in groups.items():
            self._totals[group] = n_images * len(stages)
            self._done[group] = sum(counts.get(s, 0) for s in stages)
            self.reporter.progress(group, self._done[group], self._totals[group])
        limit = max(4, 2 * sum(b.concurrency for b in self.backends.values()))
        in_flight: set[asyncio.Task] = set()
        cancel = asyncio.Event()
        watcher = asyncio.create_task(self._watch_cancel(cancel))
        try:
            for row, outputs in self._pending(sources):
                while len(in_flight) >= limit:
                    await self._wait(in_flight, cancel)
                if cancel.is_set() or self.reporter.cancel_requested():
                    raise Cancelled()
                in_flight.add(asyncio.create_task(self._image(row, outputs)))
            while in_flight:
                await self._wait(in_flight, cancel)
        except BaseException:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            raise
        finally:
            watcher.cancel()
        return self.stats

    def _pending(self, sources: list[str]):
        """(image, its outputs so far) for every image with a unit left to do, a page at a time."""
        needed = [u.stage for u in [self._relay, *self._perspectives, *self._captions]]
        page: list[ImageRow] = []
        for row in self.manifest.iter_images(sources, page=PAGE):
            page.append(row)
            if len(page) == PAGE:
                yield from self._with_outputs(page, needed)
                page = []
        yield from self._with_outputs(page, needed)

    def _with_outputs(self, rows: list[ImageRow], needed: list[str]):
        outputs = self.manifest.outputs_for([r.id for r in rows])
        for row in rows:
            done = outputs[row.id]
            if any(stage not in done for stage in needed):
                yield row, done

    async def _wait(self, in_flight: set[asyncio.Task], cancel: asyncio.Event) -> None:
        stopper = asyncio.create_task(cancel.wait())
        try:
            done, _ = await asyncio.wait(in_flight | {stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        for task in done:
            if task is stopper:
                raise Cancelled()
            in_flight.discard(task)
            task.result()  # an error that must stop the build (endpoint down, a bug) propagates

    async def _watch_cancel(self, cancel: asyncio.Event) -> None:
        while not self.reporter.cancel_requested():
            await asyncio.sleep(0.2)
        cancel.set()

    # ------------------------------------------------------------------------------- one image
    async def _image(self, row: ImageRow, outputs: dict[str, str]) -> None:
        values = prompt_values(row)
        todo = [u for u in [self._relay, *self._perspectives] if u.stage not in outputs]
        if todo:
            image = None
            if any(u.prompt.image for u in todo):
                try:
                    image = await asyncio.get_running_loop().run_in_executor(None, self._encode, row)
                except ImageReadError as exc:
                    for unit in todo:
                        self._record_unusable(row, unit, f"unreadable image: {exc}")
                    return
            results = await gather_all(self._unit(row, u, values, image) for u in todo)
            for unit, text in zip(todo, results, strict=True):
                if text is not None:
                    outputs[unit.stage] = text
            if any(text is None for text in results):
                return  # integration waits until every description exists
        todo = [u for u in self._captions if u.stage not in outputs]
        if not todo:
            return
        descriptions = self.describe(outputs)
        await gather_all(self._unit(row, u, {**values, "descriptions": descriptions, **u.extra}, None) for u in todo)

    def describe(self, outputs: dict[str, str]) -> str:
        """The descriptions integration merges, each under a heading."""
        parts = [f"Grounded description:\n{outputs[RELAY]}"]
        for unit in self._perspectives:
            title = unit.prompt.description.rstrip(".") or unit.prompt.name
            parts.append(f"Perspective '{unit.prompt.name}' ({title}):\n{outputs[unit.stage]}")
        return "\n\n".join(parts)

    def _encode(self, row: ImageRow) -> EncodedImage:
        image_config = self.config.image
        picture = load_rgb(row.record.path, max_side=image_config.max_side, bands=image_config.bands)
        return encode(picture, image_config.format, image_config.quality)

    def _record_unusable(self, row: ImageRow, unit: _Unit, error: str) -> None:
        attempt_id, _ = self.manifest.begin_attempt(row.id, unit.stage, run_id=self.run_id, backend=unit.backend.name,
                                                    model=unit.backend.model, prompt_hash="")
        self.manifest.fail_attempt(attempt_id, ERROR, error)
        self.stats.failed_units += 1
        log.warning("%s: %s", row.key, error)

    async def _unit(self, row: ImageRow, unit: _Unit, values: dict[str, str], image: EncodedImage | None) -> str | None:
        """Ask for one unit, retrying transient failures; its text, or None once it has failed."""
        system, user = unit.prompt.render(values)
        send_image = image if unit.prompt.image else None
        request = ChatRequest(system, user, send_image, unit.max_tokens, unit.temperature)
        backend = unit.backend
        digest = prompt_hash(backend.model, system, user, row.key if send_image else None, unit.max_tokens,
                             unit.temperature)
        for attempt in range(backend.retries + 1):
            attempt_id, _ = self.manifest.begin_attempt(row.id, unit.stage, run_id=self.run_id, backend=backend.name,
                                                        model=backend.model, prompt_hash=digest)
            self.stats.requests += 1
            try:
                reply = await backend.complete(request)
            except TransientError as exc:
                self.manifest.fail_attempt(attempt_id, ERROR, str(exc), exc.seconds)
                self._note_unreachable(backend, exc.unreachable)
                if attempt < backend.retries:
                    self.stats.retried += 1
                    await asyncio.sleep(backoff_delay(attempt, backend.backoff_s, backend.backoff_max_s, exc.retry_after))
                    continue
                self._give_up(row, unit, str(exc), attempt + 1)
                return None
            except PermanentError as exc:
                self.manifest.fail_attempt(attempt_id, ERROR, str(exc), exc.seconds)
                self._give_up(row, unit, str(exc), attempt + 1)
                return None
            except asyncio.CancelledError:
                self.manifest.fail_attempt(attempt_id, CANCELLED, "the build was cancelled")
                raise
            text = reply.text
            self.manifest.succeed_attempt(attempt_id, row.id, unit.stage, text, reply.seconds)
            self._streak[backend.name] = 0
            self.stats.succeeded += 1
            group = "captions" if unit.stage.startswith(CAPTION_PREFIX) else "descriptions"
            self._done[group] += 1
            self.reporter.progress(group, self._done[group], self._totals[group])
            return text
        return None

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
