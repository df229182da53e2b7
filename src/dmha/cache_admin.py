"""`dmha cache info|verify|prune`: look after the feature store and the transcript cache.

Shards and transcripts are only ever written through temp file + rename, so a killed job can
leave hidden `.NAME.*.tmp` files behind but never a half-written shard under its real name;
`verify` checks that promise (and, with `deep`, every stored value), `prune` frees space.
Shards are the unit of deletion: a deleted shard's entries are recomputed by the next job.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .layout import StoreRoot
from .store import FAILED, SHARDS, FeatureStore, StoreError, read_header

STALE_TMP_S = 3600  # a temp file untouched for an hour belongs to a dead writer


@dataclass
class EncoderDir:
    """One encoder's folder in the cache: a feature store (speech, text) or transcripts (asr)."""

    kind: str  # speech | text | asr
    folder: Path
    identity: str
    entries: int = 0
    files: int = 0  # shards (stores) or transcript files (asr)
    bytes: int = 0
    legacy: int = 0  # per-utterance files of the pre-store layout (dmha < 0.2), never read now


@dataclass
class VerifyReport:
    checked: int = 0  # shards and transcript files
    entries: int = 0
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    stale_tmp: list[str] = field(default_factory=list)
    failed_markers: int = 0
    removed: int = 0

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.stale_tmp


def encoder_dirs(root: Path) -> Iterator[EncoderDir]:
    """Every encoder folder under the store root (layout.py says where they are)."""
    for kind, folder in StoreRoot(root).folders():
        identity = "-"
        marker = folder / "encoder.json"
        if marker.is_file():
            try:
                identity = json.loads(marker.read_text(encoding="utf-8")).get("identity", "?")
            except (OSError, ValueError):
                identity = "? (unreadable encoder.json)"
        yield EncoderDir(kind, folder, identity)


def _shards(folder: Path) -> list[Path]:
    shard_dir = folder / SHARDS
    return sorted(p for p in shard_dir.glob("*.safetensors") if not p.name.startswith(".")) if shard_dir.is_dir() else []


def _transcripts(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.txt") if not p.name.startswith(".") and FAILED not in p.parts]


def _legacy(folder: Path) -> list[Path]:
    """Old per-utterance entries: `<folder>/<xx>/<key>.safetensors`."""
    return [p for p in folder.glob("*/*.safetensors") if p.parent.name != SHARDS and not p.name.startswith(".")]


def info(root: Path) -> list[EncoderDir]:
    """Entries, files and bytes per encoder folder."""
    dirs = []
    for d in encoder_dirs(root):
        files = _transcripts(d.folder) if d.kind == "asr" else _shards(d.folder)
        d.files, d.bytes = len(files), sum(p.stat().st_size for p in files)
        d.entries = len(files) if d.kind == "asr" else len(FeatureStore(d.folder))
        d.legacy = len(_legacy(d.folder))
        dirs.append(d)
    return dirs


def _check_shard(path: Path, deep: bool) -> tuple[int, str | None]:
    """(entries, None) if the shard reads back, else (0, reason)."""
    try:
        entries, _ = read_header(path)
    except StoreError as err:
        return 0, str(err).removeprefix(f"{path}: ")
    if not entries:
        return 0, "no entries"
    if deep:
        mm = np.memmap(path, dtype=np.uint8, mode="r")
        for key, loc in entries.items():
            values = np.ndarray(loc.shape, dtype=loc.np_dtype, buffer=mm, offset=loc.offset)
            if not np.isfinite(values).all():
                return 0, f"entry {key}: non-finite values"
    return len(entries), None


def verify(root: Path, deep: bool = False, fix: bool = False, progress: bool = True) -> VerifyReport:
    """Read every shard's header (deep: every value) and transcript; list damage and stale temp files.

    With `fix`, damaged shards, stale temp files and failure markers are deleted: their entries
    are simply recomputed by the next job that needs them.
    """
    from tqdm.auto import tqdm

    report = VerifyReport()
    dirs = list(encoder_dirs(root))
    files = [(p, d.kind) for d in dirs for p in (_transcripts(d.folder) if d.kind == "asr" else _shards(d.folder))]
    for path, kind in tqdm(files, desc="verifying cache", disable=not progress or not files):
        report.checked += 1
        if kind == "asr":
            count, reason = 1, _check_transcript(path)
        else:
            count, reason = _check_shard(path, deep)
        report.entries += count
        if reason:
            report.corrupt.append((str(path), reason))
            if fix:
                path.unlink(missing_ok=True)
                report.removed += 1
    now = time.time()
    for tmp in Path(root).rglob(".*.tmp"):
        if now - tmp.stat().st_mtime > STALE_TMP_S:
            report.stale_tmp.append(str(tmp))
            if fix:
                tmp.unlink(missing_ok=True)
                report.removed += 1
    for d in dirs:
        markers = list((d.folder / FAILED).glob("*.txt"))
        report.failed_markers += len(markers)
        if fix:
            shutil.rmtree(d.folder / FAILED, ignore_errors=True)
    return report


def _check_transcript(path: Path) -> str | None:
    try:
        path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return f"unreadable transcript ({err})"
    return None


def prune(root: Path, older_than_days: float | None = None, encoder: str | None = None, legacy: bool = False,
          dry_run: bool = False) -> tuple[int, int]:
    """Delete shards not used for `older_than_days` (the later of access and modification time),
    every file of encoders whose identity contains `encoder`, and/or (`legacy`) entries of the
    pre-store layout. Returns (files, bytes)."""
    if older_than_days is None and encoder is None and not legacy:
        raise ValueError("say what to prune: --older-than DAYS, --encoder TEXT and/or --legacy")
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else math.inf
    files = size = 0

    def remove(path: Path) -> None:
        nonlocal files, size
        files, size = files + 1, size + path.stat().st_size
        if not dry_run:
            path.unlink(missing_ok=True)

    for d in encoder_dirs(root):
        if legacy:
            for path in _legacy(d.folder):
                remove(path)
        if encoder is not None and encoder not in d.identity:
            continue
        if encoder is None and older_than_days is None:
            continue
        whole = older_than_days is None  # --encoder alone: the whole folder goes
        for path in _transcripts(d.folder) if d.kind == "asr" else _shards(d.folder):
            stat = path.stat()
            if whole or max(stat.st_atime, stat.st_mtime) < cutoff:
                remove(path)
        if whole and not dry_run:
            shutil.rmtree(d.folder, ignore_errors=True)
    return files, size
