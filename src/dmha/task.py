"""The training task (pyannote's Model / Task split): what `dmha train` fits, prepared from a manifest.

`prepare` does the data work once and returns it as a value (`Prepared`): the frozen encoders' outputs
in the store, the waveform normalisation, and each split as a `Split` (items, feature refs with
their speaker statistics, targets, and what each batch carries besides). `build` turns a Prepared into
what Lightning fits: the DMHA head (its feature statistics set from the training features), the loss
and the training and dev loaders. `finished` turns the best checkpoint into a model directory's bundle.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from dataclasses import dataclass

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
from .encoders.base import SpeechEncoder
from .encoders.registry import speech_encoder, text_encoder
from .extraction import CorpusFeatures, extract_augmented_copies, features_for
from .layout import FeatureRef, StoreRoot
from .losses import TargetLoss, build_loss
from .model import DMHA
from .modeldir import EncoderSpec, ModelBundle, build_model, head_dims
from .parallel import WorkShare
from .speaker_norm import alone, with_speaker_moments, with_speaker_pools
from .targets import attributes_of, dev_criterion, item_targets, predicts_category
from .training import DMHAModule, load_best_weights

log = logging.getLogger(__name__)


@dataclass
class Split:
    """One split of the task: its items, their feature refs (with speaker statistics where the head uses
    them), each item's class index, and what its batch carries besides the label (dmha.targets' soft
    targets and attributes, and with several corpora the classes the item's corpus offered)."""

    items: list[Item]
    refs: list[FeatureRef]
    targets: list[int]
    extras: list[dict]

    def __len__(self) -> int:
        return len(self.items)

    def take(self, indices: list[int]) -> "Split":
        """These items, in this order (repeats allowed: balanced corpus sampling)."""
        return Split(*([column[i] for i in indices] for column in (self.items, self.refs, self.targets, self.extras)))


@dataclass
class Prepared:
    """What `prepare` made: the features (items, skipped ones, the waveform normalisation), each split,
    the encoders as the model directory records them, the loaded speech encoder (reused for live top
    layers, augmented copies and online mode), and the training targets' mass per class (class weights)."""

    features: CorpusFeatures
    splits: dict[str, Split]
    specs: tuple[EncoderSpec, EncoderSpec]
    speech: SpeechEncoder
    class_mass: list[float]
    class_counts: Counter


class EmotionTask:
    """Emotion classification of one manifest's items with one config: data, then model and loaders."""

    def __init__(self, config: Config, labels: list[str], progress: bool = True, corpora: Corpora | None = None):
        self.config, self.labels, self.progress = config, labels, progress
        self.corpora = corpora or Corpora()  # several corpora: what each offered (dmha.corpora)
        self.mode = feature_mode(config)  # before any work: a contradictory setting fails now

    def prepare(self, items: list[Item], source="manifest") -> Prepared:
        """Transcripts and features for every item (skipping bad ones), split by `split`. `source` (the
        manifest) names where a bad vote or attribute cell is."""
        config = self.config
        features = features_for(items, config, progress=self.progress, processes=_extraction_processes(config))
        refs = features.refs
        if config.model.feature_norm == "speaker":
            refs = with_speaker_moments(features.items, refs, self.progress)
        splits = self._splits(features.items, refs, source)
        speech = speech_encoder(config.encoders, config.features.layers)
        text = text_encoder(config.encoders).info
        specs = (EncoderSpec(speech.info.name, speech.info.identity, speech.info.num_layers, speech.info.dim),
                 EncoderSpec(text.name, text.identity, text.num_layers, text.dim))
        train = splits["train"]
        counts = Counter(train.targets)
        if config.train.soft_targets:  # class weights from the targets' mass per class, as the loss sees them
            mass = [float(m) for m in sum(extra["soft"] for extra in train.extras)]
        else:
            mass = [counts.get(k, 0) for k in range(len(self.labels))]
        return Prepared(features, splits, specs, speech, mass, counts)

    def _splits(self, items: list[Item], refs: list[FeatureRef], source) -> dict[str, Split]:
        """Each split of the featurised items, with its targets and extras; training draws its speaker
        statistics from random subsets with train.speaker_stats=subsets."""
        config = self.config
        index = {label: k for k, label in enumerate(self.labels)}
        rows: dict[str, list[int]] = {}
        for n, item in enumerate(items):
            rows.setdefault(item.split, []).append(n)
        for split in ("train", "dev"):
            if not rows.get(split):
                raise ManifestError(f"no usable {split} items left after skipping unreadable files")
        splits = {}
        for split, members in rows.items():
            mine = [items[n] for n in members]
            extras = item_targets(mine, self.labels, config, source) if split in ("train", "dev") else [{}] * len(mine)
            if self.corpora.several and split in ("train", "dev"):  # each item's loss over its corpus's labels
                extras = [{**extra, "allowed": np.array(self.corpora.offered(item, self.labels), dtype=bool)}
                          for extra, item in zip(extras, mine)]
            splits[split] = Split(mine, [refs[n] for n in members], [index[i.label] for i in mine], extras)
        if config.model.feature_norm == "speaker" and config.train.speaker_stats == "subsets":
            train = splits["train"]
            pools = with_speaker_pools(train.items, train.refs, config.train.alone_share, self.progress)
            splits["train"] = dataclasses.replace(train, refs=pools)
        return splits

    def build(self, prepared: Prepared) -> tuple[DMHAModule, DataLoader, DataLoader]:
        """The Lightning module around a fresh head, and the training and dev loaders."""
        config = self.config
        # Seed after feature extraction: loading encoders may consume random numbers, cached runs don't.
        L.seed_everything(config.seed, workers=True, verbose=False)
        model = build_model(config, head_dims(*prepared.specs, len(self.labels)), prepared.specs[0], prepared.speech)
        if config.model.feature_norm in ("standardize", "speaker"):  # speaker: the statistics are its prior
            model.set_feature_stats(feature_stats(prepared.splits["train"].refs, self.progress))
        category = (build_loss(config.loss, prepared.class_mass, config.train.focal_gamma, config.train.label_smoothing)
                    if predicts_category(config.model) else None)
        attribute_weight = (config.train.attribute_weight if category is not None else 1.0) if attributes_of(config.model) else 0.0
        log.info("training features: %s", self.mode)
        dev = prepared.splits["dev"]
        if config.train.dev_scoring == "alone":  # select as the headline scores: no other dev recording of the speaker
            dev = dataclasses.replace(dev, refs=alone(dev.refs))
        module = DMHAModule(model, TargetLoss(category, attribute_weight), len(self.labels), config.train,
                            prepared.speech if self.mode == "online" else None, dev_criterion(config))
        return module, self._train_loader(prepared), _loader(dev, config, 0, shuffle=False)

    def finished(self, prepared: Prepared, model: DMHA, best_path, best_score: float, best_epoch: int,
                 manifest) -> ModelBundle:
        """The head with its best weights, and what its model directory records about the training."""
        load_best_weights(model, best_path)
        model.eval()
        criterion = dev_criterion(self.config)
        counts = prepared.class_counts
        meta = {f"dev_{criterion}": best_score, "dev_criterion": criterion, "best_epoch": best_epoch,
                "train_manifest": str(manifest) if isinstance(manifest, (str, os.PathLike)) else list(map(str, manifest)),
                **({"corpora": self.corpora.to_dict()} if self.corpora.several else {}),
                "feature_mode": self.mode,
                "class_counts": {self.labels[k]: counts.get(k, 0) for k in range(len(self.labels))}}
        return ModelBundle(model, self.config, self.labels, *prepared.specs, prepared.features.norm, meta)

    def _train_loader(self, prepared: Prepared) -> DataLoader:
        """Waveforms for online extraction; otherwise cached features (and their augmented copies, if any)."""
        config = self.config
        train = prepared.splits["train"]
        train = train.take(corpus_balanced(train.items, config.train.corpus_sampling, config.seed))
        augmenter = None
        if config.aug.enabled:
            augmenter = Augmenter(config.aug, babble_pool=babble_pool(train.items, seed=config.seed), seed=config.seed)
        if self.mode == "online":
            return _wave_loader(train, prepared, augmenter, config)
        if augmenter is not None:
            refs = extract_augmented_copies(train.items, train.refs, prepared.speech, StoreRoot.from_config(config.features),
                                            prepared.features.norm, augmenter, config.aug, config.seed, self.progress)
            train = dataclasses.replace(train, refs=refs)
        return _loader(train, config, round(config.train.crop_s * prepared.speech.info.frame_rate), shuffle=True)


