"""load_audio and friends: formats, rates, mixdown, and a one-line error for each bad input."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dmha.audio import AudioError, audio_duration, file_digest, load_audio, load_audio_array


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """A quiet 440 Hz sine, shape (n,) or (n, channels)."""
    t = np.arange(int(round(seconds * rate))) / rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1)


def write(path: Path, wave: np.ndarray, rate: int = 16000, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate, subtype=subtype)
    return path


def assert_one_line_error(err: pytest.ExceptionInfo[AudioError], path: Path, fragment: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert err.value.path == str(path)
    assert fragment in err.value.reason


def test_loads_16k_mono_float32_unchanged(tmp_path: Path) -> None:
    wave = tone(0.5, 16000)
    out = load_audio(write(tmp_path / "a.wav", wave, subtype="FLOAT"))
    assert out.dtype == np.float32 and out.ndim == 1 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, wave)


def test_stereo_mixdown_is_the_channel_mean(tmp_path: Path) -> None:
    wave = tone(0.25, 16000, channels=2)
    out = load_audio(write(tmp_path / "s.wav", wave, subtype="FLOAT"))
    np.testing.assert_allclose(out, wave.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resamples_to_16k_with_the_right_length(tmp_path: Path, rate: int) -> None:
    wave = tone(0.7, rate)
    out = load_audio(write(tmp_path / f"r{rate}.wav", wave, rate))
    assert abs(len(out) - len(wave) * 16000 / rate) <= 1
    assert out.dtype == np.float32
    # 440 Hz survives resampling: compare with the tone generated at 16 kHz, away from the edges
    np.testing.assert_allclose(out[200:-200], tone(0.7, 16000)[: len(out)][200:-200], atol=2e-3)


def test_other_target_rate(tmp_path: Path) -> None:
    out = load_audio(write(tmp_path / "a.wav", tone(1.0, 16000)), sample_rate=8000)
    assert abs(len(out) - 8000) <= 1


@pytest.mark.parametrize("subtype, atol", [("PCM_16", 1e-4), ("PCM_24", 1e-6), ("FLOAT", 0.0)])
def test_bit_depths(tmp_path: Path, subtype: str, atol: float) -> None:
    wave = tone(0.2, 16000)
    out = load_audio(write(tmp_path / f"{subtype}.wav", wave, subtype=subtype))
    np.testing.assert_allclose(out, wave, atol=atol)


@pytest.mark.parametrize("suffix", [".flac", ".ogg"])
def test_compressed_formats(tmp_path: Path, suffix: str) -> None:
    out = load_audio(write(tmp_path / f"a{suffix}", tone(0.5, 16000)))
    assert abs(len(out) - 8000) <= 1


@pytest.mark.parametrize("name", ["héllo wörld/ça va.wav", "日本語 フォルダ/音声 1.wav", "with space.wav"])
def test_unicode_and_space_paths(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, tone(0.1, 16000))
    assert len(load_audio(path)) == 1600
    assert len(load_audio(str(path))) == 1600


def test_silence_is_valid(tmp_path: Path) -> None:
    out = load_audio(write(tmp_path / "z.wav", np.zeros(1600, np.float32)))
    assert out.shape == (1600,) and not out.any()


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert_one_line_error(err, path, "file not found")


def test_directory_is_not_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "dir.wav"
    path.mkdir()
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert_one_line_error(err, path, "not a regular file")


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert_one_line_error(err, path, "empty file (0 bytes)")


def test_text_file_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\nsecond line\n")
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert_one_line_error(err, path, "cannot decode audio (")
    assert "Error opening" not in str(err.value)  # libsndfile's prefix repeats the path


def test_truncated_wav_header(tmp_path: Path) -> None:
    good = write(tmp_path / "good.wav", tone(0.1, 16000))
    path = tmp_path / "cut.wav"
    path.write_bytes(good.read_bytes()[:20])
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert_one_line_error(err, path, "cannot decode audio")


def test_header_only_wav_has_no_samples(tmp_path: Path) -> None:
    path = write(tmp_path / "none.wav", np.zeros(0, np.float32))
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert_one_line_error(err, path, "contains no samples")
    with pytest.raises(AudioError, match="contains no samples"):
        audio_duration(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_samples(tmp_path: Path, bad: float) -> None:
    wave = tone(0.1, 16000)
    wave[10] = bad
    path = write(tmp_path / "nan.wav", wave, subtype="FLOAT")
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert_one_line_error(err, path, "contains NaN/Inf samples")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_permission_denied(tmp_path: Path) -> None:
    path = write(tmp_path / "locked.wav", tone(0.1, 16000))
    path.chmod(0)
    try:
        for call in (load_audio, audio_duration, file_digest):
            with pytest.raises(AudioError) as err:
                call(path)
            assert_one_line_error(err, path, "permission denied")
    finally:
        path.chmod(0o644)


def test_audio_duration_reads_the_header(tmp_path: Path) -> None:
    assert audio_duration(write(tmp_path / "a.flac", tone(1.5, 22050), 22050)) == pytest.approx(1.5)
    with pytest.raises(AudioError, match="file not found"):
        audio_duration(tmp_path / "missing.wav")
    (tmp_path / "t.wav").write_text("text")
    with pytest.raises(AudioError, match=r"t\.wav: cannot decode audio"):
        audio_duration(tmp_path / "t.wav")


def test_file_digest_streams_sha256(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = os.urandom((1 << 20) * 2 + 123)  # spans several 1 MiB blocks
    path.write_bytes(data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(AudioError, match="file not found"):
        file_digest(tmp_path / "missing.wav")


def test_array_mixdown_and_resampling() -> None:
    wave = tone(0.5, 48000, channels=2)
    out = load_audio_array(wave, 48000)
    assert out.dtype == np.float32 and abs(len(out) - 8000) <= 1
    np.testing.assert_allclose(load_audio_array(wave, 16000), wave.mean(axis=1), atol=1e-7)


def test_array_int16_is_scaled() -> None:
    out = load_audio_array(np.array([0, 16384, -32768], np.int16), 16000)
    np.testing.assert_allclose(out, [0.0, 0.5, -1.0])


@pytest.mark.parametrize(
    "wave, rate, fragment",
    [
        (np.zeros((2, 2, 2), np.float32), 16000, "expected shape"),
        (np.zeros(0, np.float32), 16000, "contains no samples"),
        (np.zeros((10, 0), np.float32), 16000, "contains no samples"),
        (np.array([0.0, np.nan], np.float32), 16000, "contains NaN/Inf samples"),
        (np.array(["a", "b"]), 16000, "dtype"),
        (np.zeros(10, np.float32), 0, "sample rate"),
        (np.zeros(10, np.float32), 16000.0, "sample rate"),
    ],
)
def test_array_errors(wave: np.ndarray, rate: int, fragment: str) -> None:
    with pytest.raises(AudioError) as err:
        load_audio_array(wave, rate, name="upload.wav")
    assert str(err.value).startswith("upload.wav: ") and fragment in err.value.reason


def test_max_seconds_is_checked_on_the_decoded_samples(tmp_path: Path) -> None:
    path = write(tmp_path / "three.flac", tone(3.0, 16000))
    assert load_audio(path, max_seconds=3.5).size == 48000
    with pytest.raises(AudioError) as err:
        load_audio(path, max_seconds=1)
    assert_one_line_error(err, path, "more than the limit of 1 s")


def test_many_channels_are_read_in_blocks_bounded_by_samples(tmp_path: Path, monkeypatch) -> None:
    # A block used to be 2**20 frames whatever the channel count: 1 GB for a 255-channel Ogg Vorbis
    # file of a few KB (found by the atheris fuzzer as an out-of-memory).
    import dmha.audio as audio

    monkeypatch.setattr(audio, "_READ_SAMPLES", 4096)
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, (5000, 64)).astype(np.float32)
    path = write(tmp_path / "64ch.wav", wave, subtype="FLOAT")
    with sf.SoundFile(path) as handle:
        blocks = list(audio.read_blocks(handle, path))
    assert max(b.size for b in blocks) == 4096 // 64 and sum(b.size for b in blocks) == 5000
    np.testing.assert_allclose(load_audio(path), wave.mean(axis=1), atol=1e-6)
