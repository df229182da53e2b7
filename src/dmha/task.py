"""The training task (pyannote's Model / Task split): what `dmha train` fits, prepared from a manifest.

`prepare` does the data work once: transcripts, the frozen encoders' outputs in the store, the
waveform normalisation, the splits. `build` then makes what Lightning fits: the DMHA head (its
feature statistics set from the training features), the loss and the training and dev loaders
(cached features, their augmented copies, or waveforms for online extraction). `finished` turns the
best checkpoint into a model directory's bundle.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from .audio import SAMPLE_RATE, audio_duration
from .augment import Augmenter, babble_pool
from .batches import LengthBucketSampler, WaveDataset, collate_waves, feature_loader, feature_stats
from .batching import MAX_BATCH_SECONDS
from .config import Config, ConfigError
from .corpora import Corpora, corpus_of
from .data.manifest import Item, ManifestError
from .encoders.registry import speech_encoder, text_encoder
from .extraction import CorpusFeatures, extract_augmented_copies, features_for
from .layout import StoreRoot
from .losses import TargetLoss, build_loss
from .modeldir import EncoderSpec, ModelBundle, build_model, head_dims
from .parallel import WorkShare
from .speaker_norm import with_speaker_moments, with_speaker_pools
from .targets import attributes_of, dev_criterion, item_targets, predicts_category
from .training import DMHAModule, load_best_weights

log = logging.getLogger(__name__)


class EmotionTask:
    """Emotion classification of one manifest's items with one config: data, then model and loaders."""

    def __init__(self, config: Config, labels: list[str], progress: bool = True, corpora: Corpora | None = None):
        self.config, self.labels, self.progress = config, labels, progress
        self.corpora = corpora or Corpora()  # several corpora: what each offered (dmha.corpora)
        self.mode = feature_mode(config)  # before any work: a contradictory setting fails now

    def prepare(self, items: list[Item], source="manifest") -> CorpusFeatures:
        """Transcripts and features for every item (skipping bad ones), split by `split`; the speech
        encoder is loaded here once and reused for the specs, augmented copies and online mode.
        `source` (the manifest) names where a bad vote or attribute cell is."""
        config = self.config
        self.data = features_for(items, config, progress=self.progress, processes=_extraction_processes(config))
        self.norm = self.data.norm
        refs = self.data.refs
        if config.model.feature_norm == "speaker":
            refs = with_speaker_moments(self.data.items, refs, self.progress)
        self.by_split = _split_refs(self.data.items, refs, self.labels)
        if config.model.feature_norm == "speaker" and config.train.speaker_stats == "subsets":
            train = self.by_split["train"]
            pools = with_speaker_pools([i for i, _, _ in train], [r for _, r, _ in train], config.train.alone_share,
                                       self.progress)
            self.by_split["train"] = [(item, pool, target) for (item, _, target), pool in zip(train, pools)]
        self.speech = speech_encoder(config.encoders, config.features.layers)
        speech, text = self.speech.info, text_encoder(config.encoders).info
        self.frame_rate = speech.frame_rate
        self.specs = (EncoderSpec(speech.name, speech.identity, speech.num_layers, speech.dim),
                      EncoderSpec(text.name, text.identity, text.num_layers, text.dim))
        # What train and dev batches carry besides the label: vote distributions, attributes (dmha.targets).
        self.extras = {split: item_targets([i for i, _, _ in self.by_split[split]], self.labels, config, source)
                       for split in ("train", "dev")}
        if self.corpora.several:  # each item's loss covers only the labels its corpus offered
            for split in ("train", "dev"):
                for extra, (item, _, _) in zip(self.extras[split], self.by_split[split]):
                    extra["allowed"] = np.array(self.corpora.offered(item, self.labels), dtype=bool)
        self.counts = Counter(t for _, _, t in self.by_split["train"])
        if config.train.soft_targets:  # class weights from the targets' mass per class, as the loss sees them
            mass = sum(extra["soft"] for extra in self.extras["train"])
            self.target_mass = [float(m) for m in mass]
        else:
            self.target_mass = [self.counts.get(k, 0) for k in range(len(self.labels))]
        return self.data

    def build(self) -> tuple[DMHAModule, DataLoader, DataLoader]:
        """The Lightning module around a fresh head, and the training and dev loaders."""
        config = self.config
        # Seed after feature extraction: loading encoders may consume random numbers, cached runs don't.
        L.seed_everything(config.seed, workers=True, verbose=False)
        self.model = build_model(config, head_dims(*self.specs, len(self.labels)), self.specs[0], self.speech)
        if config.model.feature_norm in ("standardize", "speaker"):  # speaker: the statistics are its prior
            self.model.set_feature_stats(feature_stats([r for _, r, _ in self.by_split["train"]], self.progress))
        category = (build_loss(config.loss, self.target_mass, config.train.focal_gamma, config.train.label_smoothing)
                    if predicts_category(config.model) else None)
        attribute_weight = (config.train.attribute_weight if category is not None else 1.0) if attributes_of(config.model) else 0.0
        loss = TargetLoss(category, attribute_weight)
        log.info("training features: %s", self.mode)
        train_loader = self._train_loader()
        dev = self.by_split["dev"]
        if config.train.dev_scoring == "alone":  # select as the headline scores: no other dev recording of the speaker
            dev = [(item, dataclasses.replace(ref, speaker=None), target) for item, ref, target in dev]
        dev_loader = _loader(dev, config, 0, shuffle=False, extras=self.extras["dev"])
        module = DMHAModule(self.model, loss, len(self.labels), config.train,
                            self.speech if self.mode == "online" else None, dev_criterion(config))
        return module, train_loader, dev_loader

    def finished(self, best_path, best_score: float, best_epoch: int, manifest) -> ModelBundle:
        """The head with its best weights, and what its model directory records about the training."""
        load_best_weights(self.model, best_path)
        self.model.eval()
        criterion = dev_criterion(self.config)
        meta = {f"dev_{criterion}": best_score, "dev_criterion": criterion, "best_epoch": best_epoch,
                "train_manifest": str(manifest) if isinstance(manifest, (str, os.PathLike)) else list(map(str, manifest)),
                **({"corpora": self.corpora.to_dict()} if self.corpora.several else {}),
                "feature_mode": self.mode,
                "class_counts": {self.labels[k]: self.counts.get(k, 0) for k in range(len(self.labels))}}
        return ModelBundle(self.model, self.config, self.labels, *self.specs, self.norm, meta)

    def _train_loader(self) -> DataLoader:
        """Waveforms for online extraction; otherwise cached features (and their augmented copies, if any)."""
        config = self.config
        train = self.by_split["train"]
        chosen = corpus_balanced(train, config.train.corpus_sampling, config.seed)  # indices, maybe repeated
        items, refs, targets = ([train[i][k] for i in chosen] for k in range(3))
        extras = [self.extras["train"][i] for i in chosen]
        augmenter = None
        if config.aug.enabled:
            augmenter = Augmenter(config.aug, babble_pool=babble_pool(items, seed=config.seed), seed=config.seed)
        if self.mode == "online":
            crop = round(config.train.crop_s * SAMPLE_RATE)
            repeat = config.train.crop_short == "repeat"
            dataset = WaveDataset(items, targets, refs, self.norm, crop, augmenter, repeat, extras)
            lengths = [round(audio_duration(i.path) * SAMPLE_RATE) for i in items] if not (crop and repeat) else [crop] * len(items)
            lengths = [min(n, crop) for n in lengths] if crop else lengths
            sampler = LengthBucketSampler(lengths, config.train.batch_size, shuffle=True, seed=config.seed,
                                          pool=_pool(config), distributed=True,
                                          max_length=MAX_BATCH_SECONDS * SAMPLE_RATE)
            return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_waves,
                              num_workers=config.train.num_workers, persistent_workers=config.train.num_workers > 0)
        if augmenter is not None:
            refs = extract_augmented_copies(items, refs, self.speech, StoreRoot.from_config(config.features),
                                            self.norm, augmenter, config.aug, config.seed, self.progress)
        return _loader(list(zip(items, refs, targets)), config, round(config.train.crop_s * self.frame_rate),
                       shuffle=True, extras=extras)


