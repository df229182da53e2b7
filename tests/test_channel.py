"""The channel techniques (issue 35, item 3): telephone band, low-bitrate codecs, gain with clipping; each
seeded, same length and aligned; as cached copies they add augmented views to the store and change
no plain entry."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import write_tone_corpus
from dmha.augment import Augmenter
from dmha.channel import codec, gain, telephone, through_codec
from dmha.config import AugmentConfig, ConfigError, load
from dmha.experiment import train
from dmha.store import FeatureStore

SR = 16000


def speechy(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Harmonics of a gliding 120-220 Hz voice with a 4 Hz syllable envelope, plus a 6 kHz hiss."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 100 * t / max(seconds, 1e-9)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 15)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    hiss = 0.05 * np.sin(2 * np.pi * 6000 * t)
    return (0.3 * voice / np.abs(voice).max() + hiss + 0.001 * rng.standard_normal(t.size)).astype(np.float32)


def band_energy(wave: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(wave)) ** 2
    f = np.fft.rfftfreq(wave.size, 1 / SR)
    return float(spectrum[(f >= low) & (f < high)].sum() / spectrum.sum())


@pytest.mark.parametrize("technique", [telephone, codec, gain])
def test_seeded_same_length_and_finite(technique):
    wave = speechy(1.0)
    a, b = technique(wave, np.random.default_rng(3)), technique(wave, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == wave.shape and a.dtype == np.float32 and np.isfinite(a).all()
    assert not np.array_equal(a, wave)
    assert technique(wave[:10], np.random.default_rng(0)).shape == (10,)  # too short to filter: kept


def test_telephone_keeps_the_band_and_drops_the_rest():
    wave = speechy(1.0)
    line = telephone(wave, np.random.default_rng(0))
    assert band_energy(wave, 4000, 8000) > 0.01 and band_energy(line, 4000, 8000) < 1e-4
    assert band_energy(line, 0, 200) < band_energy(wave, 0, 200) / 5  # the 120-200 Hz fundamental is cut
    assert np.corrcoef(wave, line)[0, 1] > 0.5  # still the same speech, in time


@pytest.mark.parametrize("name,rate,container", [("libopus", 48000, "ogg"), ("libmp3lame", 16000, "mp3")])
def test_codecs_decode_back_and_codec_realigns(name, rate, container):
    wave = speechy(1.0)
    decoded = through_codec(wave, name, rate, 16000, container)
    assert decoded.size >= wave.size * 0.9
    for seed in range(4):
        out = codec(wave, np.random.default_rng(seed))
        assert np.corrcoef(wave, out)[0, 1] > 0.5, seed  # aligned: a codec delay left in would decorrelate


def test_gain_clips_at_full_scale():
    wave = speechy(1.0)
    outs = [gain(wave, np.random.default_rng(s)) for s in range(20)]
    assert all(np.abs(o).max() <= 1.0 for o in outs)
    ratios = [np.abs(o).max() / np.abs(wave).max() for o in outs]
    assert min(ratios) < 0.2 and max(ratios) > 2.0  # -20 .. +12 dB (clipped near the top)


def test_the_augmenter_draws_them_and_the_config_names_them():
    wave = speechy(0.5)
    for technique in ("telephone", "codec", "gain"):
        augment = Augmenter(AugmentConfig(enabled=True, p=1.0, techniques=[technique]), SR)
        assert not np.array_equal(augment(wave, np.random.default_rng(0)), wave)
    assert load(None, []).aug.techniques == ["speed", "reverb", "noise"]  # the paper's stay the default
    with pytest.raises(ConfigError, match="unknown technique 'radio'"):
        load(None, ['aug.techniques=["radio"]'])


def test_cached_views_add_copies_and_change_no_plain_entry(tiny_encoders, tmp_path):
    manifest = write_tone_corpus(tmp_path / "c", n_per_class=4)
    common = [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
              "train.max_epochs=1", "train.batch_size=4", "model.hidden_layers=1", "train.crop_s=0"]
    plain_cache, aug_cache = tmp_path / "plain", tmp_path / "aug"
    train(manifest, tmp_path / "run_plain", load(None, [*common, f"features.cache_dir={plain_cache}"]), progress=False)
    train(manifest, tmp_path / "run_aug", load(None, [*common, f"features.cache_dir={aug_cache}", "aug.enabled=true",
                                                      "aug.cached_copies=2", "aug.p=1.0",
                                                      'aug.techniques=["telephone","codec"]']), progress=False)
    plain = FeatureStore(next((plain_cache / "speech").iterdir()))
    augmented = FeatureStore(next((aug_cache / "speech").iterdir()))
    copies = [key for key in augmented.keys() if "-aug" in key]
    assert len(copies) == 2 * 4 and set(augmented.keys()) - set(copies) == set(plain.keys())
    for key in plain.keys():  # the views change no plain entry
        np.testing.assert_array_equal(np.asarray(augmented.get(key)), np.asarray(plain.get(key)))
    base = {key.split("-aug")[0] for key in copies}
    assert all(any(k.startswith(b) for k in plain.keys()) for b in base)
    changed = [not np.allclose(np.asarray(augmented.get(c)), np.asarray(plain.get(next(k for k in plain.keys()
                                                                                       if c.startswith(k)))))
               for c in copies]
    assert all(changed)  # every view is a different signal's features
