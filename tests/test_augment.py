"""Online augmentation: exact effect of each technique, corpus folders, seeding and silent input."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dmha.augment import (
    AugmentConfig, Augmenter, add_noise, babble, coloured_noise, fit_length, random_room, reverberate,
    speed_perturb, synthetic_rir,
)
from dmha.config import validate

SR = 16000


def speechy(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Noise-like test signal with an amplitude envelope; its autocorrelation is sharp at lag 0."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * np.arange(n) / SR)
    return (0.1 * envelope * rng.standard_normal(n)).astype(np.float32)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


def xcorr_peak_lag(a: np.ndarray, b: np.ndarray) -> int:
    """Lag of b relative to a at the cross-correlation peak (0 = aligned)."""
    corr = np.fft.irfft(np.fft.rfft(b, 2 * a.size) * np.conj(np.fft.rfft(a, 2 * a.size)))
    lag = int(np.argmax(np.abs(corr)))
    return lag if lag < a.size else lag - 2 * a.size


def write(path: Path, wave: np.ndarray, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave if channels == 1 else np.stack([wave] * channels, axis=1), SR)
    return path


def toy_rir(delay: int = 37) -> np.ndarray:
    """A delayed direct path followed by a decaying tail, like a measured RIR file."""
    rng = np.random.default_rng(1)
    tail = 0.3 * rng.standard_normal(2000) * np.exp(-np.arange(2000) / 400)
    return np.concatenate([np.zeros(delay), [1.0], tail]).astype(np.float32)


def enabled(**kwargs) -> AugmentConfig:
    return AugmentConfig(enabled=True, p=1.0, **kwargs)


@pytest.mark.parametrize("factor", [0.9, 1.0, 1.1])
def test_speed_changes_duration_by_factor(factor: float) -> None:
    wave = speechy(1.0)
    out = speed_perturb(wave, factor, SR)
    assert out.dtype == np.float32
    assert abs(out.size - wave.size / factor) <= 1


def test_reverb_keeps_length_alignment_and_rms() -> None:
    wave = speechy(1.0)
    for rir in (toy_rir(), synthetic_rir(np.random.default_rng(3), SR)):
        out = reverberate(wave, rir)
        assert out.shape == wave.shape and out.dtype == np.float32
        assert abs(xcorr_peak_lag(wave, out)) <= 1
        assert np.sqrt(np.mean(out.astype(np.float64) ** 2)) == pytest.approx(np.sqrt(np.mean(wave**2.0)), rel=1e-4)
        assert not np.allclose(out, wave)


def test_random_rooms_are_physically_reachable() -> None:
    import pyroomacoustics as pra

    rng = np.random.default_rng(0)
    for _ in range(500):  # large rooms cannot reach a short RT60; inverse_sabine would raise
        dims, rt60 = random_room(rng)
        assert np.all((3.0 <= dims) & (dims <= 10.0)) and 0.2 <= rt60 <= 0.8
        absorption, _ = pra.inverse_sabine(rt60, dims)
        assert 0.0 < absorption < 1.0


@pytest.mark.parametrize("target", [0.0, 7.5, 15.0])
def test_noise_hits_target_snr(target: float) -> None:
    wave = speechy(1.0)
    rng = np.random.default_rng(0)
    for noise in (coloured_noise(wave.size, 2.0, rng), fit_length(speechy(0.3, seed=5), wave.size, rng)):
        assert abs(snr_db(wave, add_noise(wave, noise, target)) - target) < 0.5


def test_coloured_noise_is_unit_rms_and_tilted() -> None:
    rng = np.random.default_rng(0)
    white, brown = coloured_noise(8000, 0.0, rng), coloured_noise(8000, 2.0, rng)
    assert np.sqrt(np.mean(brown.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)
    low = lambda x: np.sum(np.abs(np.fft.rfft(x))[:200] ** 2) / np.sum(np.abs(np.fft.rfft(x)) ** 2)
    assert low(brown) > 0.9 > 0.2 > low(white)


def test_fit_length_loops_and_crops() -> None:
    rng = np.random.default_rng(0)
    short = np.arange(5, dtype=np.float32)
    looped = fit_length(short, 12, rng)
    assert looped.size == 12 and set(looped) == set(short)
    assert np.all(np.diff(looped) % 5 == 1)  # consecutive, wrapping 4 → 0
    assert fit_length(np.arange(100.0), 10, rng).size == 10


def test_babble_mixes_several_pool_utterances() -> None:
    pool = [speechy(0.5, seed=s) for s in range(6)]
    mix = babble(pool, SR, np.random.default_rng(0))
    assert mix.shape == (SR,) and np.isfinite(mix).all()
    assert 1.0 < np.sqrt(np.mean(mix.astype(np.float64) ** 2)) < 5.0  # 3-5 roughly independent unit-RMS talkers


def test_augmenter_noise_snr_within_range_with_babble() -> None:
    config = enabled(techniques=["noise"], snr_db_min=5.0, snr_db_max=10.0)
    augment = Augmenter(config, SR, babble_pool=[speechy(0.7, seed=s) for s in range(5)])
    wave = speechy(1.0)
    for seed in range(6):
        assert 4.5 < snr_db(wave, augment(wave, np.random.default_rng(seed))) < 10.5


def test_same_seed_same_output_for_every_technique() -> None:
    wave = speechy(0.5)
    for technique in ("speed", "reverb", "noise"):
        runs = [Augmenter(enabled(techniques=[technique], speeds=[0.9, 1.1]), SR, rir_pool_size=2)
                for _ in range(2)]
        a = [runs[0](wave, np.random.default_rng(7)) for _ in range(2)]
        b = runs[1](wave, np.random.default_rng(7))
        np.testing.assert_array_equal(a[0], b)
        np.testing.assert_array_equal(a[1], b)  # cached synthetic rooms do not change the draw
        assert b.dtype == np.float32


def test_probability_gates_augmentation() -> None:
    wave = speechy(0.05)
    never = Augmenter(AugmentConfig(enabled=True, p=0.0), SR)
    off = Augmenter(AugmentConfig(enabled=False, p=1.0), SR)
    rng = np.random.default_rng(0)
    assert np.array_equal(never(wave, rng), wave) and np.array_equal(off(wave, rng), wave)
    half = Augmenter(AugmentConfig(enabled=True, p=0.5, techniques=["noise"]), SR)
    changed = sum(not np.array_equal(half(wave, rng), wave) for _ in range(200))
    assert 70 < changed < 130


def test_silent_input_gives_no_nan() -> None:
    silence = np.zeros(SR // 2, np.float32)
    augment = Augmenter(enabled(), SR, babble_pool=[silence, silence, silence], rir_pool_size=1)
    rng = np.random.default_rng(0)
    for technique in ("speed", "reverb", "noise", "noise", "noise"):
        out = augment.apply(technique, silence, rng)
        assert np.isfinite(out).all() and out.dtype == np.float32


def test_rirs_noises_layout_excludes_noise_files(tmp_path: Path) -> None:
    root = tmp_path / "RIRS_NOISES"
    rir = toy_rir()
    write(root / "simulated_rirs" / "smallroom" / "Room001" / "Room001-00001.wav", rir)
    write(root / "real_rirs_isotropic_noises" / "RVB2014_type1_rir_largeroom1_near_angla.wav", rir, channels=2)
    write(root / "real_rirs_isotropic_noises" / "RVB2014_type1_noise_largeroom1_1.wav", speechy(0.2))
    write(root / "pointsource_noises" / "noise-free-sound-0001.wav", speechy(0.2))
    augment = Augmenter(enabled(techniques=["reverb"], rir_dir=str(root)), SR)
    assert sorted(p.name for p in augment.rir_files) == ["RVB2014_type1_rir_largeroom1_near_angla.wav",
                                                          "Room001-00001.wav"]
    wave = speechy(0.5)
    out = augment(wave, np.random.default_rng(0))
    assert out.shape == wave.shape and abs(xcorr_peak_lag(wave, out)) <= 1


def test_musan_layout_and_unreadable_file_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "musan"
    write(root / "noise" / "free-sound" / "noise-free-sound-0000.wav", speechy(0.2, seed=3))
    write(root / "music" / "fma" / "music-fma-0000.wav", speechy(2.0, seed=4))
    (root / "speech" / "librivox").mkdir(parents=True)
    (root / "speech" / "librivox" / "broken.wav").write_bytes(b"not audio at all")
    (root / "README").write_text("not audio")
    augment = Augmenter(enabled(techniques=["noise"], noise_dir=str(root), snr_db_min=3.0, snr_db_max=3.0), SR)
    assert len(augment.noise_files) == 3
    wave = speechy(1.0)
    with caplog.at_level(logging.WARNING, logger="dmha.augment"):
        outs = [augment(wave, np.random.default_rng(seed)) for seed in range(12)]
    assert all(abs(snr_db(wave, out) - 3.0) < 0.5 for out in outs)
    assert len(augment.noise_files) == 2 and "broken.wav" in caplog.text


def test_empty_or_missing_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=f"^{tmp_path / 'empty'}: no noise audio files found"):
        Augmenter(enabled(noise_dir=str(tmp_path / "empty")), SR)
    with pytest.raises(ValueError, match="RIR folder not found"):
        Augmenter(enabled(rir_dir=str(tmp_path / "missing")), SR)


def test_all_files_unreadable_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "n" / "silent.wav", np.zeros(100, np.float32))
    augment = Augmenter(enabled(techniques=["noise"], noise_dir=str(tmp_path / "n")), SR)
    with pytest.raises(ValueError, match="none of the noise audio files could be read"):
        augment(speechy(0.1), np.random.default_rng(0))


@pytest.mark.parametrize("changes, fragment", [
    ({"p": 1.5}, "aug.p"),
    ({"speeds": []}, "aug.speeds"),
    ({"speeds": [0.0]}, "aug.speeds"),
    ({"snr_db_min": 20.0}, "aug.snr_db_min"),
    ({"techniques": ["pitch"]}, "valid: speed, reverb, noise"),
    ({"techniques": []}, "aug.techniques"),
])
def test_invalid_config_names_the_key(changes: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        validate(AugmentConfig(**changes), "aug.")


def test_unknown_technique_and_bad_shape() -> None:
    augment = Augmenter(enabled(), SR)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="valid: speed, reverb, noise"):
        augment.apply("pitch", speechy(0.1), rng)
    with pytest.raises(ValueError, match="1-D"):
        augment.apply("noise", np.zeros((2, 10), np.float32), rng)
