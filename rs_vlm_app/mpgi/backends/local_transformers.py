"""A local transformers model, for users without a server: image-text-to-text or text generation.

Requests arriving together are batched: a collector gathers up to ``batch_size`` requests (waiting at
most ``batch_wait_ms`` for more), groups those with the same settings, and runs one left-padded
``generate`` per group on a single worker thread, so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.backends import (
    BackendError,
    ChatBackend,
    ChatRequest,
    PermanentError,
    Reply,
    TransientError,
    TruncatedReply,
    clean_reply,
    one_line,
)
from rs_vlm_app.mpgi.config import TransformersBackend

log = logging.getLogger(__name__)


class LocalTransformersBackend(ChatBackend):
    def __init__(self, name: str, config: TransformersBackend):
        super().__init__(name, str(config.model), config.retries, config.backoff_s, config.backoff_max_s)
        self.config = config
        self._queue: asyncio.Queue | None = None
        self._collector: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.model = str(config.model)
        self.batch_sizes: list[int] = []  # size of every generate() call, for diagnostics

    @property
    def concurrency(self) -> int:
        return self.config.batch_size

    def describe(self) -> str:
        return f"local model {self.config.model} on {self.config.device}"

    async def start(self) -> None:
        folder = self.config.model
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise UserError(f"backends.{self.name}.model: not a transformers model folder (no config.json)", path=folder)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rsvlm-{self.name}")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._load)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"backends.{self.name}: cannot load the model ({one_line(exc)})", path=folder) from None
        self._queue = asyncio.Queue()
        self._collector = asyncio.create_task(self._collect())

    def _load(self) -> None:
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        path = str(self.config.model)
        model_config = AutoConfig.from_pretrained(path, local_files_only=True)
        dtype = self.config.dtype if self.config.dtype == "auto" else getattr(torch, self.config.dtype)
        self.accepts_images = hasattr(model_config, "vision_config")
        if self.accepts_images:
            self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            self.tokenizer = self.processor.tokenizer
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, local_files_only=True)
        else:
            self.processor = None
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.net = model.to(self.config.device).eval()

    async def close(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
            self._collector = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def complete(self, request: ChatRequest) -> Reply:
        assert self._queue is not None, "start() the backend first"
        if request.image is not None and not self.accepts_images:
            raise PermanentError(f"{self.config.model} is a text-only model; it cannot take the image")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        (text, truncated), seconds = await future
        try:
            if truncated:
                raise TruncatedReply(f"truncated: the reply was cut off at max_tokens ({request.max_tokens} new tokens)")
            return Reply(clean_reply(text), seconds)
        except BackendError as exc:
            exc.seconds = seconds
            raise

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        wait_s = self.config.batch_wait_ms / 1000.0
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + wait_s
            while len(batch) < self.config.batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            groups: dict[tuple, list] = {}
            for request, future in batch:
                key = (request.image is not None, request.max_tokens, request.temperature)
                groups.setdefault(key, []).append((request, future))
            for group in groups.values():
                live = [(r, f) for r, f in group if not f.done()]
                if not live:
                    continue
                started = time.perf_counter()
                try:
                    texts = await loop.run_in_executor(self._executor, self._generate, [r for r, _ in live])
                except Exception as exc:  # the whole batch failed: each request gets the error
                    for _, future in live:
                        if not future.done():
                            error = _classify(exc)
                            error.seconds = time.perf_counter() - started
                            future.set_exception(error)
                    continue
                seconds = time.perf_counter() - started
                for (_, future), text in zip(live, texts, strict=True):
                    if not future.done():
                        future.set_result((text, seconds))

    def _generate(self, requests: list[ChatRequest]) -> list[tuple[str, bool]]:
        """(reply text, whether generation stopped at the token limit) per request."""
        import torch
        from PIL import Image

        self.batch_sizes.append(len(requests))
        conversations = []
        images = []
        for request in requests:
            messages = []
            if request.system:
                messages.append({"role": "system", "content": request.system})
            if request.image is not None:
                images.append(Image.open(io.BytesIO(request.image.data)).convert("RGB"))
                content = [{"type": "image"}, {"type": "text", "text": request.user}]
                messages.append({"role": "user", "content": content})
            else:
                messages.append({"role": "user", "content": request.user})
            conversations.append(messages)
        template_owner = self.processor if self.processor is not None else self.tokenizer
        prompts = [template_owner.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in conversations]
        if self.processor is not None:
            inputs = self.processor(text=prompts, images=images or None, padding=True, return_tensors="pt")
        else:
            inputs = self.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
        inputs = inputs.to(self.net.device)
        first = requests[0]
        sampling = first.temperature > 0
        settings = {"max_new_tokens": first.max_tokens, "do_sample": sampling,
                    "pad_token_id": self.tokenizer.pad_token_id}
        if sampling:
            settings["temperature"] = first.temperature
        with torch.inference_mode():
            output = self.net.generate(**inputs, **settings)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        stops = _stop_ids(self.net, self.tokenizer)
        cut = [new_tokens.shape[1] >= first.max_tokens and not any(int(t) in stops for t in row) for row in new_tokens]
        return list(zip(texts, cut, strict=True))


def _stop_ids(net, tokenizer) -> set[int]:
    """Token ids that end a reply (the generation config's EOS ids and the tokenizer's)."""
    ids = getattr(getattr(net, "generation_config", None), "eos_token_id", None)
    ids = list(ids) if isinstance(ids, list | tuple) else [ids]
    ids.append(tokenizer.eos_token_id)
    return {int(i) for i in ids if i is not None}


def _classify(exc: Exception) -> BackendError:
    text = one_line(exc)
    if "out of memory" in text.lower():
        return TransientError(f"out of memory: {text}")
    return PermanentError(f"{type(exc).__name__}: {text}")
