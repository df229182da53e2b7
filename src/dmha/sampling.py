"""Length-bucketed batches: items of similar length share a batch, so little compute goes to padding.

Training draws random pools of `pool` batches, sorts each pool by length, cuts it into batches and
shuffles the batch order: batches stay random from epoch to epoch, but their members have similar
lengths. With equal lengths (fixed training crops) this is exactly random batching. Under DDP each
rank takes every world-th training batch (padded by repeating batches so all ranks take the same
number of steps) and every world-th item of the sorted evaluation order (each scored once).

Every batch also keeps within a budget of padded length (`max_length`: batch size × its longest
item): a corpus with a few long recordings then gets small batches for those, so a batch's memory
is bounded by the budget (or by its one item, when that item alone is longer), never by
batch_size × the longest recording.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler


# Padded speech frames per batch: 10 minutes at 50 frames/s (the rate of every supported encoder),
# e.g. 0.4 GB of whisper-base's 7 layers × 512. RAVDESS or CREMA-D batches of 32 never reach it.
MAX_BATCH_SECONDS = 600.0
MAX_BATCH_FRAMES = round(MAX_BATCH_SECONDS * 50)


def cut_batches(order: Sequence[int], lengths: Sequence[float], batch_size: int, max_length: float = 0
                ) -> list[list[int]]:
    """Consecutive batches of `order`, each at most batch_size items and, when max_length > 0, at
    most max_length of padded length (items × the longest); an item longer than that is its own batch."""
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = 0.0
    for i in order:
        grown = max(longest, lengths[i])
        if batch and (len(batch) == batch_size or (max_length > 0 and (len(batch) + 1) * grown > max_length)):
            batches.append(batch)
            batch, grown = [], lengths[i]
        batch.append(i)
        longest = grown
    return batches + ([batch] if batch else [])


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of indices grouped by `lengths` (a batch_sampler for DataLoader).

    shuffle=False: longest first, deterministic (evaluation). shuffle=True: bucketed random batches,
    reshuffled each epoch from `seed` and the epoch number (Lightning calls `set_epoch`).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = False, seed: int = 0,
                 pool: int = 50, distributed: bool = False, max_length: float = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths, self.batch_size, self.shuffle, self.seed, self.pool = list(lengths), batch_size, shuffle, seed, pool
        self.distributed = distributed  # split batches across DDP ranks (inside Lightning's fit only)
        self.max_length = max_length  # padded length per batch (see cut_batches); 0 = no budget
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            order = sorted(range(n), key=lambda i: -self.lengths[i])
            return self._cut(order)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=generator).tolist()
        span = self.batch_size * self.pool
        batches = []
        for start in range(0, n, span):
            pool = sorted(order[start:start + span], key=lambda i: self.lengths[i])  # stable: ties stay random
            batches += self._cut(pool)
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def _cut(self, order: Sequence[int]) -> list[list[int]]:
        return cut_batches(order, self.lengths, self.batch_size, self.max_length)

    def _mine(self) -> list[list[int]]:
        rank, world = _rank_world() if self.distributed else (0, 1)
        if world > 1 and not self.shuffle:  # evaluation: deal sorted items out, so every rank gets some
            order = sorted(range(len(self.lengths)), key=lambda i: -self.lengths[i])
            if 0 < len(order) < world:
                order = (order * world)[:world]  # fewer items than ranks: a few are scored twice
            return self._cut(order[rank::world])
        batches = self._all_batches()
        if world == 1 or not batches:
            return batches
        per_rank = -(-len(batches) // world)  # every rank must take the same number of optimiser steps
        return (batches * world)[:per_rank * world][rank::world]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())

    def order(self) -> list[int]:
        """Every index in the order this rank's batches yield them (to undo the sorting afterwards)."""
        return [i for batch in self._mine() for i in batch]


def in_input_order(rows: Sequence, order: Sequence[int]) -> list:
    """Undo a sampler's order: rows[k] belongs to item order[k]."""
    out = [None] * len(order)
    for row, index in zip(rows, order):
        out[index] = row
    return out
