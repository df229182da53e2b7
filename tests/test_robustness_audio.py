"""The bad-audio matrix: every row is a file (or array) a real corpus may hold, and what the loader does with it.

Each case ends in a correct result (checked) or an AudioError whose one-line message is
`<path>: <reason>`. docs/reference/robustness.md ("Audio input") lists the rows with these test names.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf
import soxr

from dmha.audio import SAMPLE_RATE, AudioError, audio_duration, file_digest, load_audio, load_audio_array

HAS_MP3 = "MP3" in sf.available_formats()
needs_mp3 = pytest.mark.skipif(not HAS_MP3, reason="this libsndfile cannot write MP3 (needs libsndfile >= 1.1)")


def tone(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    """A sine of `seconds` at `rate`, float32 (n,)."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, wave: np.ndarray, rate: int = SAMPLE_RATE, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate, subtype=subtype)
    return path


def good_bytes(tmp: Path, suffix: str) -> bytes:
    """The bytes of a valid 1 s tone file of that format."""
    return write(tmp / f"source{suffix}", tone(1.0, SAMPLE_RATE)).read_bytes()


def peak_hz(wave: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """The strongest frequency of a wave (Hann window), to 1 Hz on a 1 s wave."""
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spectrum) * rate / wave.size)


def assert_one_line(err: AudioError, path: Path | str, fragment: str) -> None:
    """The contract: one line, starting with the path, the reason naming the problem."""
    message = str(err)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{path}: "), message
    assert err.path == str(path)
    assert fragment in err.reason, message


# ---- files that must fail: (builder(tmp) -> path, reason fragment, audio_duration: fragment or "ok") ----

