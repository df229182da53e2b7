"""Several corpora in one training: their names, one label vocabulary, and what each corpus offers.

Each corpus keeps its own label names; when a training or evaluation reads more than one corpus,
every label is mapped to one canonical emotion name (RAVDESS says `fearful`, CREMA-D `fear`: one
class) and the model stores, per corpus, the labels it offered its speakers and how its names map.
A clip's loss covers only its own corpus's labels (a CREMA-D clip never teaches that `calm` is wrong:
its actors were never asked for calm), per-corpus figures score each corpus on its own labels, and
speakers are told apart by corpus (speaker `1` of one corpus is not speaker `1` of another).

A corpus is named by the manifest's `corpus` column (the importers write it), else by the manifest's
file name; one manifest with one corpus is a single-corpus training and its labels stay as they are.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .data.manifest import Item, ManifestError, read_manifest

# Other corpora's names for the canonical emotions (lower case). Canonical names are the ones most
# SER corpora use; a label not listed here is its own canonical name.
SYNONYMS = {
    "fearful": "fear", "afraid": "fear", "scared": "fear",
    "surprised": "surprise",
    "anger": "angry", "mad": "angry",
    "happiness": "happy", "joy": "happy",
    "sadness": "sad",
    "disgusted": "disgust",
    "neu": "neutral",
    "contemptuous": "contempt",
    "boredom": "bored",
}


def canonical(label: str) -> str:
    """The canonical emotion name of a corpus's label (case and synonyms folded)."""
    name = label.strip().lower()
    return SYNONYMS.get(name, name)


def corpus_of(item: Item) -> str | None:
    """The corpus an item belongs to (the manifest's `corpus` column), or None in a single corpus."""
    return item.extra.get("corpus") or None


@dataclass
class Corpora:
    """What the model records about its training corpora: for each, the labels it offered (canonical
    names, in the model's order) and its own names for them. Empty for a single-corpus model."""

    labels: dict[str, list[str]] = field(default_factory=dict)  # corpus → its labels (the model's names)
    names: dict[str, dict[str, str]] = field(default_factory=dict)  # corpus → {its label: canonical}

    @property
    def several(self) -> bool:
        return len(self.labels) > 1

    def to_dict(self) -> dict:
        return {"labels": self.labels, "names": self.names}

    @classmethod
    def from_dict(cls, payload: dict | None) -> "Corpora":
        payload = payload or {}
        return cls(dict(payload.get("labels", {})), dict(payload.get("names", {})))

    def offered(self, item: Item, labels: Sequence[str]) -> list[bool] | None:
        """Which of the model's labels the item's corpus offered (None: all, as in a single corpus)."""
        corpus = corpus_of(item)
        if not self.several or corpus not in self.labels:
            return None
        own = {canonical(label) for label in self.labels[corpus]}
        return [canonical(label) in own for label in labels]


@dataclass
class LabelScope:
    """How one evaluation maps a manifest's labels onto a model's: which of the model's classes take part
    (the prediction is the most probable of them), each manifest label's class, and what was left out."""

    allowed: list[bool]  # over the model's labels
    index: dict[str, int]  # a manifest label (its own name) → the model's class index
    notes: list[str] = field(default_factory=list)

    @property
    def restricted(self) -> bool:
        return not all(self.allowed)