def corpus_balanced(train: list[tuple], sampling: str, seed: int) -> list[int]:
    """The training items of one epoch: all of them once (`proportional`), or with each corpus repeated
    up to the size of the largest (`balanced`: whole repeats, then a seeded random part), so every corpus
    weighs the same in the loss. One corpus: all once."""
    by_corpus: dict = {}
    for i, (item, _, _) in enumerate(train):
        by_corpus.setdefault(corpus_of(item), []).append(i)
    if sampling == "proportional" or len(by_corpus) < 2:
        return list(range(len(train)))
    rng = np.random.default_rng(seed)
    largest = max(len(v) for v in by_corpus.values())
    chosen = []
    for members in by_corpus.values():
        whole, part = divmod(largest, len(members))
        chosen += members * whole + sorted(rng.choice(members, part, replace=False).tolist())
    return chosen


def _extraction_processes(config: Config) -> int:
    """One extraction process per training device, when this process is the one launching DDP
    (torchrun/SLURM ranks share the work through their environment; Lightning's own DDP children
    start after extraction, when the store is complete)."""
    world = config.train.devices * config.train.num_nodes
    launched = "LOCAL_RANK" in os.environ or WorkShare.from_env().world > 1
    return config.train.devices if world > 1 and not launched else 1


def _split_refs(items, refs, labels) -> dict[str, list[tuple]]:
    """{split: [(item, ref, target index)]} for the featurized items."""
    index = {label: k for k, label in enumerate(labels)}
    by_split: dict[str, list[tuple]] = {}
    for item, ref in zip(items, refs):
        by_split.setdefault(item.split, []).append((item, ref, index[item.label]))
    for split in ("train", "dev"):
        if not by_split.get(split):
            raise ManifestError(f"no usable {split} items left after skipping unreadable files")
    return by_split


def feature_mode(config: Config) -> str:
    """`online` when augmentation is on without cached copies (the encoders must see augmented audio)."""
    mode = config.features.mode
    if mode == "auto":
        return "online" if config.aug.enabled and not config.aug.cached_copies else "cached"
    if mode == "cached" and config.aug.enabled and not config.aug.cached_copies:
        raise ConfigError("aug.enabled needs features.mode=online (or auto), or aug.cached_copies > 0: "
                          "cached features cannot show the encoder augmented audio")
    return mode


def _loader(triples, config: Config, crop_frames: int, shuffle: bool, extras=None) -> DataLoader:
    """Length-bucketed batches, split across DDP ranks (the sampler does it: Lightning's is off)."""
    return feature_loader([r for _, r, _ in triples], [t for _, _, t in triples], config.train.batch_size,
                          crop_frames, shuffle, config.seed, _pool(config), config.train.num_workers, distributed=True,
                          repeat_short=config.train.crop_short == "repeat", extras=extras)


def _pool(config: Config) -> int:
    """Batches per length-sorted pool: 1 = plain random batches (train.length_buckets=false)."""
    return 50 if config.train.length_buckets else 1