def _wave_loader(train: Split, prepared: Prepared, augmenter, config: Config) -> DataLoader:
    """Online extraction: waveforms cropped, augmented and normalised; the encoder runs in the step."""
    crop = round(config.train.crop_s * SAMPLE_RATE)
    repeat = config.train.crop_short == "repeat"
    dataset = WaveDataset(train.items, train.targets, train.refs, prepared.features.norm, crop, augmenter, repeat,
                          train.extras)
    lengths = [round(audio_duration(i.path) * SAMPLE_RATE) for i in train.items] if not (crop and repeat) \
        else [crop] * len(train)
    lengths = [min(n, crop) for n in lengths] if crop else lengths
    sampler = LengthBucketSampler(lengths, config.train.batch_size, shuffle=True, seed=config.seed, pool=_pool(config),
                                  distributed=True, max_length=MAX_BATCH_SECONDS * SAMPLE_RATE)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_waves, num_workers=config.train.num_workers,
                      persistent_workers=config.train.num_workers > 0)


def corpus_balanced(items: list[Item], sampling: str, seed: int) -> list[int]:
    """The training items of one epoch: all of them once (`proportional`), or with each corpus repeated
    up to the size of the largest (`balanced`: whole repeats, then a seeded random part), so every corpus
    weighs the same in the loss. One corpus: all once."""
    by_corpus: dict = {}
    for i, item in enumerate(items):
        by_corpus.setdefault(corpus_of(item), []).append(i)
    if sampling == "proportional" or len(by_corpus) < 2:
        return list(range(len(items)))
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


def feature_mode(config: Config) -> str:
    """`online` when augmentation is on without cached copies (the encoders must see augmented audio)."""
    mode = config.features.mode
    if mode == "auto":
        return "online" if config.aug.enabled and not config.aug.cached_copies else "cached"
    if mode == "cached" and config.aug.enabled and not config.aug.cached_copies:
        raise ConfigError("aug.enabled needs features.mode=online (or auto), or aug.cached_copies > 0: "
                          "cached features cannot show the encoder augmented audio")
    return mode


def _loader(split: Split, config: Config, crop_frames: int, shuffle: bool) -> DataLoader:
    """Length-bucketed batches, split across DDP ranks (the sampler does it: Lightning's is off)."""
    return feature_loader(split.refs, split.targets, config.train.batch_size, crop_frames, shuffle, config.seed,
                          _pool(config), config.train.num_workers, distributed=True,
                          repeat_short=config.train.crop_short == "repeat", extras=split.extras)


def _pool(config: Config) -> int:
    """Batches per length-sorted pool: 1 = plain random batches (train.length_buckets=false)."""
    return 50 if config.train.length_buckets else 1
