"""The feature store: one encoder's frozen outputs in immutable, memory-mapped safetensors shards.

Layout of one store (one encoder identity, e.g. `<cache>/speech/<hash>/`):

    encoder.json                 {"identity": ..., "format": FORMAT}
    shards/<utc time>-<pid>-<rand>.safetensors   many entries each, named by content key, fp16
    shards/.<name>.*.tmp         a shard being written (temp file + rename)
    failed/<key>.txt             why an entry could not be computed (read by the other processes)

Shards are never modified after their rename, so the index is simply the union of the shard
headers (a safetensors header already maps each tensor to its byte range): there is no index
file to keep in sync and no lock. Several processes can write into the same store at once, each
into shards of its own; a process killed mid-shard leaves only a temp file, and every shard it
finished stays usable. Reads are views on a copy-on-write memory map: no parsing, no copy, and
the operating system's page cache keeps hot shards in RAM.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from .fileio import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

FORMAT = "dmha-store-1"
SHARDS = "shards"
FAILED = "failed"  # one small text file per entry that a process could not compute, with the reason
SHARD_SUFFIX = ".safetensors"
_DTYPES = {"F16": np.float16, "F32": np.float32, "BF16": None}


class StoreError(RuntimeError):
    """A shard that cannot be read as part of a store."""


@dataclass(frozen=True)
class Location:
    """Where one entry's bytes are: shard file, byte offset from the file start, shape, dtype."""

    shard: str
    offset: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(_DTYPES[self.dtype])

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.np_dtype.itemsize


def read_header(path: Path) -> tuple[dict[str, Location], dict[str, str]]:
    """Parse a safetensors shard's header → ({key: Location}, metadata); StoreError when damaged."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > size - 8:
                raise StoreError(f"{path}: header length {length} exceeds the file size {size}")
            header = json.loads(f.read(length))
    except (OSError, struct.error, ValueError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: unreadable shard header ({err})") from None
    metadata = header.pop("__metadata__", None) or {}
    start, entries = 8 + length, {}
    for key, spec in header.items():
        dtype, shape, (begin, end) = spec.get("dtype"), tuple(spec.get("shape", ())), spec.get("data_offsets", (0, 0))
        if dtype not in _DTYPES or _DTYPES[dtype] is None:
            raise StoreError(f"{path}: entry {key} has unsupported dtype {dtype}")
        location = Location(path.name, start + begin, shape, dtype)
        if end - begin != location.nbytes or start + end > size:
            raise StoreError(f"{path}: entry {key} is truncated (file is {size} bytes)")
        entries[key] = location
    return entries, metadata


class FeatureStore:
    """One encoder's entries: `key in store`, `store.get(key)` → fp16 tensor view, `store.writer()`.

    The in-memory index covers the shards present when it was last refreshed; `refresh()` adds
    shards other processes finished since (only new files are parsed).
    """

    def __init__(self, folder: str | Path, identity: str | None = None, shard_bytes: int = 256 * 2**20):
        self.folder, self.shard_bytes = Path(folder), shard_bytes
        self.shard_dir = self.folder / SHARDS
        if identity is not None and not (self.folder / "encoder.json").exists():
            self.shard_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.folder / "encoder.json", json.dumps({"identity": identity, "format": FORMAT}))
        self._index: dict[str, Location] = {}
        self._seen: set[str] = set()
        self._maps: dict[str, np.memmap] = {}
        self._lock = threading.Lock()
        self.refresh()

    @property
    def identity(self) -> str:
        try:
            return json.loads((self.folder / "encoder.json").read_text(encoding="utf-8")).get("identity", "?")
        except (OSError, ValueError):
            return "?"

    def shard_paths(self) -> list[Path]:
        """Finished shards, oldest name first (so the first copy of a duplicated key wins everywhere)."""
        if not self.shard_dir.is_dir():
            return []
        return sorted(p for p in self.shard_dir.iterdir() if p.suffix == SHARD_SUFFIX and not p.name.startswith("."))

    def refresh(self) -> int:
        """Index shards not seen yet; returns how many entries were added."""
        added = 0
        with self._lock:
            for path in self.shard_paths():
                if path.name in self._seen:
                    continue
                self._seen.add(path.name)
                try:
                    entries, _ = read_header(path)
                except StoreError as err:  # its entries are recomputed; `dmha cache verify --fix` removes it
                    log.warning("skipping a damaged shard: %s", err)
                    continue
                for key, location in entries.items():
                    if key not in self._index:
                        self._index[key] = location
                        added += 1
        return added

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def keys(self) -> Iterator[str]:
        return iter(self._index)

    def location(self, key: str) -> Location:
        if key not in self._index:
            self.refresh()  # another writer (or another handle on this store) may have added it
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(f"{self.folder}: no entry {key}") from None

    def get(self, key: str) -> torch.Tensor:
        """The stored tensor (fp16), a view on the shard's memory map: nothing is read until used."""
        return torch.from_numpy(self.view(self.location(key)))

    def view(self, loc: Location) -> np.ndarray:
        """The array at `loc`, on a copy-on-write memory map of its shard (opened once per process)."""
        mm = self._maps.get(loc.shard)
        if mm is None:
            mm = self._maps.setdefault(loc.shard, np.memmap(self.shard_dir / loc.shard, dtype=np.uint8, mode="c"))
        return np.ndarray(loc.shape, dtype=loc.np_dtype, buffer=mm, offset=loc.offset)

    def mark_failed(self, key: str, reason: str) -> None:
        """Record that `key` cannot be computed (bad audio), so other processes do not wait for it."""
        atomic_write_text(self.folder / FAILED / f"{key}.txt", reason)

    def failure(self, key: str) -> str | None:
        """The recorded reason `key` could not be computed, if any."""
        try:
            return (self.folder / FAILED / f"{key}.txt").read_text(encoding="utf-8")
        except OSError:
            return None

    def writer(self, shard_bytes: int | None = None, flush_s: float = 120.0) -> "ShardWriter":
        """A buffer that becomes a new shard every `shard_bytes` (default: the store's) or `flush_s`."""
        return ShardWriter(self, shard_bytes or self.shard_bytes, flush_s)

    def __getstate__(self) -> dict:
        # DataLoader workers get the index; memory maps are reopened lazily in each process.
        return {**self.__dict__, "_maps": {}, "_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _shard_name() -> str:
    """`<UTC time to the microsecond>-<pid>-<random>.safetensors`: names sort in writing order
    within a process (a second-resolution name made two shards of one second sort at random),
    and two processes can never pick the same name."""
    now = time.time_ns() // 1000
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1_000_000)) + f"{now % 1_000_000:06d}"
    return f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}{SHARD_SUFFIX}"


