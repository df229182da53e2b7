"""Six CREMA-D clips shipped for the demo (one per emotion; provenance and licence in PROVENANCE.md).

    >>> from dmha.examples import clips
    >>> [c.label for c in clips()][:2]
    ['angry', 'disgust']
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str
    speaker: str
    transcript: str
    duration_s: float


def folder() -> Path:
    """The folder of the example clips inside the installed package."""
    return Path(str(resources.files(__name__)))


def clips() -> list[Clip]:
    """The example clips with their acted emotion, in clips.csv's order."""
    root = folder()
    with (root / "clips.csv").open(encoding="utf-8") as handle:
        return [Clip(root / row["path"], row["label"], row["speaker"], row["transcript"], float(row["duration_s"]))
                for row in csv.DictReader(handle)]
