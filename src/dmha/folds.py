"""The speaker folds of a cross-validation: who is tested, who selects the model, who trains it.

Speakers are grouped into K folds (never split): in natural order cut into K contiguous groups, or
as a manifest column gives them (a published protocol), or within each corpus when there are several
(every fold then tests every corpus). For test fold k the dev speakers are fold k+1 (cyclic) and the
other K-2 folds train.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import ConfigError
from .corpora import corpus_of
from .data.manifest import Item, ManifestError


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: who is tested, who selects the model, who trains it."""

    index: int
    name: str  # the fold's id: its number, or its value in --fold-column
    test: tuple[str, ...]  # speakers
    dev: tuple[str, ...]
    train: tuple[str, ...]


def natural_key(text: str) -> tuple:
    """'2' < '10' and 'a2' < 'a10': speakers and fold ids sort as people read them."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def speaker_id(item: Item, manifest, several: bool = False) -> str:
    """The item's speaker id as folds list it: `corpus/speaker` in a cv of several corpora, so a speaker
    id two corpora share stays two speakers."""
    if not item.speaker:
        raise ManifestError(f"{manifest}: {item.path} has no speaker; cv groups utterances by the speaker column")
    return f"{corpus_of(item)}/{item.speaker}" if several and corpus_of(item) else item.speaker


def assign_corpus_folds(items: Sequence[Item], k: int | None, manifest="manifest") -> list[tuple[str, list[str]]]:
    """Folds made within each corpus (its speakers in natural order, cut into K groups) and joined by
    number, so every fold tests every corpus and each corpus's folds are those of its own cv."""
    by_corpus: dict[str, list[Item]] = {}
    for item in items:
        by_corpus.setdefault(corpus_of(item) or "", []).append(item)
    merged: list[tuple[str, list[str]]] = []
    for corpus in sorted(by_corpus, key=natural_key):
        for n, (name, speakers) in enumerate(assign_folds(by_corpus[corpus], k, None, f"{manifest} ({corpus})")):
            if n == len(merged):
                merged.append((name, []))
            merged[n][1].extend(f"{corpus}/{speaker}" for speaker in speakers)
    return merged


def assign_folds(items: Sequence[Item], k: int | None, column: str | None,
                 manifest="manifest") -> list[tuple[str, list[str]]]:
    """(fold name, speakers) per fold. Without `column`: speakers in natural order cut into K contiguous groups
    whose sizes differ by at most one (deterministic, and e.g. RAVDESS's actors 1-4, 5-8, ...).
    With `column`: the manifest's given assignment (a published protocol); a speaker in two folds is an error."""
    if column is None:
        speakers = sorted({speaker_id(i, manifest) for i in items}, key=natural_key)
        if k is None or k < 3:
            raise ConfigError(f"--folds must be >= 3 (test, dev and at least one training fold), got {k}")
        if len(speakers) < k:
            raise ManifestError(f"{manifest}: {len(speakers)} speakers cannot fill {k} folds")
        return [(str(n), list(g)) for n, g in enumerate(np.array_split(np.array(speakers, dtype=object), k))]
    by_fold: dict[str, set[str]] = {}
    fold_of: dict[str, str] = {}
    for item in items:
        value = item.extra.get(column, "").strip()
        if not value:
            raise ManifestError(f"{manifest}: {item.path} has no value in fold column {column!r}")
        speaker = item.speaker or f"{column}={value}"  # without speakers, the fold is the group
        if fold_of.setdefault(speaker, value) != value:
            raise ManifestError(f"{manifest}: speaker {speaker} is in folds {fold_of[speaker]} and {value} "
                                f"of column {column!r}; a speaker must stay in one fold")
        by_fold.setdefault(value, set()).add(speaker)
    if len(by_fold) < 3:
        raise ManifestError(f"{manifest}: fold column {column!r} has {len(by_fold)} folds; cv needs at least 3")
    if k is not None and k != len(by_fold):
        raise ConfigError(f"--folds {k} disagrees with the {len(by_fold)} folds in column {column!r}")
    return [(name, sorted(by_fold[name], key=natural_key)) for name in sorted(by_fold, key=natural_key)]


def make_folds(assignment: list[tuple[str, list[str]]]) -> list[Fold]:
    """Test fold k, dev fold k+1 (cyclic), train the rest."""
    k, names, groups = len(assignment), [n for n, _ in assignment], [g for _, g in assignment]
    return [Fold(i, names[i], tuple(groups[i]), tuple(groups[(i + 1) % k]),
                 tuple(s for j, g in enumerate(groups) if j not in (i, (i + 1) % k) for s in g))
            for i in range(k)]


def fold_items(items: Sequence[Item], fold: Fold, column: str | None, several: bool = False) -> list[Item]:
    """The manifest's items with their split set by the fold (the original split column is ignored)."""
    role = {**{s: "test" for s in fold.test}, **{s: "dev" for s in fold.dev}, **{s: "train" for s in fold.train}}
    out = []
    for item in items:
        speaker = speaker_id(item, "", several) if item.speaker else f"{column}={item.extra.get(column, '').strip()}"
        out.append(dataclasses.replace(item, split=role[speaker], extra=dict(item.extra)))
    return out