class ShardWriter:
    """Buffers new entries and writes them as one shard when the buffer is full, old, or closed.

    A killed process loses at most the unflushed buffer (≤ shard_bytes, ≤ flush_s of work).
    """

    def __init__(self, store: FeatureStore, shard_bytes: int, flush_s: float):
        self.store, self.shard_bytes, self.flush_s = store, shard_bytes, flush_s
        self._buffer: dict[str, torch.Tensor] = {}
        self._bytes, self._since = 0, time.monotonic()
        self.written = 0

    def put(self, key: str, tensor: torch.Tensor) -> None:
        """Add one entry (stored fp16); duplicates of stored or buffered keys are ignored."""
        if key in self.store or key in self._buffer:
            return
        tensor = tensor.detach().to("cpu", torch.float16).contiguous()
        self._buffer[key] = tensor
        self._bytes += tensor.numel() * 2
        if self._bytes >= self.shard_bytes or time.monotonic() - self._since >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Write the buffer as a new shard (temp file + rename) and add it to the store's index."""
        if not self._buffer:
            return
        name = _shard_name()
        try:
            with atomic_path(self.store.shard_dir / name) as tmp:
                save_file(self._buffer, str(tmp), metadata={"format": FORMAT, "entries": str(len(self._buffer))})
        except (OSError, SafetensorError) as err:  # e.g. a full disk: the temp file is gone, earlier shards stay
            self._buffer, self._bytes = {}, 0  # not retried at exit: the next run recomputes these
            reason = getattr(err, "strerror", None) or str(err).rpartition(": ")[2] or type(err).__name__
            raise StoreError(f"{self.store.shard_dir}: cannot write a feature shard ({reason}); "
                             "finished shards are kept") from None
        self.written += len(self._buffer)
        self._buffer, self._bytes, self._since = {}, 0, time.monotonic()
        self.store.refresh()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Flush on errors too: finished entries are valid whatever happened to the next one.
        self.flush()
