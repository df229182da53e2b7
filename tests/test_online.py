"""Training on augmented audio: online extraction (encoders in the training step) and cached copies."""
import numpy as np
import pytest
import torch

from conftest import write_tone_corpus
from dmha.config import ConfigError, load
from dmha.encoders import load_speech_encoder
from dmha.experiment import train
from dmha.task import feature_mode
from dmha.store import FeatureStore
from dmha.batches import collate_waves, crop_wave
from dmha.training import encode_waves


def _config(tiny_encoders, cache, *extra):
    return load(None, [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
                       f"features.cache_dir={cache}", "train.max_epochs=2", "train.batch_size=4",
                       "model.hidden_layers=1", "train.crop_s=0.5", *extra])


def test_crop_wave_repeats_short_and_windows_long():
    rng = np.random.default_rng(0)
    short = np.arange(3, dtype=np.float32)
    assert crop_wave(short, 7, rng).tolist() == [0, 1, 2, 0, 1, 2, 0]
    long = np.arange(100, dtype=np.float32)
    window = crop_wave(long, 10, rng)
    assert window.size == 10 and np.all(np.diff(window) == 1)
    assert crop_wave(long, 0, rng) is long


def test_feature_mode_selection(tiny_encoders, tmp_path):
    assert feature_mode(_config(tiny_encoders, tmp_path)) == "cached"
    assert feature_mode(_config(tiny_encoders, tmp_path, "aug.enabled=true")) == "online"
    assert feature_mode(_config(tiny_encoders, tmp_path, "aug.enabled=true", "aug.cached_copies=2")) == "cached"
    assert feature_mode(_config(tiny_encoders, tmp_path, "features.mode=online")) == "online"
    with pytest.raises(ConfigError, match="cached_copies"):
        feature_mode(_config(tiny_encoders, tmp_path, "aug.enabled=true", "features.mode=cached"))


def test_encode_waves_pads_and_masks(tiny_encoders):
    enc = load_speech_encoder(tiny_encoders["speech"])
    waves = [np.zeros(16000, np.float32), np.zeros(8000, np.float32)]
    speech, mask = encode_waves(enc, waves, "cpu")
    assert speech.shape[:3] == (2, enc.info.num_layers, mask.shape[1]) and mask[0].all() and not mask[1].all()
    batch = collate_waves([{"wave": w, "text": torch.ones(3, 4), "target": 1} for w in waves])
    assert len(batch["waves"]) == 2 and batch["text"].shape == (2, 3, 4) and batch["target"].tolist() == [1, 1]


def test_online_training_runs_the_frozen_encoder_on_augmented_audio(tiny_encoders, tmp_path, monkeypatch):
    manifest = write_tone_corpus(tmp_path / "c", n_per_class=5)
    config = _config(tiny_encoders, tmp_path / "cache", "aug.enabled=true", "aug.p=1.0")
    enc = load_speech_encoder(tiny_encoders["speech"], pad_to_s=0.0)
    seen = []
    original = type(enc).encode

    def spy(self, waves, *args, **kwargs):
        seen.append(len(waves))
        return original(self, waves, *args, **kwargs)

    monkeypatch.setattr(type(enc), "encode", spy)
    first = train(manifest, tmp_path / "run", config, progress=False)
    assert first["feature_mode"] == "online"
    # 6 training items × 2 epochs pass through the encoder inside training steps (after the cached pass)
    assert sum(n for n in seen if n <= 4) >= 12
    second = train(manifest, tmp_path / "run2", config, progress=False)
    assert second["dev_macro_f1"] == first["dev_macro_f1"] and second["per_class"] == first["per_class"]


def test_cached_augmented_copies_are_computed_once(tiny_encoders, tmp_path):
    manifest = write_tone_corpus(tmp_path / "c", n_per_class=4)
    config = _config(tiny_encoders, tmp_path / "cache", "aug.enabled=true", "aug.cached_copies=2", "aug.p=1.0")
    metrics = train(manifest, tmp_path / "run", config, progress=False)
    assert metrics["feature_mode"] == "cached"
    store = FeatureStore(next((tmp_path / "cache" / "speech").iterdir()))
    copies = [key for key in store.keys() if "-aug" in key]
    assert len(copies) == 2 * 4  # 2 training items per class × 2 classes × 2 copies
    shards = {p: p.stat().st_mtime_ns for p in store.shard_paths()}
    train(manifest, tmp_path / "run2", config, progress=False)
    assert {p: p.stat().st_mtime_ns for p in FeatureStore(store.folder).shard_paths()} == shards  # nothing new
