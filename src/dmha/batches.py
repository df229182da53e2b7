"""Training and inference batches: datasets over the store or over waveforms, crops, collate, and
the one length-bucketing rule every batch in dmha follows.

Length buckets: items of similar length share a batch, so little compute goes to padding.
Training draws random pools of `pool` batches, sorts each pool by length, cuts it into batches and
shuffles the batch order: batches stay random from epoch to epoch, but their members have similar
lengths. With equal lengths (fixed training crops) this is exactly random batching. Under DDP each
rank takes every world-th training batch (padded by repeating batches so all ranks take the same
number of steps) and every world-th item of the sorted evaluation order (each scored once).

Every batch also keeps within a budget of padded length (`max_length`: batch size × its longest
item): a corpus with a few long recordings then gets small batches for those, so a batch's memory
is bounded by the budget (or by its one item, when that item alone is longer), never by
batch_size × the longest recording. Encoders, evaluation and `predict` cut their batches with the
same `length_sorted_batches` (dmha.batching, which the encoders import too).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from .audio import WaveNorm, load_audio
from .batching import MAX_BATCH_FRAMES, cut_batches, length_sorted_batches
from .layout import FeatureRef
from .speaker_norm import collate_moments, draw_moments

if TYPE_CHECKING:
    from .augment import Augmenter
    from .data.manifest import Item

def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of indices grouped by `lengths` (a batch_sampler for DataLoader).

    shuffle=False: longest first, deterministic (evaluation). shuffle=True: bucketed random batches,
    reshuffled each epoch from `seed` and the epoch number (Lightning calls `set_epoch`).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = False, seed: int = 0,
                 pool: int = 50, distributed: bool = False, max_length: float = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths, self.batch_size, self.shuffle, self.seed, self.pool = list(lengths), batch_size, shuffle, seed, pool
        self.distributed = distributed  # split batches across DDP ranks (inside Lightning's fit only)
        self.max_length = max_length  # padded length per batch (see cut_batches); 0 = no budget
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            return length_sorted_batches(self.lengths, self.batch_size, self.max_length)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=generator).tolist()
        span = self.batch_size * self.pool
        batches = []
        for start in range(0, n, span):
            pool = sorted(order[start:start + span], key=lambda i: self.lengths[i])  # stable: ties stay random
            batches += self._cut(pool)
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def _cut(self, order: Sequence[int]) -> list[list[int]]:
        return cut_batches(order, self.lengths, self.batch_size, self.max_length)

    def _mine(self) -> list[list[int]]:
        rank, world = _rank_world() if self.distributed else (0, 1)
        if world > 1 and not self.shuffle:  # evaluation: deal sorted items out, so every rank gets some
            order = sorted(range(len(self.lengths)), key=lambda i: -self.lengths[i])
            if 0 < len(order) < world:
                order = (order * world)[:world]  # fewer items than ranks: a few are scored twice
            return self._cut(order[rank::world])
        batches = self._all_batches()
        if world == 1 or not batches:
            return batches
        per_rank = -(-len(batches) // world)  # every rank must take the same number of optimiser steps
        return (batches * world)[:per_rank * world][rank::world]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())

    def order(self) -> list[int]:
        """Every index in the order this rank's batches yield them (to undo the sorting afterwards)."""
        return [i for batch in self._mine() for i in batch]


def in_input_order(rows: Sequence, order: Sequence[int]) -> list:
    """Undo a sampler's order: rows[k] belongs to item order[k]."""
    out = [None] * len(order)
    for row, index in zip(rows, order):
        out[index] = row
    return out


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
                 sample_copies: bool = False, repeat_short: bool = True, extras: Sequence[dict] | None = None):
        self.refs, self.targets, self.crop_frames = list(refs), list(targets), crop_frames
        self.extras = list(extras) if extras is not None else [{}] * len(self.refs)  # soft targets, attributes
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
        return {"speech": speech, "text": ref.text(), "target": self.targets[index], "speaker": draw_moments(ref),
                **self.extras[index]}


def feature_loader(refs: Sequence[FeatureRef], targets: Sequence[int] | None = None, batch_size: int = 32,
                   crop_frames: int = 0, shuffle: bool = False, seed: int = 0, pool: int = 50,
                   num_workers: int = 0, distributed: bool = False, repeat_short: bool = True,
                   max_frames: int = MAX_BATCH_FRAMES, extras: Sequence[dict] | None = None) -> DataLoader:
    """Length-bucketed batches of stored features (see sampling.py), each at most `max_frames` padded
    speech frames; `.batch_sampler.order()` maps the batches' rows back to `refs` when shuffle is off.
    `extras`: per item, arrays its batch carries besides the label (dmha.targets: soft, attributes)."""
    dataset = FeatureDataset(refs, targets if targets is not None else [0] * len(refs), crop_frames,
                             sample_copies=shuffle, repeat_short=repeat_short, extras=extras)
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
    return {**out, **_targets(batch), **collate_moments([b.get("speaker") for b in batch])}


def _targets(batch: Sequence[dict]) -> dict:
    """Soft targets (B, K), attributes (B, A) and the classes each item's corpus offered (B, K) when the
    items carry them (dmha.targets, dmha.corpora)."""
    return {key: torch.from_numpy(np.stack([b[key] for b in batch])) for key in ("soft", "attributes", "allowed")
            if key in batch[0]}


def crop_wave(wave: np.ndarray, samples: int, rng: np.random.Generator, repeat: bool = True) -> np.ndarray:
    """A random window of `samples`; a shorter waveform is repeated to fill it (repetition padding)
    or, with repeat=False, kept whole."""
    if samples <= 0 or (wave.size < samples and not repeat):
        return wave
    if wave.size < samples:
        wave = np.tile(wave, -(-samples // max(wave.size, 1)))
        return wave[:samples]
    start = int(rng.integers(0, wave.size - samples + 1))
    return wave[start:start + samples]


class WaveDataset(Dataset):
    """Training items as waveforms: random crop → augmentation → train-set normalisation."""

    def __init__(self, items: Sequence[Item], targets: Sequence[int], refs: Sequence[FeatureRef], norm: WaveNorm,
                 crop_samples: int, augmenter: Augmenter | None, repeat_short: bool = True,
                 extras: Sequence[dict] | None = None):
        self.items, self.targets, self.refs = list(items), list(targets), list(refs)  # refs: text features
        self.extras = list(extras) if extras is not None else [{}] * len(self.items)
        self.repeat_short = repeat_short
        self.norm, self.crop_samples, self.augmenter = norm, crop_samples, augmenter

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        # A fresh generator per draw, seeded from torch's RNG, which Lightning seeds (workers too).
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        wave = crop_wave(load_audio(self.items[index].path), self.crop_samples, rng, self.repeat_short)
        if self.augmenter is not None:
            wave = self.augmenter(wave, rng)
        return {"wave": self.norm.apply(wave), "text": self.refs[index].text(),
                "target": self.targets[index], "speaker": draw_moments(self.refs[index]), **self.extras[index]}


def collate_waves(batch: Sequence[dict]) -> dict:
    """Keep waveforms as a list (the encoder pads them itself); pad text tokens and build their mask."""
    text, text_mask = pad_time([b["text"] for b in batch], axis=0)  # (B, T2, Dt), (B, T2)
    return {"waves": [b["wave"] for b in batch], "text": text, "text_mask": text_mask,
            "target": torch.tensor([b["target"] for b in batch], dtype=torch.long), **_targets(batch),
            **collate_moments([b.get("speaker") for b in batch])}


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
