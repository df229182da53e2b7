"""`dmha train`: manifest → transcripts → cached features → Lightning fit → model directory + metrics."""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from .audio import SAMPLE_RATE, audio_duration
from .augment import Augmenter
from .config import Config, ConfigError, to_dict
from .data.manifest import Item, ManifestError, labels_of, read_manifest, require_splits
from .evaluation import score_split
from .features import WaveNorm, compute_wave_norm, feature_loader, feature_stats
from .losses import build_loss
from .modeldir import TRAINING_LOG_FILE, EncoderSpec, ModelBundle, build_model, save_model_dir
from .online import WaveDataset, babble_pool, cache_augmented_copies, collate_waves
from .parallel import Share
from .sampling import MAX_BATCH_SECONDS, LengthBucketSampler
from .pipeline import Featurized, feature_cache, featurize, speech_encoder, text_encoder, write_errors
from .training import DMHAModule, fit, load_best_weights

log = logging.getLogger(__name__)


def train(manifest: str | Path, out: str | Path, config: Config, progress: bool = True) -> dict | None:
    """Train the DMHA head on the manifest's train split, select on dev, write RUN_DIR/model and metrics.json.

    Under DDP every rank runs this; only the main process returns the metrics (others return None).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = read_manifest(manifest)
    require_splits(items, ["train", "dev"], manifest)
    labels = _check_labels(items, manifest)
    mode = feature_mode(config)  # before any work: a contradictory setting fails now
    _claim_run_dir(out, config)

    norm, data = _features(items, config, progress, _extraction_processes(config))
    write_errors(data.errors, out / "errors.tsv")
    by_split = _split_refs(data.items, data.refs, labels)

    speech, text = speech_encoder(config.encoders, config.features.layers).info, text_encoder(config.encoders).info
    specs = (EncoderSpec(speech.name, speech.identity, speech.num_layers, speech.dim),
             EncoderSpec(text.name, text.identity, text.num_layers, text.dim))
    # Seed after feature extraction: loading encoders may consume random numbers, cached runs don't.
    L.seed_everything(config.seed, workers=True, verbose=False)
    model = build_model(config, *specs, len(labels))
    if config.model.feature_norm == "standardize":
        stats = feature_stats([r for _, r, _ in by_split["train"]], progress)
        model.speech_norm.mean.copy_(stats["speech_mean"]), model.speech_norm.std.copy_(stats["speech_std"])
        model.text_norm.mean.copy_(stats["text_mean"]), model.text_norm.std.copy_(stats["text_std"])
    counts = Counter(t for _, _, t in by_split["train"])
    loss = build_loss(config.loss, [counts.get(k, 0) for k in range(len(labels))], config.train.focal_gamma,
                      config.train.label_smoothing)
    log.info("training features: %s", mode)
    train_loader = _train_loader(by_split["train"], config, mode, norm, speech.frame_rate, progress)
    dev_loader = _loader(by_split["dev"], config, 0, shuffle=False)
    module = DMHAModule(model, loss, len(labels), config.train,
                        speech_encoder(config.encoders, config.features.layers) if mode == "online" else None)
    fitted = fit(module, train_loader, dev_loader, out, config.train, progress)
    if fitted is None:  # a secondary DDP rank: the main process writes the model and the metrics
        return None
    best_path, best_f1, best_epoch = fitted
    load_best_weights(model, best_path)
    model.eval()

    meta = {"dev_macro_f1": best_f1, "best_epoch": best_epoch, "train_manifest": str(manifest),
            "feature_mode": mode,
            "class_counts": {labels[k]: counts.get(k, 0) for k in range(len(labels))}}
    save_model_dir(out / "model", ModelBundle(model, config, labels, *specs, norm, meta))
    if (out / "logs" / "metrics.csv").is_file():  # per-epoch curves travel with the model (for reports)
        shutil.copy2(out / "logs" / "metrics.csv", out / "model" / TRAINING_LOG_FILE)
    metrics = _final_metrics(model, labels, by_split, out, meta, data)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def extract(manifest: str | Path, config: Config, progress: bool = True, processes: int = 1) -> Featurized:
    """`dmha extract`: fill the feature store for every item of the manifest exactly as `train` would
    (same transcripts, waveform normalisation and encoders), optionally in several processes."""
    items = read_manifest(manifest)
    require_splits(items, ["train"], manifest)
    return _features(items, config, progress, processes)[1]


def extract_items(items: list[Item], config: Config, progress: bool = True) -> int:
    """Fill the store for these items (all treated alike); returns how many speech entries were computed."""
    return _features(items, config, progress, 1)[1].speech_computed


def _features(items: list[Item], config: Config, progress: bool, processes: int) -> tuple[WaveNorm, Featurized]:
    train_items = [i for i in items if i.split == "train"]
    norm = wave_norm(train_items, config, progress)
    return norm, featurize(items, config.encoders, config.features, norm, progress, processes)


def wave_norm(train_items: list[Item], config: Config, progress: bool = True) -> WaveNorm:
    """The waveform standardisation `features.normalize` asks for; only `train` reads the training audio."""
    if config.features.normalize == "train":
        return compute_wave_norm(train_items, progress)
    return WaveNorm(per_utterance=config.features.normalize == "utterance")


def _extraction_processes(config: Config) -> int:
    """One extraction process per training device, when this process is the one launching DDP
    (torchrun/SLURM ranks share the work through their environment; Lightning's own DDP children
    start after extraction, when the store is complete)."""
    world = config.train.devices * config.train.num_nodes
    launched = "LOCAL_RANK" in os.environ or Share.from_env().world > 1
    return config.train.devices if world > 1 and not launched else 1


def _claim_run_dir(out: Path, config: Config) -> None:
    """Record the config; a run folder holding another config's checkpoints must not be resumed."""
    saved = out / "config.json"
    text = json.dumps(to_dict(config), indent=2)
    if saved.exists() and (out / "checkpoints").exists() and saved.read_text(encoding="utf-8") != text:
        raise ValueError(f"{out}: holds a run with a different config (see {saved}); "
                         "use a new --out folder, or delete this one to start over")
    saved.write_text(text, encoding="utf-8")


