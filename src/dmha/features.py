"""Run the frozen encoders once per utterance and keep their outputs in the feature store.

Speech features are all hidden states (L, T, D) in fp16; text features the last layer (T, D).
Entries are content-addressed: audio bytes + preprocessing for speech, transcript text for text,
in one store per encoder identity (store.py), so a second run (or another model that shares an
encoder) reads them back instead of running the encoder again.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import paths
from .audio import AudioError, audio_duration, file_digest, load_audio
from .data.manifest import Item
from .encoders.base import SpeechEncoder, TextEncoder
from .parallel import Share
from .sampling import MAX_BATCH_FRAMES, LengthBucketSampler
from .store import FeatureStore, ShardWriter

log = logging.getLogger(__name__)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class WaveNorm:
    """Waveform standardisation: the training split's mean/std (paper §5.2), each utterance's own
    (`per_utterance`: needs no statistics, so one feature store serves every cv fold), or identity."""

    mean: float = 0.0
    std: float = 1.0
    per_utterance: bool = False

    def apply(self, wave: np.ndarray) -> np.ndarray:
        if self.per_utterance:
            wave = wave.astype(np.float64)
            return ((wave - wave.mean()) / max(float(wave.std()), 1e-8)).astype(np.float32) if wave.size else wave.astype(np.float32)
        return ((wave - self.mean) / self.std).astype(np.float32)

    @property
    def tag(self) -> str:
        return "norm=utterance" if self.per_utterance else f"norm={self.mean:.6g},{self.std:.6g}"


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


_OPEN: dict[Path, FeatureStore] = {}


class FeatureCache:
    """The cache root: one FeatureStore per (kind, encoder identity), opened once per process."""

    def __init__(self, root: str | Path | None = None, shard_bytes: int = 256 * 2**20):
        self.root = Path(root) if root else paths.features_dir()
        self.shard_bytes = shard_bytes

    def store(self, kind: str, identity: str) -> FeatureStore:
        """The store of one encoder (created on first use); `kind` is speech or text."""
        folder = (self.root / kind / _sha(identity)[:16]).resolve()
        if folder not in _OPEN:  # one handle per store and process, so every ref sees new shards
            _OPEN[folder] = FeatureStore(folder, identity, self.shard_bytes)
        return _OPEN[folder]


@dataclass
class FeatureRef:
    """One utterance's entries: speech and text features (plus the keys of cached augmented copies)."""

    speech_store: FeatureStore
    speech_key: str
    text_store: FeatureStore
    text_key: str
    copies: tuple[str, ...] = ()

    def speech(self, view: int = 0) -> torch.Tensor:
        """(L, T, D) fp16; view 0 is the original audio, 1..K its augmented copies."""
        return self.speech_store.get(self.copies[view - 1] if view else self.speech_key)

    def text(self) -> torch.Tensor:
        """(T, D) fp16."""
        return self.text_store.get(self.text_key)


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


def text_key(transcript: str | None) -> str:
    return _sha(transcript or "")


def extract_features(
    items: Sequence[Item],
    speech_encoder: SpeechEncoder,
    text_encoder: TextEncoder,
    cache: FeatureCache,
    norm: WaveNorm,
    batch_size: int = 8,
    progress: bool = True,
    share: Share | None = None,
) -> ExtractionResult:
    """Make sure every item's features are in the store; encoders run only on what is missing.

    With several processes (`share`, default: from torchrun/SLURM variables), each encodes every
    world-th missing utterance, then waits for the others' shards (taking over what a stalled or
    dead process left undone), so all end with the same complete store.
    """
    share = share or Share.from_env()
    result = ExtractionResult(refs=[None] * len(items))
    speech_store = cache.store("speech", speech_encoder.info.identity)
    text_store = cache.store("text", text_encoder.info.identity)
    speech_store.refresh(), text_store.refresh()  # other processes may have added shards since it was opened
    keys: dict[int, str] = {}
    for i, item in enumerate(items):
        try:
            keys[i] = speech_key(file_digest(item.path), norm)
        except AudioError as err:
            result.errors.append((str(item.path), err.reason))
    jobs = _speech_jobs(items, keys, speech_store, result.errors)
    result.speech_computed = _run_shared(jobs, speech_store, share, progress, f"speech features ({speech_encoder.info.name})",
                                         lambda batch, writer, errors: _encode_speech(batch, speech_encoder, norm, writer, errors),
                                         batch_size, result.errors)
    _report_copies(items, keys, result.errors)
    bad = {path for path, _ in result.errors}
    texts = {text_key(items[i].transcript): items[i].transcript or "" for i in keys if str(items[i].path) not in bad}
    text_jobs = [_Job(key, text, 0.0) for key, text in texts.items() if key not in text_store]
    result.text_computed = _run_shared(text_jobs, text_store, share, progress, f"text features ({text_encoder.info.name})",
                                       lambda batch, writer, errors: _encode_text(batch, text_encoder, writer, errors),
                                       batch_size, result.errors)
    for i, key in keys.items():
        if str(items[i].path) not in bad and key in speech_store:
            result.refs[i] = FeatureRef(speech_store, key, text_store, text_key(items[i].transcript))
    return result


