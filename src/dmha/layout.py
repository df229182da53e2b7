"""The feature store's layout: one folder per (kind, encoder identity) under a root, and every entry's key.

    ROOT/speech/<sha16 of identity>/   a FeatureStore (store.py) of speech hidden states (L, T, D)
    ROOT/text/<sha16 of identity>/     a FeatureStore of text features (T, D)
    ROOT/asr/<sha16 of identity>/xx/   one <audio digest>.txt per transcript

Keys are content addresses: audio bytes + preprocessing for speech (augmented copies add their
settings' tag and copy number), transcript text for text. Extraction, transcription and
`dmha cache` all find their files here, so the layout is written once.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import torch

from . import paths
from .audio import WaveNorm
from .config import AugmentConfig, FeaturesConfig
from .speaker_norm import Moments
from .store import FeatureStore

KINDS = ("speech", "text", "asr")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_OPENED: dict[Path, FeatureStore] = {}  # one handle per store and process, so every ref sees new shards


class StoreRoot:
    """The root folder of the feature stores and the transcripts; one FeatureStore per (kind, identity),
    opened once per process."""

    def __init__(self, root: str | Path | None = None, shard_bytes: int = 256 * 2**20):
        self.root = Path(root) if root else paths.features_dir()
        self.shard_bytes = shard_bytes

    @classmethod
    def from_config(cls, cfg: FeaturesConfig) -> "StoreRoot":
        """The configured root (default under $DMHA_HOME)."""
        return cls(cfg.cache_dir or None, shard_bytes=int(cfg.shard_mb * 2**20))

    def folder(self, kind: str, identity: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown store kind {kind!r} (one of {', '.join(KINDS)})")
        return self.root / kind / sha(identity)[:16]

    def store(self, kind: str, identity: str) -> FeatureStore:
        """The store of one encoder (created on first use); `kind` is speech or text."""
        folder = self.folder(kind, identity).resolve()
        if folder not in _OPENED:
            _OPENED[folder] = FeatureStore(folder, identity, self.shard_bytes)
        return _OPENED[folder]

    def transcript_path(self, asr_identity: str, digest: str) -> Path:
        """Where one audio file's transcript by one ASR setting is kept (its folder is created)."""
        folder = self.folder("asr", asr_identity) / digest[:2]
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{digest}.txt"

    def folders(self) -> Iterator[tuple[str, Path]]:
        """(kind, folder) of every encoder folder under the root, sorted."""
        for kind in sorted(KINDS):
            base = self.root / kind
            if base.is_dir():
                yield from ((kind, p) for p in sorted(base.iterdir()) if p.is_dir())


@dataclass
class FeatureRef:
    """One utterance's entries: speech and text features (plus the keys of cached augmented copies)."""

    speech_store: FeatureStore
    speech_key: str
    text_store: FeatureStore
    text_key: str
    copies: tuple[str, ...] = ()
    speaker: Moments | None = None  # its speaker's frame moments, for feature_norm=speaker (speaker_norm.py)

    def speech(self, view: int = 0) -> torch.Tensor:
        """(L, T, D) fp16; view 0 is the original audio, 1..K its augmented copies."""
        return self.speech_store.get(self.copies[view - 1] if view else self.speech_key)

    def text(self) -> torch.Tensor:
        """(T, D) fp16."""
        return self.text_store.get(self.text_key)


def speech_key(digest: str, norm: WaveNorm) -> str:
    """Cache key of one audio file's speech features: its bytes plus the preprocessing applied."""
    return sha(f"{digest}|sr=16000|{norm.tag}")


def text_key(transcript: str | None) -> str:
    return sha(transcript or "")


def copy_key(digest: str, norm: WaveNorm, tag: str, copy: int) -> str:
    """Key of augmented copy `copy` (1..K) of one audio file, for the settings whose tag is `tag`."""
    return speech_key(digest, norm) + f"-aug{tag}-{copy}"


def augmentation_tag(config: AugmentConfig, seed: int) -> str:
    """Cache identity of a set of augmented copies: every augmentation setting plus the seed."""
    settings = asdict(replace(config, cached_copies=0))
    return hashlib.sha256(json.dumps([settings, seed], sort_keys=True).encode()).hexdigest()[:16]
