"""Tiny transformers chat models with random weights, and a real `transformers serve` to serve them.

Nothing here touches a hub. A byte-level BPE tokenizer is trained on a few KB of text, wrapped with
a ChatML chat template; a Qwen2 causal LM (text) and a Qwen2-VL model (image + text) with hidden
sizes of 32 are created with seeded random weights and taught, in ~150 steps, to answer every
prompt with one fixed sentence (random weights would emit only newlines). Folders are < 1 MB.

    text_dir = build_text_model(tmp / "llm")
    vision_dir = build_vision_model(tmp / "vlm")
    with TransformersServe(hf_home=tmp / "hf") as server:   # 127.0.0.1, a free port
        server.base_url                                     # http://127.0.0.1:PORT/v1
        # "model" in each request: the model folder's absolute path

`cached_models(folder)` builds both once and reuses them while this file and transformers stay the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

TEXT_REPLY = "An aerial view of dense buildings along a road."
VISION_REPLY = "An aerial image with buildings and trees."

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' or part['type'] == 'image_url' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = (
    "aerial image of buildings roads trees rivers airplanes storage tanks ships harbor farmland residential "
    "dense sparse upper left lower right center the a of and with many few several describe this remote "
    "sensing image in detail write a caption short medium long words facts verified perspective scene "
    "objects spatial layout land use metadata none given classified contains located covering percent "
    "sentences paragraph keep counts classes exactly reply OK view along road trees "
)


def build_tokenizer():
    """A byte-level BPE tokenizer (vocabulary 400) with the ChatML and Qwen2-VL special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([_CORPUS * 20, TEXT_REPLY * 5, VISION_REPLY * 5], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE,
        padding_side="left",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"},
    )


def _prompt_words(rng: random.Random) -> str:
    words = _CORPUS.split()
    return " ".join(rng.choice(words) for _ in range(rng.randint(3, 40)))


class _OneThread:
    """Train on one thread: on a busy machine more threads mostly spin."""

    def __enter__(self):
        import torch

        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.threads)


def build_text_model(folder: Path, reply: str = TEXT_REPLY, *, seed: int = 0, steps: int = 100) -> Path:
    """A tiny Qwen2 chat model that answers every prompt with ``reply``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer()
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         eos_token_id=eos, pad_token_id=pad, bos_token_id=pad, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    rng = random.Random(seed)
    target = tokenizer(reply + "<|im_end|>", add_special_tokens=False)["input_ids"]

    def sample():
        messages = [{"role": "user", "content": _prompt_words(rng)}]
        if rng.random() < 0.7:
            messages.insert(0, {"role": "system", "content": _prompt_words(rng)})
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return ids + target, [-100] * len(ids) + target

    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3)
    model.train()
    with _OneThread():
        _teach_text(model, optimizer, sample, pad, steps)
    model.eval()
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _teach_text(model, optimizer, sample, pad: int, steps: int) -> None:
    import torch

    for _ in range(steps):
        batch = [sample() for _ in range(8)]
        length = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [pad] * (length - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (length - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (length - len(ids)) for ids, _ in batch])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def build_vision_model(folder: Path, reply: str = VISION_REPLY, *, seed: int = 0, steps: int = 100) -> Path:
    """A tiny Qwen2-VL chat model (images at most 112x112 pixels) that answers every prompt with ``reply``."""
    import numpy as np
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    pixels = {"min_pixels": 28 * 28 * 4, "max_pixels": 112 * 112}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2, **pixels),
        tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=CHAT_TEMPLATE)
    # mrope_section must sum to head_dim / 2 = (32 / 2) / 2
    config = Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 4096,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                     "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
                     "bos_token_id": ids["<|endoftext|>"], "tie_word_embeddings": True},
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    target = tokenizer(reply + "<|im_end|>", add_special_tokens=False)["input_ids"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3)
    tokenizer.padding_side = "right"
    model.train()
    with _OneThread():
        _teach_vision(model, optimizer, processor, rng, noise, reply, target, steps)
    model.eval()
    tokenizer.padding_side = "left"
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _teach_vision(model, optimizer, processor, rng, noise, reply: str, target: list[int], steps: int) -> None:
    import numpy as np
    import torch
    from PIL import Image

    for _ in range(steps):
        texts, images = [], []
        for _ in range(8):
            with_image = rng.random() < 0.6
            content = ([{"type": "text", "text": _prompt_words(rng)}, {"type": "image"}] if with_image
                       else _prompt_words(rng))
            messages = [{"role": "system", "content": _prompt_words(rng)}, {"role": "user", "content": content}]
            texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                         + reply + "<|im_end|>")
            if with_image:
                side = rng.choice([28, 56, 84, 112])
                images.append(Image.fromarray(noise.integers(0, 255, (side, side, 3), dtype=np.uint8)))
        batch = processor(text=texts, images=images or None, return_tensors="pt", padding=True)
        labels = torch.full_like(batch["input_ids"], -100)
        for i in range(len(texts)):
            end = int(batch["attention_mask"][i].sum())
            labels[i, end - len(target):end] = batch["input_ids"][i, end - len(target):end]
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _stamp() -> str:
    import transformers

    source = Path(__file__).read_bytes()
    return hashlib.sha256(source + transformers.__version__.encode()).hexdigest()[:12]


def cached_models(root: Path) -> dict[str, Path]:
    """{"text": folder, "vision": folder}: built under ``root`` once, reused while this file is unchanged."""
    folder = root / _stamp()
    done = folder / "done.json"
    if not done.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        build_text_model(folder / "text")
        build_vision_model(folder / "vision")
        done.write_text(json.dumps({"text": TEXT_REPLY, "vision": VISION_REPLY}))
    return {"text": folder / "text", "vision": folder / "vision"}


# ---------------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_executable() -> list[str]:
    """How to run `transformers serve` with this Python's transformers."""
    script = Path(sys.executable).with_name("transformers")
    if script.is_file():
        return [str(script), "serve"]
    return [sys.executable, "-m", "transformers.cli.transformers", "serve"]


class TransformersServe:
    """`transformers serve` on 127.0.0.1 (any model folder, named by its absolute path), offline."""

    def __init__(self, hf_home: Path, port: int | None = None, log_path: Path | None = None,
                 extra_args: list[str] | None = None):
        self.hf_home = hf_home
        self.port = port or free_port()
        self.log_path = log_path or hf_home / "serve.log"
        self.extra_args = extra_args or []
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 180.0) -> TransformersServe:
        (self.hf_home / "hub").mkdir(parents=True, exist_ok=True)  # GET /v1/models needs the cache folder
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(self.hf_home),
               "HF_HUB_CACHE": str(self.hf_home / "hub"), "TOKENIZERS_PARALLELISM": "false"}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open while the server runs
        self.process = subprocess.Popen(
            [*serve_executable(), "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu", *self.extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.process.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"transformers serve did not answer within {timeout_s:.0f} s")

    def chat(self, model: Path, text: str, max_tokens: int = 32) -> str:
        """One plain chat request (warms the model up: the first request loads it)."""
        body = {"model": str(model), "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}
        request = urllib.request.Request(f"{self.base_url}/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["choices"][0]["message"]["content"]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> TransformersServe:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
