"""Run the frozen encoders once per utterance and keep their outputs on disk.

Speech features are all hidden states (L, T, D) in fp16; text features the last layer (T, D).
Entries are content-addressed: audio bytes + preprocessing for speech, transcript text for text,
each under a folder named after the encoder's identity, so a second run (or another model that
shares an encoder) reads them back instead of running the encoder again.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import paths
from .fileio import atomic_path, atomic_write_text
from .audio import AudioError, audio_duration, file_digest, load_audio
from .data.manifest import Item
from .encoders.base import SpeechEncoder, TextEncoder

log = logging.getLogger(__name__)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class WaveNorm:
    """Waveform mean/std of the training split (paper §5.2); identity when disabled."""

    mean: float = 0.0
    std: float = 1.0

    def apply(self, wave: np.ndarray) -> np.ndarray:
        return ((wave - self.mean) / self.std).astype(np.float32)

    @property
    def tag(self) -> str:
        return f"norm={self.mean:.6g},{self.std:.6g}"


def compute_wave_norm(items: Sequence[Item], progress: bool = True) -> WaveNorm:
    """Mean/std over every sample of the given items (streamed: sums in float64)."""
    total, total_sq, count = 0.0, 0.0, 0
    for item in tqdm(items, desc="waveform stats", disable=not progress, leave=False):
        try:
            wave = load_audio(item.path).astype(np.float64)
        except AudioError as err:
            log.warning("skipping in normalisation stats: %s", err)
            continue
        total, total_sq, count = total + wave.sum(), total_sq + (wave**2).sum(), count + wave.size
    if count == 0:
        raise ValueError("no readable training audio to compute normalisation statistics")
    mean = total / count
    std = max(float(np.sqrt(max(total_sq / count - mean**2, 0.0))), 1e-8)
    return WaveNorm(float(mean), std)


class FeatureCache:
    """Encoder outputs on disk as safetensors, one file per utterance, written atomically."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else paths.features_dir()

    def _dir(self, kind: str, identity: str) -> Path:
        folder = self.root / kind / _sha(identity)[:16]
        if not (folder / "encoder.json").exists():
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / "encoder.json", json.dumps({"identity": identity}))
        return folder

    def path(self, kind: str, identity: str, key: str) -> Path:
        """Where the entry for `key` under this encoder lives (may not exist yet)."""
        return self._dir(kind, identity) / key[:2] / f"{key}.safetensors"

    @staticmethod
    def put(path: Path, hidden: torch.Tensor) -> None:
        """Store a tensor in fp16 via temp file + rename, so readers never see half a file."""
        with atomic_path(path) as tmp:
            save_file({"hidden": hidden.detach().to(torch.float16).contiguous()}, str(tmp))

    @staticmethod
    def get(path: Path) -> torch.Tensor:
        return load_file(str(path))["hidden"]


@dataclass
class FeatureRef:
    """Where one utterance's cached speech and text features are (plus any cached augmented copies)."""

    speech: Path
    text: Path
    copies: tuple[Path, ...] = ()


@dataclass
class ExtractionResult:
    """Per-item refs (None for a skipped item), the skipped items' errors, and what was computed."""

    refs: list[FeatureRef | None]
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    speech_computed: int = 0
    text_computed: int = 0


def speech_key(digest: str, norm: WaveNorm) -> str:
    """Cache key of one audio file's speech features: its bytes plus the preprocessing applied."""
    return _sha(f"{digest}|sr=16000|{norm.tag}")


def extract_features(
    items: Sequence[Item],
    speech_encoder: SpeechEncoder,
    text_encoder: TextEncoder,
    cache: FeatureCache,
    norm: WaveNorm,
    batch_size: int = 8,
    progress: bool = True,
) -> ExtractionResult:
    """Make sure every item's features are cached; encoders run only on what is missing."""
    result = ExtractionResult(refs=[None] * len(items))
    speech_paths: dict[int, Path] = {}
    for i, item in enumerate(items):
        try:
            key = speech_key(file_digest(item.path), norm)
        except AudioError as err:
            result.errors.append((str(item.path), err.reason))
            continue
        speech_paths[i] = cache.path("speech", speech_encoder.info.identity, key)
    missing = [i for i, p in speech_paths.items() if not p.exists()]
    result.speech_computed = _encode_speech(items, missing, speech_paths, speech_encoder, norm, batch_size,
                                            result.errors, progress)
    text_paths = {i: cache.path("text", text_encoder.info.identity, _sha(items[i].transcript or ""))
                  for i in speech_paths}
    result.text_computed = _encode_text(items, text_paths, text_encoder, batch_size, progress)
    bad = {path for path, _ in result.errors}
    for i, speech_path in speech_paths.items():
        if str(items[i].path) not in bad and speech_path.exists():
            result.refs[i] = FeatureRef(speech_path, text_paths[i])
    return result


def _encode_speech(items, missing, speech_paths, encoder, norm, batch_size, errors, progress) -> int:
    """Encode the missing items in length-sorted batches (less padding), caching each output."""
    durations = {}
    for i in missing:
        try:
            durations[i] = audio_duration(items[i].path)
        except AudioError as err:
            errors.append((str(items[i].path), err.reason))
    order = sorted(durations, key=durations.get)
    done = 0
    with tqdm(total=len(order), desc=f"speech features ({encoder.info.name})", disable=not progress or not order) as bar:
        for start in range(0, len(order), batch_size):
            batch, waves = [], []
            for i in order[start:start + batch_size]:
                try:
                    waves.append(norm.apply(load_audio(items[i].path)))
                    batch.append(i)
                except AudioError as err:
                    errors.append((str(items[i].path), err.reason))
            for i, hidden in zip(batch, encoder.encode(waves) if waves else []):
                FeatureCache.put(speech_paths[i], hidden)  # (L, T, D)
                done += 1
            bar.update(len(order[start:start + batch_size]))
    return done


