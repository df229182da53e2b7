"""The one length-bucketing rule every batch in dmha follows: sort by length, cut greedily within a
batch size and a budget of padded length. Encoders, training, evaluation and `predict` all cut their
batches with it (it lives apart from the datasets so the encoders can use it without importing them)."""
from __future__ import annotations

from typing import Sequence

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


def length_sorted_batches(lengths: Sequence[float], batch_size: int, max_length: float = 0,
                          longest_first: bool = True) -> list[list[int]]:
    """Indices sorted by length (longest first unless told otherwise; ties keep input order) and cut
    into batches of at most `batch_size` items and `max_length` padded length (0: no budget)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=(lambda i: -lengths[i]) if longest_first else (lambda i: lengths[i]))
    return cut_batches(order, lengths, batch_size, max_length)
