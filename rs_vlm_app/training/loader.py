"""From a CaptionTable to batches: deterministic order, seeded augmentation, tokenisation.

Determinism is what makes resume and multi-process runs exact:
- the sample order of epoch ``e`` is a permutation drawn from (seed, e) alone;
- optimizer step ``s`` of an epoch uses samples ``[s*G, (s+1)*G)`` of that order (G = global batch =
  batch_size x processes x grad_accum), each process taking its own contiguous slice of every
  micro-batch; the incomplete tail of an epoch is dropped;
- the random augmentation of a sample is seeded from (seed, epoch, sample index).
So a run resumed at step s, or run with 2 processes of batch b instead of 1 process of batch 2b,
sees exactly the same images in exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from rs_vlm_app.training.data import CaptionTable, read_image

SampleKey = tuple[int, int]  # (epoch, sample index)


@dataclass(frozen=True)
class BatchPlan:
    """Which samples each process uses at each optimizer step of each epoch."""

    n_samples: int
    batch_size: int  # per process and micro-batch
    world_size: int = 1
    rank: int = 0
    grad_accum: int = 1
    seed: int = 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        return self.n_samples // self.global_batch

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch`` (same in every process)."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_samples)

    def micro_batches(self, epoch: int, start_step: int = 0) -> Iterator[list[SampleKey]]:
        """This process's micro-batches from optimizer step ``start_step`` to the end of the epoch."""
        order = self.order(epoch)
        micro_global = self.batch_size * self.world_size
        for step in range(start_step, self.steps_per_epoch):
            for micro in range(self.grad_accum):
                begin = (step * self.grad_accum + micro) * micro_global + self.rank * self.batch_size
                yield [(epoch, int(i)) for i in order[begin: begin + self.batch_size]]


class ImageTextDataset(torch.utils.data.Dataset):
    """Samples of a CaptionTable as (pixels, caption); indexed by (epoch, sample index)."""

    def __init__(self, table: CaptionTable, transform: Callable, seed: int = 0):
        self.table = table
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, key: SampleKey | int) -> tuple[torch.Tensor, str]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image = read_image(self.table.images[index])
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only (what the image transforms draw from): torch.manual_seed would also
            # queue a lazy seeding of every CUDA device, which records a stack trace each time (~2 ms
            # per sample on a CUDA build of torch, more than a tiny model's whole step)
            torch.default_generator.manual_seed(sample_seed(self.seed, epoch, index))
            pixels = self.transform(image)
        return pixels, self.table.captions[index]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def tokenize_counting(tokenizer: Callable, texts: list[str], context_length: int) -> tuple[torch.Tensor, int]:
    """Tokens of ``texts`` (truncated to the context as the tokenizer does) and how many were cut.

    A caption was cut when tokenising it with one more position gives different leading tokens.
    """
    tokens = tokenizer(texts, context_length=context_length)
    longer = tokenizer(texts, context_length=context_length + 1)
    truncated = (longer[:, :context_length] != tokens).any(dim=1)
    return tokens, int(truncated.sum())


class Collate:
    """Stacks pixels and tokenises captions; reports the number of truncated captions."""

    def __init__(self, tokenizer: Callable, context_length: int):
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __call__(self, batch: list[tuple[torch.Tensor, str]]) -> dict[str, torch.Tensor | int]:
        images = torch.stack([pixels for pixels, _ in batch])
        tokens, truncated = tokenize_counting(self.tokenizer, [caption for _, caption in batch], self.context_length)
        return {"images": images, "tokens": tokens, "truncated": truncated}


def make_loader(
    dataset: ImageTextDataset, batches: list[list[SampleKey]], collate: Collate, workers: int, pin_memory: bool
) -> torch.utils.data.DataLoader:
    """A DataLoader over exactly ``batches`` (in order)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )
