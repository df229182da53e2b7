"""What `predict` reads: audio files, folders of them (searched recursively), a manifest's paths and
transcripts, and a table of transcripts by path. Every path comes back as given or resolved, in a
stable order, so results line up with what was asked for."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

from .audio import AUDIO_EXTENSIONS, is_audio_file
from .data.manifest import ManifestError, read_manifest

# Why a folder given as an input yields nothing (the folder's path comes before it, as for any bad item).
NO_AUDIO = f"no audio files in this folder or below (looked for {', '.join(sorted(AUDIO_EXTENSIONS))})"


def audio_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The given paths, each folder replaced by the audio files under it (recursively, sorted; by
    extension, dmha.audio.AUDIO_EXTENSIONS). A folder with none stays as it is, so the batch reports it
    as a bad item beside the others (reason NO_AUDIO) instead of failing."""
    out: list[Path] = []
    for given in map(Path, paths):
        found = sorted(p for p in given.rglob("*") if p.is_file() and is_audio_file(p)) if given.is_dir() else []
        out += found or [given]
    return out


def manifest_inputs(manifest: str | os.PathLike[str]) -> tuple[list[Path], list[str | None]]:
    """A manifest's paths (every split) and their transcripts (None where empty: ASR fills them)."""
    items = read_manifest(manifest, require_label=False)
    return [item.path for item in items], [item.transcript for item in items]


def read_transcripts(table: str | os.PathLike[str], paths: Sequence[Path]) -> list[str | None]:
    """Each path's transcript from a CSV with `path` and `transcript` columns (paths relative to the
    table's folder, or absolute); None for a path the table does not list (ASR fills it)."""
    table = Path(table)
    try:
        with open(table, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ManifestError(f"{table}: cannot read the transcripts table ({err})") from None
    if not rows or not {"path", "transcript"} <= set(rows[0]):
        raise ManifestError(f"{table}: a transcripts table needs `path` and `transcript` columns")
    base = table.parent.resolve()
    given = {(base / row["path"].strip()).resolve(): (row["transcript"] or "").strip() or None for row in rows}
    return [given.get(Path(p).resolve()) for p in paths]
