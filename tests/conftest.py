"""Shared fixtures: tiny random-init encoders saved as local model dirs, and small synthetic corpora.

The tiny encoders go through the same registry path as real ones (a local directory), so the
real code runs in seconds and without any download.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RAVDESS = SHARED / "data" / "ravdess"

WORDS = ("the a is are was i you we it this that so very not to of and in on at by door kids dogs "
         "talking sitting happy sad angry love hate great terrible good bad today tomorrow meeting").split()


class FakeTranscriber:
    """Stands in for faster-whisper in fast tests: one fixed sentence per non-silent wave, at once."""

    identity = "fake-asr"
    TEXT = "this is great today"

    def transcribe(self, waves) -> list[str]:
        return [self.TEXT if w.size and float(np.abs(w).max()) > 1e-3 else "" for w in waves]


@pytest.fixture(autouse=True)
def _fake_asr_unless_slow(request, monkeypatch):
    """Fast tests never run faster-whisper by accident (it takes seconds per batch on a CPU); tests
    marked slow keep the real ASR. Fake transcripts are cached under their own identity, never as
    the real ASR's."""
    if request.node.get_closest_marker("slow") is not None:
        return
    import dmha.encoders.registry as registry
    import dmha.transcription as transcription

    real_identity = transcription.asr_identity
    monkeypatch.setattr(registry, "load_transcriber", lambda *args, **kwargs: FakeTranscriber())
    monkeypatch.setattr(transcription, "asr_identity", lambda enc: f"{FakeTranscriber.identity}|{real_identity(enc)}")


@pytest.fixture(autouse=True)
def _speech_check_off_for_tones(request, monkeypatch):
    """The tests' corpora are tones, which the speech gate rightly refuses: tests run with the gate off
    (DMHA_SPEECH_CHECK=0 reaches the CLI's and the server's subprocesses too), except those marked
    speech_gate (the gate's own, on real speech and on non-speech signals)."""
    if request.node.get_closest_marker("speech_gate") is None:
        monkeypatch.setenv("DMHA_SPEECH_CHECK", "0")


def require_ravdess() -> Path:
    """RAVDESS from ../shared, or a skip that says what is missing."""
    if not (RAVDESS / "manifest.csv").exists():
        pytest.skip(f"RAVDESS not found at {RAVDESS} (../shared/data/ravdess beside the repo)")
    return RAVDESS


def build_tiny_speech_encoder(folder: Path) -> Path:
    """A 2-layer, 32-wide WavLM with the standard 320× conv stack (50 frames/s), random weights."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel
    import torch

    torch.manual_seed(0)
    config = WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                         num_buckets=16, max_bucket_distance=64, feat_extract_norm="layer")
    WavLMModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    return folder


def build_tiny_text_encoder(folder: Path) -> Path:
    """A 2-layer, 24-wide BERT with a small word-piece vocabulary, random weights."""
    from transformers import BertConfig, BertModel, BertTokenizerFast
    import torch

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz",
             *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"], ",", ".", "!", "?", "'"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_encoders(tmp_path_factory) -> dict[str, str]:
    """Local dirs of the tiny speech and text encoders, as `--set` overrides."""
    root = tmp_path_factory.mktemp("tiny_encoders")
    speech = build_tiny_speech_encoder(root / "speech")
    text = build_tiny_text_encoder(root / "text")
    return {"speech": str(speech), "text": str(text)}


def tone(freq: float, seconds: float, rng: np.random.Generator, sr: int = 16000) -> np.ndarray:
    """A vibrato tone with a little noise: distinct enough per class for a tiny model to learn."""
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * freq * t + 3 * np.sin(2 * np.pi * 5 * t))
    return (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def write_tone_corpus(root: Path, n_per_class: int = 6, labels=("low", "high"), seed: int = 0) -> Path:
    """Labelled tones as WAV files + a manifest with train/dev/test splits and given transcripts."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    splits = ["train"] * (n_per_class - 2) + ["dev", "test"]
    for k, label in enumerate(labels):
        for j in range(n_per_class):
            path = root / f"{label}_{j}.wav"
            sf.write(path, tone(200 * (k + 1) + 10 * j, rng.uniform(0.6, 1.4), rng), 16000)
            rows.append({"path": path.name, "label": label, "split": splits[j], "speaker": f"s{j}",
                         "transcript": f"this is {'great' if k else 'terrible'} today"})
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def train_tiny_model(root: Path, tiny_encoders: dict, seed: int = 0, labels=("low", "high")) -> Path:
    """A tone model on the tiny random-init encoders (about a second)."""
    from dmha.config import load
    from dmha.experiment import train

    manifest = write_tone_corpus(root / "corpus", n_per_class=4, labels=labels)
    overrides = [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
                 f"features.cache_dir={root / 'cache'}", "train.max_epochs=1", "train.batch_size=4",
                 "model.hidden_layers=1", "train.crop_s=0", f"seed={seed}"]
    train(manifest, root / "run", load(None, overrides), progress=False)
    return root / "run" / "model"


@pytest.fixture(scope="session")
def serve_model_dir(tiny_encoders, tmp_path_factory) -> Path:
    """The tone model the service tests share, trained once (a test that changes a model copies it)."""
    return train_tiny_model(tmp_path_factory.mktemp("serve_model"), tiny_encoders)
