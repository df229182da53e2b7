"""Micro-batching: one worker thread gathers concurrent requests and predicts them in one call.

Torch runs only in this thread, so requests never compete for the CPU's cores inside torch, and
clients that arrive within a few milliseconds of each other share one padded forward pass.
Long jobs (`submit_call`) go through the same queue and run alone, between batches.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

PredictBatch = Callable[[Sequence[np.ndarray], Sequence[str | None]], list]


class QueueFull(RuntimeError):
    """The bounded queue holds `queue_size` jobs already (the service answers 503)."""


class BatcherClosed(RuntimeError):
    """The worker has stopped; no job is accepted any more."""


@dataclass
class _Item:
    wave: np.ndarray
    transcript: str | None
    future: Future


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: Future


_STOP = object()


class MicroBatcher:
    """A bounded queue and one worker thread calling `predict_batch(waves, transcripts)` per batch.

    The worker takes the first waiting item, then waits up to `window_s` for more (never more
    than `max_batch`); items already queued are always taken, even with a zero window. If a batch
    raises, its items are retried one by one, so one bad item fails only its own future.

    Example:
        >>> batcher = MicroBatcher(rec.predict_waves, window_s=0.02, max_batch=8, queue_size=64)  # doctest: +SKIP
        >>> batcher.start(); batcher.submit(wave, None).result().label                          # doctest: +SKIP
    """

    def __init__(self, predict_batch: PredictBatch, *, window_s: float = 0.02, max_batch: int = 8,
                 queue_size: int = 64):
        if max_batch < 1 or queue_size < 1 or window_s < 0:
            raise ValueError("max_batch and queue_size must be >= 1 and window_s >= 0")
        self._predict = predict_batch
        self.window_s, self.max_batch = window_s, max_batch
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._closed = False
        self.stats = {"batches": 0, "items": 0, "calls": 0, "retries": 0}  # written by the worker only

    def start(self) -> None:
        """Start the worker thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dmha-batcher", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new jobs, fail the waiting ones, let the running batch finish, stop the worker."""
        self._closed = True
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP and job.future.set_running_or_notify_cancel():
                job.future.set_exception(BatcherClosed("the service is shutting down"))
        if self._thread is not None:
            self._queue.put(_STOP, timeout=timeout)
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closed

    @property
    def pending(self) -> int:
        """Jobs waiting in the queue (not counting the batch being predicted)."""
        return self._queue.qsize()

    def submit(self, wave: np.ndarray, transcript: str | None = None) -> Future:
        """Queue one 16 kHz waveform; the future resolves to its Prediction. Raises QueueFull."""
        return self._put(_Item(wave, transcript, Future()))

    def submit_call(self, fn: Callable[[], Any]) -> Future:
        """Queue a job that must run in the worker thread alone (e.g. a long recording). Raises QueueFull."""
        return self._put(_Call(fn, Future()))

    def _put(self, job: _Item | _Call) -> Future:
        if self._closed or self._thread is None:
            raise BatcherClosed("the prediction worker is not running")
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"the queue is full ({self._queue.maxsize} requests waiting); try again shortly") from None
        return job.future

    def _run(self) -> None:
        held = None  # a long job met while filling a batch: it runs right after that batch
        while True:
            job, held = (held, None) if held is not None else (self._queue.get(), None)
            if job is _STOP:
                return
            if isinstance(job, _Call):
                self._run_call(job)
                continue
            batch, held = self._gather(job)
            self._run_batch(batch)
            if held is _STOP:
                return

    def _gather(self, first: _Item) -> tuple[list[_Item], Any]:
        """The first item plus whatever arrives within the window, up to max_batch."""
        batch, deadline = [first], time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(job, _Item):
                return batch, job
            batch.append(job)
        return batch, None

    def _run_batch(self, batch: list[_Item]) -> None:
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]  # skip timed-out ones
        if not live:
            return
        self.stats["batches"] += 1
        self.stats["items"] += len(live)
        try:
            results = self._predict([i.wave for i in live], [i.transcript for i in live])
            if len(results) != len(live):
                raise RuntimeError(f"predict_batch returned {len(results)} results for {len(live)} items")
        except Exception as err:  # noqa: BLE001 - isolate the bad item below
            if len(live) == 1:
                live[0].future.set_exception(err)
                return
            log.warning("a batch of %d failed (%s); retrying its items one by one", len(live), err)
            self.stats["retries"] += 1
            for item in live:
                self._run_one(item)
            return
        for item, result in zip(live, results):
            item.future.set_result(result)

    def _run_one(self, item: _Item) -> None:
        try:
            item.future.set_result(self._predict([item.wave], [item.transcript])[0])
        except Exception as err:  # noqa: BLE001 - the error belongs to this request only
            item.future.set_exception(err)

    def _run_call(self, job: _Call) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        self.stats["calls"] += 1
        try:
            job.future.set_result(job.fn())
        except Exception as err:  # noqa: BLE001 - reported to the request that asked for it
            job.future.set_exception(err)