def _encode_text(items, text_paths, encoder, batch_size, progress) -> int:
    """Encode each distinct missing transcript once."""
    todo: dict[Path, str] = {}
    for i, path in text_paths.items():
        if not path.exists():
            todo.setdefault(path, items[i].transcript or "")
    pending = list(todo.items())
    for start in tqdm(range(0, len(pending), batch_size), desc=f"text features ({encoder.info.name})",
                      disable=not progress or not pending):
        chunk = pending[start:start + batch_size]
        for (path, _), hidden in zip(chunk, encoder.encode([text for _, text in chunk])):
            FeatureCache.put(path, hidden)  # (T, D)
    return len(pending)


def crop_or_repeat(hidden: torch.Tensor, frames: int, offset: int) -> torch.Tensor:
    """(L, T, D) → (L, frames, D): a window at `offset`, repeating the utterance when it is shorter."""
    t = hidden.shape[1]
    if t < frames:
        hidden = hidden.repeat(1, -(-frames // t), 1)  # repetition padding: (L, ≥frames, D)
        offset = 0
    return hidden[:, offset:offset + frames]


class FeatureDataset(Dataset):
    """Cached features of labelled items; random fixed-length crops when crop_frames > 0 (training).

    Up to `memory_bytes` of features stay in RAM after their first read, so later epochs of a small
    corpus skip the disk and the safetensors parsing altogether.
    """

    def __init__(self, refs: Sequence[FeatureRef], targets: Sequence[int], crop_frames: int = 0,
                 memory_bytes: int = 0, sample_copies: bool = False):
        self.refs, self.targets, self.crop_frames = list(refs), list(targets), crop_frames
        self.sample_copies = sample_copies  # training: draw the original or one of its augmented copies
        self.memory_bytes, self._held, self._memory = memory_bytes, 0, {}

    def __len__(self) -> int:
        return len(self.refs)

    def _load(self, path: Path) -> torch.Tensor:
        if path in self._memory:
            return self._memory[path]
        tensor = FeatureCache.get(path)
        size = tensor.numel() * tensor.element_size()
        if self._held + size <= self.memory_bytes:
            self._memory[path] = tensor
            self._held += size
        return tensor

    def __getitem__(self, index: int) -> dict:
        ref = self.refs[index]
        views = (ref.speech, *ref.copies) if self.sample_copies else (ref.speech,)
        speech = self._load(views[int(torch.randint(0, len(views), ()).item())] if len(views) > 1 else views[0])  # (L, T1, D)
        if self.crop_frames:
            slack = max(speech.shape[1] - self.crop_frames, 0)
            offset = int(torch.randint(0, slack + 1, ()).item())
            speech = crop_or_repeat(speech, self.crop_frames, offset)
        return {"speech": speech, "text": self._load(self.refs[index].text), "target": self.targets[index]}


def pad_time(seqs: Sequence[torch.Tensor], axis: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack float tensors that differ only along time `axis`, zero-padded: (B, ...) and a mask (B, T)."""
    t = max(s.shape[axis] for s in seqs)
    shape = list(seqs[0].shape)
    shape[axis] = t
    out = torch.zeros(len(seqs), *shape, device=device)  # e.g. speech (B, L, T, D), text (B, T, D)
    mask = torch.zeros(len(seqs), t, dtype=torch.bool, device=device)  # (B, T)
    for i, s in enumerate(seqs):
        out[i].narrow(axis, 0, s.shape[axis]).copy_(s)
        mask[i, : s.shape[axis]] = True
    return out, mask


def collate(batch: Sequence[dict]) -> dict:
    """Pad speech frames and text tokens to the longest in the batch and return their masks."""
    speech, speech_mask = pad_time([b["speech"] for b in batch], axis=1)  # (B, L, T1, Ds), (B, T1)
    text, text_mask = pad_time([b["text"] for b in batch], axis=0)  # (B, T2, Dt), (B, T2)
    out = {"speech": speech, "speech_mask": speech_mask, "text": text, "text_mask": text_mask}
    if "target" in batch[0]:
        out["target"] = torch.tensor([b["target"] for b in batch], dtype=torch.long)
    return out


def feature_stats(refs: Sequence[FeatureRef], progress: bool = True) -> dict[str, torch.Tensor]:
    """Per layer/dimension mean and std over all frames (speech) and tokens (text) of cached features."""
    sums: dict[str, list] = {}
    for ref in tqdm(refs, desc="feature statistics", disable=not progress, leave=False):
        for kind, path, frame_axis in (("speech", ref.speech, 1), ("text", ref.text, 0)):
            x = FeatureCache.get(path).double()  # speech (L, T, D), text (T, D)
            acc = sums.setdefault(kind, [0.0, 0.0, 0])
            acc[0] = acc[0] + x.sum(frame_axis)
            acc[1] = acc[1] + (x**2).sum(frame_axis)
            acc[2] += x.shape[frame_axis]
    stats = {}
    for kind, (total, total_sq, count) in sums.items():
        mean = total / count
        std = (total_sq / count - mean**2).clamp(min=0).sqrt().clamp(min=1e-5)
        stats[f"{kind}_mean"], stats[f"{kind}_std"] = mean.float(), std.float()
    return stats
