"""The speaker folds of a cross-validation: who is tested, who selects the model, who trains it.

Speakers are grouped into K folds (never split): in natural order cut into K contiguous groups, or
as a manifest column gives them (a published protocol), or within each corpus when there are several
(every fold then tests every corpus). For test fold k the dev speakers are fold k+1 (cyclic) and the
other K-2 folds train.

Leave-one-corpus-out is the protocol of generalisation: fold k tests every clip of corpus k, its dev
speakers are the other corpora's own dev speakers (their importers' splits), and the rest of the other
corpora trains. A test clip whose label no training corpus offers cannot be predicted right: it is left
out, and the fold says how many were.
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


def corpus_out_folds(items: Sequence[Item], manifest="manifest") -> list[Fold]:
    """One fold per corpus (in natural order): its speakers tested, the other corpora's dev-split speakers
    for model selection, the rest of them trained on. Speakers are `corpus/speaker`."""
    by_corpus: dict[str, dict[str, set[str]]] = {}
    for item in items:
        corpus = corpus_of(item)
        if not corpus:
            raise ManifestError(f"{manifest}: {item.path} names no corpus; leave-one-corpus-out needs a corpus "
                                "column or one manifest per corpus")
        role = "dev" if item.split == "dev" else "train"
        by_corpus.setdefault(corpus, {"dev": set(), "train": set()})[role].add(speaker_id(item, manifest, True))
    if len(by_corpus) < 2:
        raise ConfigError(f"leave-one-corpus-out needs at least 2 corpora, got {len(by_corpus)} ({manifest})")
    names = sorted(by_corpus, key=natural_key)
    for name in names:
        if not by_corpus[name]["dev"]:
            raise ManifestError(f"{manifest} ({name}): no speaker in the dev split; leave-one-corpus-out selects "
                                "the model on the training corpora's dev speakers (the importers' splits)")
    ordered = lambda speakers: tuple(sorted(speakers, key=natural_key))  # noqa: E731
    folds = []
    for k, name in enumerate(names):
        others = [n for n in names if n != name]
        folds.append(Fold(k, name, ordered(by_corpus[name]["dev"] | by_corpus[name]["train"]),
                          ordered(set().union(*(by_corpus[n]["dev"] for n in others))),
                          ordered(set().union(*(by_corpus[n]["train"] for n in others)))))
    return folds


LEFT_OUT = "left_out"  # the split of a test clip whose label no training corpus offers (never trained or scored)


def corpus_out_items(items: Sequence[Item], fold: Fold) -> tuple[list[Item], dict[str, int]]:
    """A leave-one-corpus-out fold's manifest rows (split set by the fold) and, by label, the test clips left
    out because no training corpus offers their label: they stay in the manifest with split `left_out`
    (every fold lists the same files, as the peers on the same folds need) and no run uses them."""
    tested = set(fold.test)
    rows = [dataclasses.replace(item, split="test" if (sid := speaker_id(item, "", True)) in tested
                                else "dev" if sid in fold.dev else "train", extra=dict(item.extra)) for item in items]
    trained = {item.label for item in rows if item.split == "train"}
    left_out: dict[str, int] = {}
    for item in rows:
        if item.split == "test" and item.label not in trained:
            left_out[item.label] = left_out.get(item.label, 0) + 1
    for item in rows:
        if item.split == "test" and item.label not in trained:
            item.split = LEFT_OUT
    return rows, dict(sorted(left_out.items()))


def fold_items(items: Sequence[Item], fold: Fold, column: str | None, several: bool = False) -> list[Item]:
    """The manifest's items with their split set by the fold (the original split column is ignored)."""
    role = {**{s: "test" for s in fold.test}, **{s: "dev" for s in fold.dev}, **{s: "train" for s in fold.train}}
    out = []
    for item in items:
        speaker = speaker_id(item, "", several) if item.speaker else f"{column}={item.extra.get(column, '').strip()}"
        out.append(dataclasses.replace(item, split=role[speaker], extra=dict(item.extra)))
    return out