def zero_bytes(suffix: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / f"empty{suffix}"
        path.touch()
        return path
    return build


def truncated(suffix: str, keep: int) -> Callable[[Path], Path]:
    """The first `keep` bytes of a valid file (a download or copy cut short)."""
    def build(tmp: Path) -> Path:
        path = tmp / f"cut{keep}{suffix}"
        path.write_bytes(good_bytes(tmp, suffix)[:keep])
        return path
    return build


def patched(suffix: str, offset: int, data: bytes, name: str) -> Callable[[Path], Path]:
    """A valid file with bytes at `offset` overwritten (a corrupt header field)."""
    def build(tmp: Path) -> Path:
        raw = bytearray(good_bytes(tmp, suffix))
        raw[offset:offset + len(data)] = data
        path = tmp / f"{name}{suffix}"
        path.write_bytes(bytes(raw))
        return path
    return build


def text_named(suffix: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / f"notes{suffix}"
        path.write_text("this is a transcript, not audio\nsecond line\n", encoding="utf-8")
        return path
    return build


def random_bytes(suffix: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / f"noise{suffix}"
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        return path
    return build


def non_finite(value: float, subtype: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        wave = tone(0.2, SAMPLE_RATE).astype(np.float64)
        wave[100] = value
        return write(tmp / f"bad_{subtype}.wav", wave, subtype=subtype)
    return build


def one_sample(rate: int) -> Callable[[Path], Path]:
    return lambda tmp: write(tmp / f"one_{rate}.wav", np.array([0.25], np.float32), rate)


def dangling_symlink(tmp: Path) -> Path:
    link = tmp / "dangling.wav"
    link.symlink_to(tmp / "deleted.wav")
    return link


def symlink_loop(tmp: Path) -> Path:
    (tmp / "loop_a.wav").symlink_to(tmp / "loop_b.wav")
    (tmp / "loop_b.wav").symlink_to(tmp / "loop_a.wav")
    return tmp / "loop_a.wav"


def symlink_to_folder(tmp: Path) -> Path:
    (tmp / "folder").mkdir()
    (tmp / "folder.wav").symlink_to(tmp / "folder")
    return tmp / "folder.wav"


def bad_file_at(name: str) -> Callable[[Path], Path]:
    """A text file at a unicode / space-containing path: the message must name that path as given."""
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not audio", encoding="utf-8")
        return path
    return build


def wav_rate(rate: int) -> bytes:
    """The fmt-chunk sample rate and byte rate fields of a mono float WAV, for patching at offset 24."""
    return struct.pack("<II", rate, (rate * 4) % 2**32)


DECODE = "cannot decode audio ("
BAD_FILES = [
    pytest.param(zero_bytes(".wav"), "empty file (0 bytes)", "empty file", id="zero-byte-wav"),
    pytest.param(zero_bytes(".flac"), "empty file (0 bytes)", "empty file", id="zero-byte-flac"),
    pytest.param(zero_bytes(".mp3"), "empty file (0 bytes)", "empty file", id="zero-byte-mp3"),
    pytest.param(text_named(".wav"), DECODE + "Format not recognised)", DECODE, id="text-named-wav"),
    pytest.param(text_named(".flac"), DECODE + "Format not recognised)", DECODE, id="text-named-flac"),
    pytest.param(text_named(".mp3"), DECODE + "Format not recognised)", DECODE, id="text-named-mp3"),
    pytest.param(random_bytes(".wav"), DECODE, DECODE, id="random-bytes-wav"),
    pytest.param(random_bytes(".mp3"), DECODE + "Format not recognised)", DECODE, id="random-bytes-mp3"),
    pytest.param(truncated(".wav", 4), DECODE, DECODE, id="wav-cut-in-RIFF-tag"),
    pytest.param(truncated(".wav", 12), DECODE, DECODE, id="wav-cut-before-fmt"),
    pytest.param(truncated(".wav", 20), DECODE + "Error in WAV", DECODE, id="wav-cut-in-fmt"),
    pytest.param(truncated(".wav", 44), "contains no samples", "contains no samples", id="wav-header-only"),
    pytest.param(patched(".wav", 0, b"JUNK", "riff"), DECODE + "Format not recognised)", DECODE,
                 id="wav-corrupt-RIFF-magic"),
    pytest.param(patched(".wav", 20, b"\xff\xff", "fmt"), DECODE, DECODE, id="wav-corrupt-format-tag"),
    pytest.param(patched(".wav", 22, b"\xff\xff", "chan"), DECODE, DECODE, id="wav-corrupt-channel-count"),
    pytest.param(patched(".wav", 24, wav_rate(0), "rate0"), DECODE, DECODE, id="wav-rate-0"),
    pytest.param(patched(".wav", 24, wav_rate(1), "rate1"), "sample rate 1 Hz is outside", "sample rate 1 Hz",
                 id="wav-rate-1Hz"),
    pytest.param(patched(".wav", 24, wav_rate(2**31 - 1), "ratebig"), "is outside", "is outside",
                 id="wav-rate-2G"),
    pytest.param(truncated(".flac", 4), DECODE, DECODE, id="flac-cut-in-magic"),
    pytest.param(truncated(".flac", 20), DECODE, DECODE, id="flac-cut-in-streaminfo"),
    pytest.param(truncated(".flac", 100), DECODE, "ok", id="flac-cut-after-header"),
    pytest.param(truncated(".flac", 3000), DECODE, "ok", id="flac-cut-mid-stream"),
    pytest.param(patched(".flac", 0, b"fLaX", "magic"), DECODE + "Format not recognised)", DECODE,
                 id="flac-corrupt-magic"),
    # STREAMINFO starts at byte 8; bytes 18-20 hold its 20-bit sample rate (and the channel bits): zero them.
    pytest.param(patched(".flac", 18, b"\x00\x00\x00", "rate0"), DECODE, DECODE, id="flac-corrupt-streaminfo"),
    pytest.param(truncated(".mp3", 4), DECODE + "Format not recognised)", DECODE, id="mp3-cut-at-4-bytes",
                 marks=needs_mp3),
    pytest.param(truncated(".mp3", 100), DECODE + "Format not recognised)", DECODE, id="mp3-cut-in-first-frame",
                 marks=needs_mp3),
    pytest.param(non_finite(np.nan, "FLOAT"), "contains NaN/Inf samples", "ok", id="nan-float-wav"),
    pytest.param(non_finite(np.inf, "FLOAT"), "contains NaN/Inf samples", "ok", id="inf-float-wav"),
    pytest.param(non_finite(-np.inf, "FLOAT"), "contains NaN/Inf samples", "ok", id="minus-inf-float-wav"),
    pytest.param(non_finite(np.nan, "DOUBLE"), "contains NaN/Inf samples", "ok", id="nan-double-wav"),
    pytest.param(one_sample(44100), "too short: 1 sample(s) at 44100 Hz make none at 16000 Hz", "ok",
                 id="one-sample-at-44k1"),
    pytest.param(one_sample(96000), "too short", "ok", id="one-sample-at-96k"),
    pytest.param(dangling_symlink, "file not found", "file not found", id="dangling-symlink"),
    pytest.param(symlink_loop, "cannot access file (Too many levels of symbolic links)", "cannot access file (Too many levels of symbolic links)", id="symlink-loop"),
    pytest.param(symlink_to_folder, "not a regular file (a directory)", "not a regular file", id="symlink-to-folder"),
    pytest.param(bad_file_at("héllo wörld/ça va.wav"), DECODE, DECODE, id="bad-file-unicode-path"),
    pytest.param(bad_file_at("日本語 フォルダ/音声 1.wav"), DECODE, DECODE, id="bad-file-cjk-path"),
    pytest.param(bad_file_at("with  two  spaces .wav"), DECODE, DECODE, id="bad-file-spaces-path"),
]


@pytest.mark.parametrize("build, reason, duration", BAD_FILES)
def test_bad_file_is_a_one_line_error(tmp_path: Path, build, reason: str, duration: str) -> None:
    path = build(tmp_path)
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert_one_line(err.value, path, reason)
    with pytest.raises(AudioError) as err:  # str paths behave the same
        load_audio(str(path))
    assert_one_line(err.value, path, reason)
    if duration == "ok":  # the header is fine (the damage is in the samples): the length is still known
        assert audio_duration(path) > 0
    else:
        with pytest.raises(AudioError) as err:
            audio_duration(path)
        assert_one_line(err.value, path, duration)


# ---- damaged files that still hold audio: the readable part, no crash and no huge allocation ----

def test_wav_cut_mid_data_loads_the_samples_that_are_there(tmp_path: Path) -> None:
    raw = good_bytes(tmp_path, ".wav")  # 1 s PCM_16 at 16 kHz: 44-byte header + 32000 bytes
    path = tmp_path / "half.wav"
    path.write_bytes(raw[:44 + 2 * 8000])
    out = load_audio(path)
    assert out.shape == (8000,)
    np.testing.assert_allclose(out, tone(0.5, SAMPLE_RATE), atol=1e-4)
    assert audio_duration(path) == pytest.approx(0.5)


@needs_mp3
def test_mp3_cut_mid_stream_loads_the_frames_that_are_there(tmp_path: Path) -> None:
    raw = good_bytes(tmp_path, ".mp3")
    path = tmp_path / "half.mp3"
    path.write_bytes(raw[: len(raw) // 2])
    out = load_audio(path)
    assert 0.2 * SAMPLE_RATE < out.size < 0.8 * SAMPLE_RATE
    assert np.isfinite(out).all() and peak_hz(out) == pytest.approx(440, abs=5)


@needs_mp3
@pytest.mark.parametrize("offset", [20, 22])
def test_mp3_header_claiming_years_is_decoded_by_what_it_holds(tmp_path: Path, offset: int) -> None:
    # The Xing frame count overwritten: the header says months of audio; reading by the header's
    # count once asked numpy for 8.96 TiB (MemoryError). Decoding block by block reads what is there.
    path = patched(".mp3", offset, b"\xff\xff", f"xing{offset}")(tmp_path)
    assert audio_duration(path) > 3600 * 24  # the header's claim is what audio_duration reports
    out = load_audio(path)
    assert out.size == pytest.approx(SAMPLE_RATE, rel=0.1)
    assert np.isfinite(out).all()


def test_wav_header_claiming_more_data_than_the_file_holds(tmp_path: Path) -> None:
    raw = bytearray(good_bytes(tmp_path, ".wav"))
    raw[40:44] = struct.pack("<I", 2**31)  # data chunk size: 2 GB
    path = tmp_path / "liar.wav"
    path.write_bytes(bytes(raw))
    assert load_audio(path).shape == (SAMPLE_RATE,)


# ---- content cases: silence, clipping, tiny and long audio ----

@pytest.mark.parametrize("suffix, rate", [(".wav", 16000), (".flac", 44100), (".wav", 8000)])
def test_all_zero_audio_is_valid_silence(tmp_path: Path, suffix: str, rate: int) -> None:
    out = load_audio(write(tmp_path / f"zeros{suffix}", np.zeros(rate, np.float32), rate))
    assert abs(out.size - SAMPLE_RATE) <= 1 and not out.any()


@pytest.mark.parametrize("peak", [1.0, 1.5, 8.0])
def test_float_samples_at_and_beyond_full_scale_are_kept(tmp_path: Path, peak: float) -> None:
    wave = np.clip(tone(0.5, SAMPLE_RATE, amp=2 * peak), -peak, peak)  # flat-topped at ±peak
    out = load_audio(write(tmp_path / "clipped.wav", wave, subtype="FLOAT"))
    np.testing.assert_array_equal(out, wave)  # no silent clipping or rescaling: normalisation is later
    assert out.max() == peak and out.min() == -peak


def test_pcm_full_scale_reads_within_minus_one_to_one(tmp_path: Path) -> None:
    wave = np.array([-1.0, -0.5, 0.0, 0.5, 1.0] * 100, np.float32)
    out = load_audio(write(tmp_path / "full.wav", wave, subtype="PCM_16"))
    assert out.min() == -1.0 and 0.9999 < out.max() < 1.0


def test_resampled_clipping_overshoots_but_stays_finite(tmp_path: Path) -> None:
    square = np.sign(tone(0.5, 48000, freq=200)).astype(np.float32)  # hard-clipped ±1
    out = load_audio(write(tmp_path / "square.wav", square, 48000, subtype="FLOAT"))
    assert np.isfinite(out).all() and 1.0 < np.abs(out).max() < 1.3  # Gibbs overshoot, kept as is


@pytest.mark.parametrize("rate, samples", [(16000, 1), (8000, 2), (11025, 1)])
def test_one_sample_audio(tmp_path: Path, rate: int, samples: int) -> None:
    out = load_audio(one_sample(rate)(tmp_path))
    assert out.shape == (samples,) and np.isfinite(out).all()


@pytest.mark.parametrize("rate", [16000, 8000, 44100, 48000])
def test_tenth_of_a_second(tmp_path: Path, rate: int) -> None:
    out = load_audio(write(tmp_path / "short.wav", tone(0.1, rate), rate))
    assert abs(out.size - 1600) <= 1


def write_long(path: Path, seconds: float, rate: int, block_s: float = 60.0) -> Path:
    """A 440 Hz tone of `seconds`, written a block at a time (PCM_16 mono)."""
    total, done = int(seconds * rate), 0
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        while done < total:
            n = min(int(block_s * rate), total - done)
            t = (done + np.arange(n)) / rate
            f.write((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
            done += n
    return path


def test_ten_minutes_load_with_the_right_length(tmp_path: Path) -> None:
    path = write_long(tmp_path / "ten_minutes.wav", 600, 22050)
    assert audio_duration(path) == pytest.approx(600.0)
    out = load_audio(path)
    assert abs(out.size - 600 * SAMPLE_RATE) <= 1 and out.dtype == np.float32
    assert peak_hz(out[-SAMPLE_RATE:]) == pytest.approx(440, abs=1)  # the end is there and in tune


def test_block_by_block_decoding_equals_one_read(tmp_path: Path) -> None:
    # > 2 read blocks (1 Mi frames each), stereo float: the block joins must be invisible
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal((2 * (1 << 20) + 12345, 2))).astype(np.float32)
    path = write(tmp_path / "blocks.wav", wave, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), wave.mean(axis=1, dtype=np.float32))
    out = load_audio(path, sample_rate=8000)
    np.testing.assert_array_equal(out, soxr.resample(wave.mean(axis=1, dtype=np.float32), 16000, 8000, "HQ"))


@pytest.mark.slow
def test_one_hour_header_digest_and_streamed_read(tmp_path: Path) -> None:
    from dmha.segment import stream_audio

    path = write_long(tmp_path / "one_hour.wav", 3600, SAMPLE_RATE, block_s=300)
    assert audio_duration(path) == pytest.approx(3600.0)  # header only: instant
    assert len(file_digest(path)) == 64  # streamed, 1 MiB at a time
    stream = stream_audio(path, block_s=30.0)
    total, largest = 0, 0
    for block in stream.blocks:  # never the whole hour in memory
        total, largest = total + block.size, max(largest, block.size)
    assert total == 3600 * SAMPLE_RATE and largest <= 30 * SAMPLE_RATE
    out = load_audio(path)  # the in-memory path still works: 230 MB of float32
    assert out.size == 3600 * SAMPLE_RATE


# ---- rates, sample formats, channels ----

@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
@pytest.mark.parametrize("freq", [440.0, 3000.0])
def test_sample_rates_become_16k_and_keep_the_pitch(tmp_path: Path, rate: int, freq: float) -> None:
    wave = tone(1.0, rate, freq)
    out = load_audio(write(tmp_path / f"r{rate}.wav", wave, rate))
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.size - round(wave.size * SAMPLE_RATE / rate)) <= 1
    assert peak_hz(out) == pytest.approx(freq, abs=1)
    assert np.abs(out[500:-500]).max() == pytest.approx(0.5, abs=0.01)  # amplitude kept too


@pytest.mark.parametrize("subtype, atol", [("PCM_U8", 1 / 128), ("PCM_16", 1 / 2**15), ("PCM_24", 1 / 2**23),
                                           ("PCM_32", 1e-7), ("FLOAT", 0.0), ("DOUBLE", 1e-7)])
def test_sample_formats(tmp_path: Path, subtype: str, atol: float) -> None:
    wave = tone(0.25, SAMPLE_RATE)
    path = write(tmp_path / f"{subtype}.wav", wave, subtype=subtype)
    assert sf.info(path).subtype == subtype
    out = load_audio(path)
    assert out.dtype == np.float32 and out.shape == wave.shape
    np.testing.assert_allclose(out, wave, atol=atol)


@pytest.mark.parametrize("suffix, subtype", [(".flac", "PCM_16"), (".flac", "PCM_24"), (".ogg", "VORBIS"),
                                             pytest.param(".mp3", "MPEG_LAYER_III", marks=needs_mp3)])
def test_compressed_formats_keep_length_and_pitch(tmp_path: Path, suffix: str, subtype: str) -> None:
    out = load_audio(write(tmp_path / f"a{suffix}", tone(1.0, SAMPLE_RATE), subtype=subtype))
    assert abs(out.size - SAMPLE_RATE) <= 1
    assert peak_hz(out) == pytest.approx(440, abs=1)


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_is_mixed_down_to_the_channel_mean(tmp_path: Path, channels: int) -> None:
    base = tone(0.5, 48000)
    wave = np.stack([base * (c + 1) / channels for c in range(channels)], axis=1)  # (n, channels)
    path = write(tmp_path / f"ch{channels}.wav", wave, 48000, subtype="FLOAT")
    assert sf.info(path).channels == channels
    out = load_audio(path)
    expected = soxr.resample(wave.mean(axis=1, dtype=np.float32), 48000, SAMPLE_RATE, "HQ")
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(load_audio(write(tmp_path / "ch16k.wav", wave, subtype="FLOAT")),
                               wave.mean(axis=1), atol=1e-7)


# ---- paths: unicode, spaces, symlinks, permissions ----

@pytest.mark.parametrize("name", ["héllo wörld/ça va.wav", "日本語 フォルダ/音声 1.flac", " leading space.wav",
                                  "emoji 🎤/clip.wav", "quote's \"and\" semi;colon.wav"])
def test_unicode_and_space_paths_load(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, tone(0.1, SAMPLE_RATE))
    assert load_audio(path).size == 1600 and audio_duration(path) == pytest.approx(0.1)
    assert load_audio(str(path)).size == 1600 and len(file_digest(path)) == 64


def test_valid_symlink_loads_the_target(tmp_path: Path) -> None:
    target = write(tmp_path / "real" / "clip.wav", tone(0.2, SAMPLE_RATE))
    link = tmp_path / "link.wav"
    link.symlink_to(target)
    relative = tmp_path / "real" / "rel.wav"
    relative.symlink_to("clip.wav")
    for path in (link, relative):
        np.testing.assert_array_equal(load_audio(path), load_audio(target))
        assert file_digest(path) == file_digest(target)


PERMISSION_CHECK = textwrap.dedent("""
    import json, os, sys
    from dmha.audio import AudioError, audio_duration, file_digest, load_audio
    os.chdir(sys.argv[1])  # relative names from here: the unprivileged user needs no access above it
    if os.geteuid() == 0:
        os.setgroups([]); os.setgid(65534); os.setuid(65534)
    results = {}
    for name in ("ok.wav", "locked.wav", "hidden/inside.wav"):
        for call in (load_audio, audio_duration, file_digest):
            try:
                call(name)
                results[f"{call.__name__} {name}"] = "ok"
            except AudioError as err:
                results[f"{call.__name__} {name}"] = str(err)
    print(json.dumps({"uid": os.geteuid(), "results": results}))
""")


def test_unreadable_files_say_permission_denied(tmp_path: Path) -> None:
    # chmod does not stop root, so as root the child drops to uid 65534 after importing dmha
    # (the interpreter and venv may live where that user cannot read); otherwise it runs as we are.
    folder = tmp_path / "perm"
    write(folder / "ok.wav", tone(0.1, SAMPLE_RATE))
    write(folder / "locked.wav", tone(0.1, SAMPLE_RATE)).chmod(0)
    write(folder / "hidden" / "inside.wav", tone(0.1, SAMPLE_RATE))
    (folder / "hidden").chmod(0o600)  # listable, but not searchable: stat fails
    folder.chmod(0o755)
    try:
        done = subprocess.run([sys.executable, "-c", PERMISSION_CHECK, str(folder)], capture_output=True,
                              text=True, timeout=120)
    finally:
        (folder / "locked.wav").chmod(0o644)
        (folder / "hidden").chmod(0o755)
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip("running as root without CAP_SETUID: cannot drop to an unprivileged user")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["uid"] != 0
    results = report["results"]
    for call in ("load_audio", "audio_duration", "file_digest"):
        assert results[f"{call} ok.wav"] == "ok"  # the control: the same user reads a normal file
        assert results[f"{call} locked.wav"] == "locked.wav: permission denied"
        assert results[f"{call} hidden/inside.wav"] == "hidden/inside.wav: permission denied"


# ---- in-memory arrays (uploads, the Python API) ----

@pytest.mark.parametrize(
    "wave, rate, fragment",
    [
        pytest.param([[0.1, 0.2], [0.3]], 16000, "not an array of samples", id="ragged-list"),
        pytest.param(np.array([1e300, 0.0] * 50), 16000, "overflow float32", id="float64-beyond-float32"),
        pytest.param(np.full((100, 2), 3e38, np.float32), 16000, "overflow float32", id="mixdown-overflow"),
        pytest.param(np.array([0.1, np.inf]), 16000, "contains NaN/Inf samples", id="inf-float64"),
        pytest.param(np.zeros(100, np.uint16), 16000, "dtype uint16", id="uint16"),
        pytest.param(np.zeros(100, bool), 16000, "dtype bool", id="bool"),
        pytest.param(np.zeros(100, np.complex64), 16000, "dtype complex64", id="complex"),
        pytest.param(np.zeros(100, np.float32), 999, "sample rate 999 Hz is outside", id="rate-999"),
        pytest.param(np.zeros(100, np.float32), 2**40, "is outside", id="rate-2e40"),
        pytest.param(np.zeros(100, np.float32), True, "positive integer", id="rate-bool"),
        pytest.param(np.zeros(2, np.float32), 96000, "too short", id="2-samples-at-96k"),
        pytest.param(np.zeros((0, 2), np.float32), 16000, "contains no samples", id="no-frames"),
        pytest.param(np.float32(0.5), 16000, "expected shape", id="scalar"),
    ],
)
def test_bad_arrays(wave, rate, fragment: str) -> None:
    with pytest.raises(AudioError) as err:
        load_audio_array(wave, rate, name="upload 1.wav")
    assert_one_line(err.value, "upload 1.wav", fragment)


def test_array_target_rate_is_checked() -> None:
    with pytest.raises(AudioError, match="target sample rate must be a positive integer"):
        load_audio_array(np.zeros(100, np.float32), 16000, target_rate=0)


def test_uint8_array_is_8_bit_pcm() -> None:
    out = load_audio_array(np.array([0, 64, 128, 192, 255], np.uint8), 16000)
    np.testing.assert_allclose(out, [-1.0, -0.5, 0.0, 0.5, 127 / 128])
