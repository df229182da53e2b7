"""The runs of a cross-validation, trained one after another or several at once in spawned processes.

Each job names its fold manifest, its run folder and the config it trains with (the cv's, with the
run's seed), so a reader follows a fold from `cross_validate` into its training here. Job processes
split the CPU threads between them and die with the cv (PR_SET_PDEATHSIG), so a killed cv leaves no
orphan run training on its own.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .config import Config
from .parallel import available_cores


@dataclass(frozen=True)
class RunJob:
    """One cv run: train `config` on the fold manifest into `folder` (fold and seed: for the report)."""

    fold: int
    seed: int
    manifest: Path
    folder: Path
    config: Config


def train_job(job: RunJob) -> RunJob:
    """Train one run (in this process or a job process): `dmha train` of the fold's manifest."""
    from .experiment import train

    train(job.manifest, job.folder, job.config, progress=False)
    return job


def run_jobs(jobs: Sequence[RunJob], processes: int = 1) -> Iterator[RunJob]:
    """Train each job; yield them as they finish (in order with one process). With several, each job
    process gets its share of the CPU threads."""
    if processes <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield train_job(job)
        return
    processes = min(processes, len(jobs))
    threads = max(1, available_cores() // processes)
    with ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn"), initializer=_init_job,
                             initargs=(threads, os.getpid())) as pool:
        futures = {pool.submit(train_job, job): job for job in jobs}
        try:
            for future in as_completed(futures):
                yield future.result()  # a failed run stops the cv; the finished ones are already written
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def quiet_lightning() -> None:
    """Lightning's per-run banner (GPU available, logger tips) and a deprecation warning of its own
    would repeat K x seeds times."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def _init_job(threads: int, parent: int) -> None:
    """A cv job process: its share of the CPU threads, the same quiet logging as the parent, and
    death with the parent (Linux), so a killed cv leaves no orphan run training on its own."""
    import torch

    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    torch.set_num_threads(threads)
    quiet_lightning()


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel kills this process when its parent ends, however it ends. SIGKILL,
    because Lightning catches SIGTERM to finish its epoch; a run resumes from its last checkpoint."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
