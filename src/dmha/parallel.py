"""Splitting feature extraction across processes that share one store (ranks, local workers).

Every process takes the missing entries whose key hashes to its rank, writes its own shards, then waits until the
store holds everything; a process that makes no progress for `stall_s` is presumed dead and the
waiting ones take over its part, so a lost worker costs time, never results.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from typing import Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkShare:
    """This process's place among `world` processes extracting into the same store."""

    rank: int = 0
    world: int = 1
    stall_s: float = 300.0  # no new entry for this long: the others are presumed dead
    poll_s: float = 0.5

    @classmethod
    def from_env(cls) -> "WorkShare":
        """torchrun / Lightning (RANK, WORLD_SIZE) or SLURM (SLURM_PROCID, SLURM_NTASKS); else alone."""
        for rank_var, world_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
            if rank_var in os.environ and world_var in os.environ:
                rank, world = int(os.environ[rank_var]), int(os.environ[world_var])
                if 0 <= rank < world:
                    return cls(rank, world)
        return cls()

    def owns(self, key: str) -> bool:
        """Whether this process computes `key` (a hex content hash): the split depends on the key alone,
        so processes that look at the store at different moments still agree on it."""
        return int(key[:12], 16) % self.world == self.rank

    def wait_for(self, store, keys: Sequence[str]) -> list[str]:
        """Block until every key is in the store or has a recorded failure; return those still
        missing when the others stopped making progress."""
        last_progress, remaining = time.monotonic(), len(keys)
        while True:
            store.refresh()
            missing = [k for k in keys if k not in store and store.failure(k) is None]
            if not missing:
                return []
            if len(missing) < remaining:
                last_progress, remaining = time.monotonic(), len(missing)
            elif time.monotonic() - last_progress > self.stall_s:
                return missing
            time.sleep(self.poll_s)


def _worker(rank: int, world: int, threads: int, device: str | None, target, args: tuple, results) -> None:
    """Entry point of one spawned extraction process."""
    import torch

    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world)
    torch.set_num_threads(threads)
    results.put((rank, target(*args, device=device)))


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or taskset's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_processes(world: int, target, args: tuple, devices: Sequence[str | None] = ()) -> list:
    """Run `target(*args, device=...)` in `world` spawned processes (ranks 0..world-1), splitting the
    CPU threads between them; return their results by rank, raise if any failed."""
    threads = max(1, available_cores() // world)
    ctx = mp.get_context("spawn")  # fork is unsafe once torch has started its thread pools
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, world, threads, devices[r] if devices else None, target, args,
                                                results)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    by_rank = dict(results.get() for p in procs if p.exitcode == 0)
    failed = [r for r, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"extraction process(es) {failed} failed (exit codes "
                           f"{[procs[r].exitcode for r in failed]}); rerun to resume from the finished shards")
    return [by_rank[r] for r in range(world)]
