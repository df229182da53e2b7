"""Run the frozen encoders once per utterance and keep their outputs in the feature store.

One path serves every extraction: plain (one process), shared between processes or ranks (each
encodes the missing entries whose key hashes to it, then waits for the others', taking over what a
dead one left), and the augmented copies of `aug.cached_copies`. Speech features are all hidden
states (L, T, D) in fp16, text features the last layer (T, D); keys and folders come from layout.py.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from .audio import AudioError, WaveNorm, audio_duration, compute_wave_norm, file_digest, load_audio
from .augment import Augmenter
from .config import AugmentConfig, Config, EncodersConfig, FeaturesConfig
from .data.manifest import Item
from .encoders.base import SpeechEncoder, TextEncoder
from .encoders.registry import speech_encoder, text_encoder
from .layout import FeatureRef, StoreRoot, augmentation_tag, copy_key, speech_key, text_key
from .parallel import WorkShare, run_processes
from .store import FeatureStore, ShardWriter
from .transcription import fill_transcripts

log = logging.getLogger(__name__)


@dataclass
class CorpusFeatures:
    """The one answer to "the features of these items": the items whose features are in the store, their
    refs, every item that had to be skipped (path, reason), what was computed, and the waveform
    normalisation the speech features were computed under."""

    items: list[Item]
    refs: list[FeatureRef]
    errors: list[tuple[str, str]] = field(default_factory=list)
    speech_computed: int = 0
    text_computed: int = 0
    norm: WaveNorm = field(default_factory=WaveNorm)


def features_for(items: Sequence[Item], config: Config, norm: WaveNorm | None = None, progress: bool = True,
                 processes: int = 1) -> CorpusFeatures:
    """The features of these items under this config, for training, evaluation, cv and the benchmarks
    alike: the waveform normalisation `features.normalize` asks for (`train`: the statistics of the items
    whose split is train), or a model's own `norm`; transcripts for what has none (unless the model reads
    no text); both encoders' outputs in the store, computed where missing. Bad items are skipped.

    `processes` > 1 splits the extraction over that many spawned processes (one per GPU when the
    encoders run on CUDA), all writing into the same store.

    Example:
        >>> data = features_for(read_manifest("ravdess.csv"), load())   # doctest: +SKIP
        >>> data.refs[0].speech().shape                                  # (L, T, D)  # doctest: +SKIP
    """
    if norm is None:
        norm = wave_norm([i for i in items if i.split == "train"], config.features, progress)
    return _featurize(items, config.encoders, config.features, norm, progress, processes)


def wave_norm(train_items: Sequence[Item], features: FeaturesConfig, progress: bool = True) -> WaveNorm:
    """The waveform standardisation `features.normalize` asks for; only `train` reads the training audio."""
    if features.normalize == "train":
        return compute_wave_norm(train_items, progress)
    return WaveNorm(per_utterance=features.normalize == "utterance")


def extract_features(
    items: Sequence[Item],
    speech_encoder: SpeechEncoder,
    text_encoder: TextEncoder,
    stores: StoreRoot,
    norm: WaveNorm,
    batch_size: int = 8,
    progress: bool = True,
    share: WorkShare | None = None,
) -> CorpusFeatures:
    """Make sure every item's features are in the store; encoders run only on what is missing.

    With several processes (`share`, default: from torchrun/SLURM variables), each encodes every
    world-th missing utterance, then waits for the others' shards (taking over what a stalled or
    dead process left undone), so all end with the same complete store.
    """
    share = share or WorkShare.from_env()
    result = CorpusFeatures([], [], norm=norm)
    speech_store = stores.store("speech", speech_encoder.info.identity)
    text_store = stores.store("text", text_encoder.info.identity)
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
    text_jobs = [EncodeJob(key, text, 0.0) for key, text in texts.items() if key not in text_store]
    result.text_computed = _run_shared(text_jobs, text_store, share, progress, f"text features ({text_encoder.info.name})",
                                       lambda batch, writer, errors: _encode_text(batch, text_encoder, writer, errors),
                                       batch_size, result.errors)
    for i, key in keys.items():
        if str(items[i].path) not in bad and key in speech_store:
            result.items.append(items[i])
            result.refs.append(FeatureRef(speech_store, key, text_store, text_key(items[i].transcript)))
    return result


def count_missing(items: Sequence[Item], speech_identity: str, text_identity: str, stores: StoreRoot,
                  norm: WaveNorm) -> int:
    """How many readable items lack speech or text features (e.g. to skip starting worker processes)."""
    speech, text = stores.store("speech", speech_identity), stores.store("text", text_identity)
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
class EncodeJob:
    """One entry to compute: its key, what it is computed from (an audio path, a transcript, or an
    audio path and copy number), the file its errors name, and a cost (similar costs share a batch)."""

    key: str
    source: object
    cost: float
    path: str = ""


def _speech_jobs(items, keys, store: FeatureStore, errors) -> list[EncodeJob]:
    """Missing speech entries (identical audio once), cheapest first so batches pad little."""
    jobs: dict[str, EncodeJob] = {}
    for i, key in keys.items():
        if key in store or key in jobs:
            continue
        try:
            jobs[key] = EncodeJob(key, items[i].path, audio_duration(items[i].path), str(items[i].path))
        except AudioError as err:
            errors.append((str(items[i].path), err.reason))
    return sorted(jobs.values(), key=lambda job: job.cost)


def _run_shared(jobs: list[EncodeJob], store: FeatureStore, share: WorkShare, progress: bool, desc: str, encode,
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
                    store.mark_failed(next(j.key for j in batch if j.path == path), reason)
            bar.update(len(batch))
    if share.world == 1:
        return done
    left = share.wait_for(store, [job.key for job in jobs])
    reported = {path for path, _ in errors}
    for job in jobs:
        reason = store.failure(job.key) if job.key in left else None
        if reason is not None:
            left.remove(job.key)
            if job.path not in reported:
                errors.append((job.path, reason))
    if left:  # another process stalled or died: do its part here
        log.warning("%s: %d entries not written by the other processes; computing them here", desc, len(left))
        wanted = set(left)
        done += _run_shared([j for j in jobs if j.key in wanted], store, WorkShare(), progress, desc, encode,
                            batch_size, errors)
    return done


def _encode_speech(batch: list[EncodeJob], encoder: SpeechEncoder, norm: WaveNorm, writer: ShardWriter, errors) -> int:
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


def _encode_text(batch: list[EncodeJob], encoder: TextEncoder, writer: ShardWriter, errors) -> int:
    for job, hidden in zip(batch, encoder.encode([job.source for job in batch])):
        writer.put(job.key, hidden)  # (T, D)
    return len(batch)


def extract_augmented_copies(items: Sequence[Item], refs: Sequence[FeatureRef], encoder: SpeechEncoder,
                             stores: StoreRoot, norm: WaveNorm, augmenter: Augmenter, config: AugmentConfig,
                             seed: int, progress: bool = True, share: WorkShare | None = None) -> list[FeatureRef]:
    """Encode K augmented copies of each item once (seeded per item and copy), through the same shared
    path as every extraction; refs gain `copies`. Unreadable items raise, as the training they feed would."""
    tag = augmentation_tag(config, seed)
    store = stores.store("speech", encoder.info.identity)
    store.refresh()
    out, jobs = [], []
    for item, ref in zip(items, refs):
        digest = file_digest(item.path)
        keys = tuple(copy_key(digest, norm, tag, k) for k in range(1, config.cached_copies + 1))
        jobs += [EncodeJob(key, (item.path, k, digest), 0.0, str(item.path))
                 for k, key in enumerate(keys, 1) if key not in store]
        out.append(dataclasses.replace(ref, copies=keys))

    def encode(batch: list[EncodeJob], writer: ShardWriter, errors) -> int:
        for job in batch:
            path, k, digest = job.source
            rng = np.random.default_rng([seed, k, int(digest[:12], 16)])
            writer.put(job.key, encoder.encode([norm.apply(augmenter(load_audio(path), rng))])[0])  # (L, T, D)
        return len(batch)

    errors: list[tuple[str, str]] = []
    _run_shared(jobs, store, share or WorkShare.from_env(), progress, "augmented copies", encode, 1, errors)
    return out


def _featurize(items: Sequence[Item], enc: EncodersConfig, feats: FeaturesConfig, norm: WaveNorm,
               progress: bool = True, processes: int = 1) -> CorpusFeatures:
    """Transcribe what is missing, then make sure both encoders' outputs are cached; skip bad items."""
    stores = StoreRoot.from_config(feats)
    items, errors = fill_transcripts(items, enc, stores, feats.batch_size, progress)
    bad = {path for path, _ in errors}
    items = [item for item in items if str(item.path) not in bad]
    speech, text, computed = speech_encoder(enc, feats.layers), text_encoder(enc), 0
    if processes > 1 and count_missing(items, speech.info.identity, text.info.identity, stores, norm):
        devices = [f"cuda:{k}" for k in range(processes)] if enc.device.startswith("cuda") else []
        computed = sum(run_processes(processes, extract_worker, (items, enc, feats, norm, progress), devices))
    result = extract_features(items, speech, text, stores, norm, feats.batch_size, progress)
    return dataclasses.replace(result, errors=errors + result.errors, speech_computed=computed + result.speech_computed)


def extract_worker(items: Sequence[Item], enc: EncodersConfig, feats: FeaturesConfig, norm: WaveNorm,
                   progress: bool, device: str | None = None) -> int:
    """One process's share of an extraction (its rank comes from RANK/WORLD_SIZE); returns entries computed."""
    if device:
        enc = dataclasses.replace(enc, device=device)
    return extract_features(items, speech_encoder(enc, feats.layers), text_encoder(enc), StoreRoot.from_config(feats),
                            norm, feats.batch_size, progress and WorkShare.from_env().rank == 0).speech_computed