def _check_labels(items: list[Item], manifest) -> list[str]:
    """Labels come from the train split; a label seen only in dev/test could never be predicted."""
    labels = labels_of([i for i in items if i.split == "train"])
    unseen = sorted(set(labels_of(items)) - set(labels))
    if unseen:
        raise ManifestError(f"{manifest}: label(s) {', '.join(unseen)} appear in other splits but not in train")
    if len(labels) < 2:
        raise ManifestError(f"{manifest}: need at least 2 labels in train, found {labels}")
    return labels


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


def _train_loader(triples, config: Config, mode: str, norm: WaveNorm, frame_rate: float, progress: bool):
    """Waveforms for online extraction; otherwise cached features (and their augmented copies, if any)."""
    items, refs, targets = (list(x) for x in zip(*triples))
    augmenter = None
    if config.aug.enabled:
        augmenter = Augmenter(config.aug, babble_pool=babble_pool(items, seed=config.seed), seed=config.seed)
    if mode == "online":
        crop = round(config.train.crop_s * SAMPLE_RATE)
        repeat = config.train.crop_short == "repeat"
        dataset = WaveDataset(items, targets, refs, norm, crop, augmenter, repeat)
        lengths = [round(audio_duration(i.path) * SAMPLE_RATE) for i in items] if not (crop and repeat) else [crop] * len(items)
        lengths = [min(n, crop) for n in lengths] if crop else lengths
        sampler = LengthBucketSampler(lengths, config.train.batch_size, shuffle=True, seed=config.seed,
                                      pool=_pool(config), distributed=True,
                                      max_length=MAX_BATCH_SECONDS * SAMPLE_RATE)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_waves,
                          num_workers=config.train.num_workers, persistent_workers=config.train.num_workers > 0)
    if augmenter is not None:
        refs = cache_augmented_copies(items, refs, speech_encoder(config.encoders, config.features.layers), feature_cache(config.features),
                                      norm, augmenter, config.aug, config.seed, progress)
    return _loader(list(zip(items, refs, targets)), config, round(config.train.crop_s * frame_rate), shuffle=True)


def _loader(triples, config: Config, crop_frames: int, shuffle: bool) -> DataLoader:
    """Length-bucketed batches, split across DDP ranks (the sampler does it: Lightning's is off)."""
    return feature_loader([r for _, r, _ in triples], [t for _, _, t in triples], config.train.batch_size,
                          crop_frames, shuffle, config.seed, _pool(config), config.train.num_workers, distributed=True,
                          repeat_short=config.train.crop_short == "repeat")


def _pool(config: Config) -> int:
    """Batches per length-sorted pool: 1 = plain random batches (train.length_buckets=false)."""
    return 50 if config.train.length_buckets else 1


def _final_metrics(model, labels, by_split, out: Path, meta: dict, data) -> dict:
    """Scores of the kept model on dev and test (top level = test when there is one, else dev)."""
    scores = {}
    for split in ("dev", "test"):
        if by_split.get(split):
            refs, targets = [r for _, r, _ in by_split[split]], [t for _, _, t in by_split[split]]
            names = [str(item.path) for item, _, _ in by_split[split]]
            scores[split] = score_split(model, refs, targets, labels, out / f"eval_{split}", names)
    main = "test" if "test" in scores else "dev"
    top = {k: v for k, v in scores[main].items() if k != "confusion"}
    return {**top, "split": main, "dev": scores["dev"], **({"test": scores["test"]} if "test" in scores else {}),
            **meta, "skipped": len(data.errors), "features_computed": data.speech_computed}