def count_missing(items: Sequence[Item], speech_identity: str, text_identity: str, cache: FeatureCache,
                  norm: WaveNorm) -> int:
    """How many readable items lack speech or text features (e.g. to skip starting worker processes)."""
    speech, text = cache.store("speech", speech_identity), cache.store("text", text_identity)
    missing = 0
    for item in items:
        try:
            key = speech_key(file_digest(item.path), norm)
        except AudioError:
            continue
        missing += key not in speech or text_key(item.transcript) not in text
    return missing


def _report_copies(items: Sequence[Item], keys: dict[int, str], errors: list) -> None:
    """Identical audio is encoded once, so a failure was seen under one path: report every copy."""
    reason = dict(errors)
    failed = {keys[i]: reason[str(items[i].path)] for i in keys if str(items[i].path) in reason}
    for i, key in keys.items():
        if key in failed and str(items[i].path) not in reason:
            errors.append((str(items[i].path), failed[key]))
            reason[str(items[i].path)] = failed[key]


@dataclass(frozen=True)
class _Job:
    """One entry to compute: its key, what to compute it from (audio path or text), and a cost."""

    key: str
    source: object
    cost: float


def _speech_jobs(items, keys, store: FeatureStore, errors) -> list[_Job]:
    """Missing speech entries (identical audio once), cheapest first so batches pad little."""
    jobs: dict[str, _Job] = {}
    for i, key in keys.items():
        if key in store or key in jobs:
            continue
        try:
            jobs[key] = _Job(key, items[i].path, audio_duration(items[i].path))
        except AudioError as err:
            errors.append((str(items[i].path), err.reason))
    return sorted(jobs.values(), key=lambda job: job.cost)


def _run_shared(jobs: list[_Job], store: FeatureStore, share: Share, progress: bool, desc: str, encode,
                batch_size: int, errors: list) -> int:
    """Encode this process's part of `jobs` in batches into new shards; then wait for the other parts."""
    mine = [job for job in jobs if share.owns(job.key)]
    done = 0
    with store.writer() as writer, tqdm(total=len(mine), desc=desc, disable=not progress or not mine) as bar:
        for start in range(0, len(mine), batch_size):
            batch = mine[start:start + batch_size]
            failed = len(errors)
            done += encode(batch, writer, errors)
            if share.world > 1:  # tell the other processes not to wait for what failed here
                for path, reason in errors[failed:]:
                    store.mark_failed(next(j.key for j in batch if str(j.source) == path), reason)
            bar.update(len(batch))
    if share.world == 1:
        return done
    left = share.wait_for(store, [job.key for job in jobs])
    reported = {path for path, _ in errors}
    for job in jobs:
        reason = store.failure(job.key) if job.key in left else None
        if reason is not None:
            left.remove(job.key)
            if str(job.source) not in reported:
                errors.append((str(job.source), reason))
    if left:  # another process stalled or died: do its part here
        log.warning("%s: %d entries not written by the other processes; computing them here", desc, len(left))
        wanted = set(left)
        done += _run_shared([j for j in jobs if j.key in wanted], store, Share(), progress, desc, encode,
                            batch_size, errors)
    return done


