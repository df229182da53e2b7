"""Long inputs cut into windows an encoder can take (batches are dmha.batches' job)."""
from __future__ import annotations

import math


def consecutive_windows(n: int, size: int) -> list[tuple[int, int]]:
    """[start, end) windows of `size` covering n items, the last one shorter (at least one window)."""
    if size < 1:
        raise ValueError(f"window size must be >= 1, got {size}")
    return [(s, min(s + size, n)) for s in range(0, max(n, 1), size)]


def even_windows(n: int, max_size: int) -> list[tuple[int, int]]:
    """[start, end) windows of at most `max_size` and nearly equal length, so no window is a tiny tail."""
    if max_size < 1:
        raise ValueError(f"window size must be >= 1, got {max_size}")
    count = max(1, math.ceil(n / max_size))
    bounds = [round(i * n / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))
