"""Training on augmented audio (paper §5.2): the frozen speech encoder must see each augmented waveform.

Two ways, selected by `features.mode` and `aug.cached_copies`:
- online: training batches carry waveforms (cropped, augmented, normalised) and the training step
  runs the frozen speech encoder on them, exactly as the paper; text features still come from the
  cache (the transcript does not change with augmentation);
- cached copies: K augmented copies of each training utterance are encoded once and cached; each
  epoch draws one of the original + K copies. Much cheaper, but only K fixed views per utterance.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import asdict, replace
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .audio import AudioError, file_digest, load_audio
from .augment import Augmenter
from .config import AugmentConfig
from .data.manifest import Item
from .encoders.base import SpeechEncoder
from .features import FeatureCache, FeatureRef, WaveNorm, pad_time, speech_key

log = logging.getLogger(__name__)


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


def babble_pool(items: Sequence[Item], count: int = 32, seed: int = 0) -> list[np.ndarray]:
    """A few training utterances to mix into babble noise when no noise corpus is given."""
    rng = np.random.default_rng(seed)
    pool = []
    for i in rng.permutation(len(items))[:count]:
        try:
            pool.append(load_audio(items[i].path))
        except AudioError as err:
            log.warning("not used for babble: %s", err)
    return pool


class WaveDataset(Dataset):
    """Training items as waveforms: random crop → augmentation → train-set normalisation."""

    def __init__(self, items: Sequence[Item], targets: Sequence[int], refs: Sequence[FeatureRef], norm: WaveNorm,
                 crop_samples: int, augmenter: Augmenter | None, repeat_short: bool = True):
        self.items, self.targets, self.refs = list(items), list(targets), list(refs)  # refs: text features
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
                "target": self.targets[index]}


def collate_waves(batch: Sequence[dict]) -> dict:
    """Keep waveforms as a list (the encoder pads them itself); pad text tokens and build their mask."""
    text, text_mask = pad_time([b["text"] for b in batch], axis=0)  # (B, T2, Dt), (B, T2)
    return {"waves": [b["wave"] for b in batch], "text": text, "text_mask": text_mask,
            "target": torch.tensor([b["target"] for b in batch], dtype=torch.long)}


@torch.no_grad()
def encode_waves(encoder: SpeechEncoder, waves: Sequence[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen encoder on a batch of waveforms → padded hidden states (B, L, T, D) and frame mask (B, T)."""
    return pad_time(encoder.encode(list(waves)), axis=1, device=device)  # (B, L, T, D), (B, T)


def augmentation_tag(config: AugmentConfig, seed: int) -> str:
    """Cache identity of a set of augmented copies: every augmentation setting plus the seed."""
    settings = asdict(replace(config, cached_copies=0))
    return hashlib.sha256(json.dumps([settings, seed], sort_keys=True).encode()).hexdigest()[:16]


def cache_augmented_copies(items: Sequence[Item], refs: Sequence[FeatureRef], encoder: SpeechEncoder,
                           cache: FeatureCache, norm: WaveNorm, augmenter: Augmenter, config: AugmentConfig,
                           seed: int, progress: bool = True) -> list[FeatureRef]:
    """Encode K augmented copies of each item once (seeded per item and copy); refs gain `copies`."""
    tag = augmentation_tag(config, seed)
    store = cache.store("speech", encoder.info.identity)
    out = []
    with store.writer() as writer:
        for item, ref in tqdm(list(zip(items, refs)), desc="augmented copies", disable=not progress):
            digest = file_digest(item.path)
            keys = []
            for k in range(1, config.cached_copies + 1):
                key = speech_key(digest, norm) + f"-aug{tag}-{k}"
                if key not in store:
                    rng = np.random.default_rng([seed, k, int(digest[:12], 16)])
                    wave = norm.apply(augmenter(load_audio(item.path), rng))
                    writer.put(key, encoder.encode([wave])[0])  # (L, T, D)
                keys.append(key)
            out.append(dataclasses.replace(ref, copies=tuple(keys)))
    return out
