"""Folder-per-label importer: any tree of `<label>/…/<audio>` becomes a manifest."""
from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from dmha.audio import is_audio_file
from dmha.data.manifest import CorpusError, Item, add_durations, read_transcript, write_manifest

log = logging.getLogger(__name__)

# Top-level folder names read as splits; the common spellings of "validation" mean dev.
SPLIT_FOLDERS = {"train": "train", "dev": "dev", "test": "test",
                 "val": "dev", "valid": "dev", "validation": "dev"}


@dataclass(frozen=True)
class _Found:
    """An audio file found in a label folder, before it has a split."""

    path: Path
    key: str  # path relative to the source root, '/'-separated: stable across machines
    label: str
    speaker: str | None
    split: str | None


def prepare_folders(
    src: str | os.PathLike[str], out: str | os.PathLike[str], *,
    dev: float = 0.1, test: float = 0.1, seed: int = 0,
) -> list[Item]:
    """Build a manifest from a folder-per-label tree and write it to `out`.

    Layouts, chosen from the tree:
      * `SRC/<split>/<label>/**/<audio>` when every top-level folder is a split name
        (train, dev, test; val/valid/validation mean dev): those splits are used as given.
      * `SRC/<label>/<speaker>/<audio>` when every file sits exactly there: speakers are split
        into dev/test/train so no speaker is in two splits (same folder name = same speaker).
      * `SRC/<label>/**/<audio>` otherwise: files are split per label (stratified).
    Splits are assigned by sorting speakers or relative paths by a seeded SHA-256 hash and taking
    round(n*test) for test, round(n*dev) for dev (at least one each when possible), rest train;
    so the split depends only on the file names and `seed`. A `name.txt` next to `name.wav` is
    read as its transcript. Hidden files and folders are ignored.

    Args:
        src: the source tree.
        out: manifest CSV to write.
        dev: fraction of speakers (or files per label) for dev, when splits are not given.
        test: fraction for test, likewise.
        seed: changes the hash order, hence which files land in dev and test.

    Returns:
        The items written, sorted by path.

    Raises:
        CorpusError: no label folders, no audio, mixed split/label folders, unreadable audio.
        ValueError: fractions outside [0, 1) or summing to 1 or more.

    Example:
        >>> items = prepare_folders("my_corpus", "data/my_corpus.csv", dev=0.1, test=0.1)
    """
    root = Path(src)
    if not root.is_dir():
        raise CorpusError(f"{root}: folder not found")
    if not (0 <= dev < 1 and 0 <= test < 1 and dev + test < 1):
        raise ValueError(f"dev={dev} and test={test} must be in [0, 1) and sum to less than 1")
    found = _scan_tree(root)
    if any(f.split is None for f in found):
        found = _assign_splits(found, dev, test, seed)
    items = [_item(f) for f in sorted(found, key=lambda f: f.key)]
    add_durations(items, root)
    write_manifest(items, out)
    log.info("folders: %d files, %d labels from %s written to %s",
             len(items), len({i.label for i in items}), root, out)
    return items


def _scan_tree(root: Path) -> list[_Found]:
    """Every audio file with its label (and split, when the top level names splits)."""
    tops = _subfolders(root)
    if not tops:
        raise CorpusError(f"{root}: no label folders (expected {root}/<label>/<audio files>)")
    named = [top for top in tops if top.name.lower() in SPLIT_FOLDERS]
    if named and len(named) < len(tops):
        others = ", ".join(top.name for top in tops if top not in named)
        raise CorpusError(
            f"{root}: top-level folders mix split names ({', '.join(t.name for t in named)}) "
            f"with others ({others}); use either <split>/<label>/ or <label>/ folders"
        )
    if named:
        found = [f for top in named for f in _scan_labels(root, top, SPLIT_FOLDERS[top.name.lower()])]
    else:
        found = _scan_labels(root, root, None)
    if not found:
        raise CorpusError(f"{root}: no audio files in the label folders")
    return found


def _scan_labels(root: Path, folder: Path, split: str | None) -> list[_Found]:
    """Audio under `folder/<label>/`; a speaker is known when every file is `<label>/<speaker>/<file>`."""
    loose = sum(is_audio_file(p) for p in folder.iterdir() if p.is_file())
    if loose:
        log.warning("folders: ignored %d audio files directly in %s (not in a label folder)", loose, folder)
    files: list[tuple[Path, str]] = []
    for label_dir in _subfolders(folder):
        audio = [p for p in sorted(label_dir.rglob("*")) if _visible_audio(p, label_dir)]
        if not audio:
            log.warning("folders: label folder %s has no audio files; skipped", label_dir)
        files += [(p, label_dir.name) for p in audio]
    by_speaker = bool(files) and all(len(p.relative_to(folder).parts) == 3 for p, _ in files)
    return [
        _Found(path=p, key=p.relative_to(root).as_posix(), label=label,
               speaker=p.parent.name if by_speaker else None, split=split)
        for p, label in files
    ]


def _assign_splits(found: list[_Found], dev: float, test: float, seed: int) -> list[_Found]:
    """Speaker-independent split when speakers are known, else a per-label split of files."""
    by_speaker = all(f.speaker is not None for f in found)
    strata: dict[str, set[str]] = defaultdict(set)  # one stratum for speakers, one per label for files
    for f in found:
        strata["" if by_speaker else f.label].add(f.speaker if by_speaker else f.key)
    split_of: dict[str, str] = {}
    for groups in strata.values():
        ordered = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        n_test, n_dev = _split_sizes(len(ordered), test, dev)
        for rank, group in enumerate(ordered):
            split_of[group] = "test" if rank < n_test else "dev" if rank < n_test + n_dev else "train"
    return [
        _Found(f.path, f.key, f.label, f.speaker, split_of[f.speaker if by_speaker else f.key])
        for f in found
    ]


def _split_sizes(n: int, *fractions: float) -> list[int]:
    """round(n * fraction) for each, at least 1 when the fraction is non-zero, always ≥ 1 left for train."""
    sizes: list[int] = []
    left = n - 1
    for fraction in fractions:
        size = min(max(int(n * fraction + 0.5), 1 if fraction > 0 else 0), max(left, 0))
        sizes.append(size)
        left -= size
    return sizes


def _item(found: _Found) -> Item:
    """A found file → manifest item, with the sidecar transcript if there is one."""
    assert found.split is not None  # set by the layout or by _assign_splits
    return Item(path=found.path.resolve(), label=found.label, split=found.split,
                speaker=found.speaker, transcript=read_transcript(found.path.with_suffix(".txt")))




def _subfolders(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted so results never depend on directory order."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _visible_audio(path: Path, label_dir: Path) -> bool:
    """An audio file with no hidden component below its label folder."""
    parts = path.relative_to(label_dir).parts
    return is_audio_file(path) and path.is_file() and not any(part.startswith(".") for part in parts)
