"""Steps shared by train, evaluate and transcribe: transcripts → cached features → head probabilities."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import EncodersConfig, FeaturesConfig
from .data.manifest import Item
from .encoders import load_speech_encoder, load_text_encoder, load_transcriber
from .encoders.base import LayerSubset
from .features import FeatureCache, FeatureRef, WaveNorm, count_missing, extract_features, feature_loader
from .modeldir import predict_proba
from .parallel import Share, run_processes
from .sampling import in_input_order
from .model import DMHA
from .transcription import transcribe_items

log = logging.getLogger(__name__)


def feature_cache(cfg: FeaturesConfig) -> FeatureCache:
    """The configured cache (default under $DMHA_HOME)."""
    return FeatureCache(cfg.cache_dir or None, shard_bytes=int(cfg.shard_mb * 2**20))


def asr_identity(enc: EncodersConfig) -> str:
    """Cache identity of the ASR setting (the name is enough: registry names pin packaged weights)."""
    window = f"|window={enc.asr_window_s:g}" if enc.asr_window_s != 30 else ""
    return f"asr:{enc.asr}|temperature=0|batched-notimestamps{window}"  # settings that change the text


def fill_transcripts(items: Sequence[Item], enc: EncodersConfig, cache: FeatureCache,
                     batch_size: int = 8, progress: bool = True) -> tuple[list[Item], list[tuple[str, str]]]:
    """ASR for every item without a transcript (cached; given transcripts are kept)."""
    return transcribe_items(items, asr_identity(enc), lambda: transcriber(enc),
                            cache, batch_size=batch_size, progress=progress)


def transcriber(enc: EncodersConfig):
    """The configured ASR (only the options that differ from the defaults, so registry names stay cached)."""
    options = {"window_s": enc.asr_window_s} if enc.asr_window_s != 30 else {}
    return load_transcriber(enc.asr, device=enc.device, **options)


def speech_encoder(enc: EncodersConfig, layers: Sequence[int] = ()):
    """The configured speech encoder, keeping only `layers` (features.layers) when given."""
    encoder = load_speech_encoder(enc.speech, device=enc.device, pad_to_s=enc.speech_pad_to_s)
    return LayerSubset(encoder, layers) if layers else encoder


def text_encoder(enc: EncodersConfig):
    return load_text_encoder(enc.text, device=enc.device)


@dataclass
class Featurized:
    """Items whose features are cached, with the refs, and every item that had to be skipped."""

    items: list[Item]
    refs: list[FeatureRef]
    errors: list[tuple[str, str]] = field(default_factory=list)
    speech_computed: int = 0


def featurize(items: Sequence[Item], enc: EncodersConfig, feats: FeaturesConfig, norm: WaveNorm,
              progress: bool = True, processes: int = 1) -> Featurized:
    """Transcribe what is missing, then make sure both encoders' outputs are cached; skip bad items.

    `processes` > 1 splits the extraction over that many spawned processes (one per GPU when the
    encoders run on CUDA), all writing into the same store.
    """
    cache = feature_cache(feats)
    items, errors = fill_transcripts(items, enc, cache, feats.batch_size, progress)
    bad = {path for path, _ in errors}
    items = [item for item in items if str(item.path) not in bad]
    speech, text, computed = speech_encoder(enc, feats.layers), text_encoder(enc), 0
    if processes > 1 and count_missing(items, speech.info.identity, text.info.identity, cache, norm):
        devices = [f"cuda:{k}" for k in range(processes)] if enc.device.startswith("cuda") else []
        computed = sum(run_processes(processes, extract_worker, (items, enc, feats, norm, progress), devices))
    result = extract_features(items, speech, text, cache, norm, feats.batch_size, progress)
    kept = [(item, ref) for item, ref in zip(items, result.refs) if ref is not None]
    return Featurized([i for i, _ in kept], [r for _, r in kept], errors + result.errors,
                      computed + result.speech_computed)


def extract_worker(items: Sequence[Item], enc: EncodersConfig, feats: FeaturesConfig, norm: WaveNorm,
                   progress: bool, device: str | None = None) -> int:
    """One process's share of an extraction (its rank comes from RANK/WORLD_SIZE); returns entries computed."""
    if device:
        enc = dataclasses.replace(enc, device=device)
    return extract_features(items, speech_encoder(enc, feats.layers), text_encoder(enc), feature_cache(feats), norm,
                            feats.batch_size, progress and Share.from_env().rank == 0).speech_computed


def head_probabilities(model: DMHA, refs: Sequence[FeatureRef], batch_size: int = 32) -> np.ndarray:
    """(N, K) class probabilities of the head on cached features, full length (no crops)."""
    model.eval()
    loader = feature_loader(refs, batch_size=batch_size)
    probs = [predict_proba(model, batch)[0] for batch in loader]
    if not probs:
        return np.zeros((0, model.classifier.output.out_features))
    return np.stack(in_input_order(list(torch.cat(probs).numpy()), loader.batch_sampler.order()))


def write_errors(errors: Sequence[tuple[str, str]], path: Path) -> None:
    """One `path<TAB>reason` line per skipped item (nothing written when there are none); backslash,
    tab and newline in a path are escaped as \\\\, \\t and \\n, so every line stays one record."""
    if errors:
        path.write_text("".join(error_line(p, r) for p, r in errors), encoding="utf-8")


def error_line(path: str, reason: str) -> str:
    """One errors-file record: `path<TAB>reason` and a newline, escaped to stay one line."""
    return f"{_escape(path)}\t{_escape(reason)}\n"


def _escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