def _encode_speech(batch: list[_Job], encoder: SpeechEncoder, norm: WaveNorm, writer: ShardWriter, errors) -> int:
    waves, kept = [], []
    for job in batch:
        try:
            waves.append(norm.apply(load_audio(job.source)))
            kept.append(job)
        except AudioError as err:
            errors.append((str(job.source), err.reason))
    for job, hidden in zip(kept, encoder.encode(waves) if waves else []):
        writer.put(job.key, hidden)  # (L, T, D)
    return len(kept)


def _encode_text(batch: list[_Job], encoder: TextEncoder, writer: ShardWriter, errors) -> int:
    for job, hidden in zip(batch, encoder.encode([job.source for job in batch])):
        writer.put(job.key, hidden)  # (T, D)
    return len(batch)


def crop_or_repeat(hidden: torch.Tensor, frames: int, offset: int, repeat: bool = True) -> torch.Tensor:
    """(L, T, D) → (L, frames, D): a window at `offset`; a shorter utterance is repeated to fill it
    (the paper's repetition padding) or, with repeat=False, kept whole (L, T, D)."""
    t = hidden.shape[1]
    if t < frames and not repeat:
        return hidden
    if t < frames:
        hidden = hidden.repeat(1, -(-frames // t), 1)  # repetition padding: (L, ≥frames, D)
        offset = 0
    return hidden[:, offset:offset + frames]


class FeatureDataset(Dataset):
    """Stored features of labelled items; random fixed-length crops when crop_frames > 0 (training).

    Items are views on the stores' memory maps: an item costs a dict lookup and a crop, and the
    operating system's page cache keeps the shards of a corpus that fits in RAM there after epoch 1.
    """

    def __init__(self, refs: Sequence[FeatureRef], targets: Sequence[int], crop_frames: int = 0,
                 sample_copies: bool = False, repeat_short: bool = True):
        self.refs, self.targets, self.crop_frames = list(refs), list(targets), crop_frames
        self.repeat_short = repeat_short  # crops of clips shorter than the crop: repeated, or kept whole
        self.sample_copies = sample_copies  # training: draw the original or one of its augmented copies

    def __len__(self) -> int:
        return len(self.refs)

    def frames(self, index: int) -> int:
        """Speech frames of an item as the model will see it (for length bucketing)."""
        t = self.refs[index].speech_store.location(self.refs[index].speech_key).shape[1]
        if not self.crop_frames:
            return t
        return self.crop_frames if self.repeat_short else min(self.crop_frames, t)

    def __getitem__(self, index: int) -> dict:
        ref = self.refs[index]
        views = 1 + (len(ref.copies) if self.sample_copies else 0)
        speech = ref.speech(int(torch.randint(0, views, ()).item()) if views > 1 else 0)  # (L, T1, D)
        if self.crop_frames:
            slack = max(speech.shape[1] - self.crop_frames, 0)
            offset = int(torch.randint(0, slack + 1, ()).item())
            speech = crop_or_repeat(speech, self.crop_frames, offset, self.repeat_short)
        return {"speech": speech, "text": ref.text(), "target": self.targets[index]}


def feature_loader(refs: Sequence[FeatureRef], targets: Sequence[int] | None = None, batch_size: int = 32,
                   crop_frames: int = 0, shuffle: bool = False, seed: int = 0, pool: int = 50,
                   num_workers: int = 0, distributed: bool = False, repeat_short: bool = True,
                   max_frames: int = MAX_BATCH_FRAMES) -> DataLoader:
    """Length-bucketed batches of stored features (see sampling.py), each at most `max_frames` padded
    speech frames; `.batch_sampler.order()` maps the batches' rows back to `refs` when shuffle is off."""
    dataset = FeatureDataset(refs, targets if targets is not None else [0] * len(refs), crop_frames,
                             sample_copies=shuffle, repeat_short=repeat_short)
    sampler = LengthBucketSampler([dataset.frames(i) for i in range(len(dataset))], batch_size, shuffle, seed,
                                  pool, distributed, max_frames)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                      persistent_workers=num_workers > 0)


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
        for kind, tensor, frame_axis in (("speech", ref.speech(), 1), ("text", ref.text(), 0)):
            x = tensor.double()  # speech (L, T, D), text (T, D)
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