def label_scope(model_labels: Sequence[str], manifest_labels: Sequence[str],
                requested: Sequence[str] | None = None) -> LabelScope:
    """The labels a model is scored on against a manifest: those asked for (the model's names or their
    canonical ones), else those both know by canonical name. Labels of the manifest the model does not
    know are left out, the model's labels the manifest lacks are not predicted; `notes` says which."""
    by_canonical = {canonical(label): k for k, label in enumerate(model_labels)}
    ours = {canonical(label) for label in manifest_labels}
    if requested:
        unknown = [r for r in requested if canonical(r) not in by_canonical]
        if unknown:
            raise ManifestError(f"--labels {', '.join(unknown)}: not labels of the model ({', '.join(model_labels)})")
        chosen = {canonical(r) for r in requested}
    else:
        chosen = set(by_canonical) & ours
    if not chosen & ours:
        raise ManifestError(f"the manifest's labels ({', '.join(sorted(manifest_labels))}) share none with the "
                            f"model's ({', '.join(model_labels)})")
    notes = []
    left_out = sorted(label for label in manifest_labels if canonical(label) not in chosen)
    if left_out:
        notes.append(f"items labelled {', '.join(left_out)} are left out: "
                     + ("not among --labels" if requested else "the model does not know these labels"))
    unused = [label for label in model_labels if canonical(label) not in chosen]
    if unused:
        notes.append(f"the model's labels {', '.join(unused)} are not predicted: scored on the "
                     f"{len(chosen)} labels {'asked for' if requested else 'the model and the manifest share'}")
    index = {label: by_canonical[canonical(label)] for label in manifest_labels if canonical(label) in chosen}
    return LabelScope([canonical(label) in chosen for label in model_labels], index, notes)


def read_corpora(manifests: Sequence[str | os.PathLike[str]], *, require_label: bool = True,
                 check_files: bool = True) -> tuple[list[Item], Corpora]:
    """Items of one or several manifests. With more than one corpus among them, every item carries its
    corpus name (extra["corpus"]), its label is the canonical name (the corpus's own in
    extra["corpus_label"]), and the returned Corpora says what each corpus offered."""
    manifests = [Path(m) for m in manifests]
    if not manifests:
        raise ManifestError("no manifest given")
    items: list[Item] = []
    seen: dict[str, Path] = {}
    for manifest in manifests:
        rows = read_manifest(manifest, require_label=require_label, check_files=check_files)
        name = manifest.stem
        for item in rows:
            if len(manifests) > 1 and not corpus_of(item):
                item.extra["corpus"] = name  # several manifests: each is a corpus, named by its file
        for corpus in {corpus_of(i) for i in rows} - {None}:
            if corpus in seen and seen[corpus] != manifest:
                raise ManifestError(f"manifests {seen[corpus]} and {manifest} both hold corpus {corpus!r}; "
                                    "give each corpus its own name in a `corpus` column")
            seen[corpus] = manifest
        items += rows
    _check_distinct_paths(items)
    corpora = _corpora(items)
    if len({corpus_of(i) for i in items if i.label is not None and i.split in ("train", "dev", "test")}) > 1:
        for item in items:
            if item.label is not None:
                item.extra["corpus_label"] = item.label
                item.label = canonical(item.label)
    return items, corpora


def _corpora(items: Sequence[Item]) -> Corpora:
    """Each corpus's labels (canonical when there are several corpora) and its names for them. A corpus
    with no training item (the one leave-one-corpus-out holds out) offered the model nothing: it is not
    recorded, so its clips are predicted among all the model's labels, as a user's would be."""
    by_corpus: dict[str, set[str]] = {}
    for item in items:
        if item.label is not None and item.split in ("train", "dev", "test"):
            by_corpus.setdefault(corpus_of(item) or "", set()).add(item.label)
    trained = {corpus_of(i) or "" for i in items if i.label is not None and i.split == "train"}
    if trained:
        by_corpus = {c: own for c, own in by_corpus.items() if c in trained}
    if len(by_corpus) < 2:
        return Corpora()
    names = {c: {label: canonical(label) for label in sorted(own)} for c, own in by_corpus.items()}
    return Corpora({c: sorted(set(m.values())) for c, m in names.items()}, names)


def _check_distinct_paths(items: Sequence[Item]) -> None:
    seen: set[Path] = set()
    for item in items:
        if item.path in seen:
            raise ManifestError(f"{item.path} is listed by more than one manifest")
        seen.add(item.path)
