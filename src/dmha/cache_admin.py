"""`dmha cache info|verify|prune`: look after the feature cache without knowing its layout.

The cache is only ever written through temp file + rename, so a killed job can leave hidden
`.NAME.*.tmp` files behind but never a half-written entry under its real name; `verify` checks
that promise (and, with `deep`, every stored value), `prune` frees space.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from safetensors import safe_open

STALE_TMP_S = 3600  # a temp file untouched for an hour belongs to a dead writer


@dataclass
class EncoderDir:
    """One encoder's folder in the cache."""

    kind: str  # speech | text | asr | …
    folder: Path
    identity: str
    entries: int = 0
    bytes: int = 0


@dataclass
class VerifyReport:
    checked: int = 0
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    stale_tmp: list[str] = field(default_factory=list)
    removed: int = 0

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.stale_tmp


def encoder_dirs(root: Path) -> Iterator[EncoderDir]:
    """Every `<kind>/<hash>/` folder under the cache root (features: speech, text; transcripts: asr)."""
    for folder in sorted(p for p in Path(root).glob("*/*") if p.is_dir()):
        marker = folder / "encoder.json"
        identity = "-"
        if marker.is_file():
            try:
                identity = json.loads(marker.read_text(encoding="utf-8")).get("identity", "?")
            except (OSError, ValueError):
                identity = "? (unreadable encoder.json)"
        yield EncoderDir(folder.parent.name, folder, identity)


def _entries(folder: Path) -> Iterator[Path]:
    """Cached entries: feature tensors (.safetensors) and transcripts (.txt); not temp files."""
    return (p for p in folder.rglob("*") if p.suffix in (".safetensors", ".txt") and not p.name.startswith("."))


def info(root: Path) -> list[EncoderDir]:
    """Entries and bytes per encoder folder."""
    dirs = []
    for d in encoder_dirs(root):
        for path in _entries(d.folder):
            d.entries += 1
            d.bytes += path.stat().st_size
        dirs.append(d)
    return dirs


def _check(path: Path, deep: bool) -> str | None:
    """None if the entry reads back, else the reason."""
    if path.suffix == ".txt":
        try:
            path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            return f"unreadable transcript ({err})"
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            if "hidden" not in names:
                return f"no 'hidden' tensor (has {names})"
            if deep:
                tensor = f.get_tensor("hidden")
                if tensor.numel() == 0:
                    return "empty tensor"
                if not bool(tensor.float().isfinite().all()):
                    return "non-finite values"
    except Exception as err:  # safetensors raises several types for a damaged file
        return f"unreadable ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    return None


def verify(root: Path, deep: bool = False, fix: bool = False, progress: bool = True) -> VerifyReport:
    """Read every entry's header (deep: every value); list corrupt entries and stale temp files.

    With `fix`, both are deleted: a deleted entry is simply recomputed by the next job that needs it.
    """
    from tqdm.auto import tqdm

    report = VerifyReport()
    now = time.time()
    paths = [p for d in encoder_dirs(root) for p in _entries(d.folder)]
    for path in tqdm(paths, desc="verifying cache", disable=not progress or not paths):
        report.checked += 1
        reason = _check(path, deep)
        if reason:
            report.corrupt.append((str(path), reason))
            if fix:
                path.unlink(missing_ok=True)
                report.removed += 1
    for tmp in Path(root).rglob(".*.tmp"):
        if now - tmp.stat().st_mtime > STALE_TMP_S:
            report.stale_tmp.append(str(tmp))
            if fix:
                tmp.unlink(missing_ok=True)
                report.removed += 1
    return report


def prune(root: Path, older_than_days: float | None = None, encoder: str | None = None,
          dry_run: bool = False) -> tuple[int, int]:
    """Delete entries not used for `older_than_days` (by the later of access and modification
    time) and/or every entry of encoders whose identity contains `encoder`. Returns (files, bytes)."""
    if older_than_days is None and encoder is None:
        raise ValueError("say what to prune: --older-than DAYS and/or --encoder TEXT")
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else math.inf
    files = size = 0
    for d in encoder_dirs(root):
        if encoder is not None and encoder not in d.identity:
            continue
        whole = older_than_days is None  # --encoder alone: the whole folder goes
        for path in list(_entries(d.folder)):
            stat = path.stat()
            if whole or max(stat.st_atime, stat.st_mtime) < cutoff:
                files, size = files + 1, size + stat.st_size
                if not dry_run:
                    path.unlink(missing_ok=True)
        if whole and not dry_run:
            shutil.rmtree(d.folder, ignore_errors=True)
    return files, size
