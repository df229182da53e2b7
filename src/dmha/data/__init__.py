"""Corpora as manifests: the schema, its checks, and importers for known layouts."""
from dmha.data.folders import prepare_folders
from dmha.data.manifest import (
    CorpusError,
    Item,
    ManifestError,
    add_durations,
    labels_of,
    read_manifest,
    require_splits,
    write_manifest,
)
from dmha.data.ravdess import prepare_ravdess

__all__ = [
    "CorpusError",
    "Item",
    "ManifestError",
    "add_durations",
    "labels_of",
    "prepare_folders",
    "prepare_ravdess",
    "read_manifest",
    "require_splits",
    "write_manifest",
]
