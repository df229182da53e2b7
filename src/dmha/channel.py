"""What a new microphone and line do to speech, as augmentation techniques (issue 35): telephone band,
low-bitrate codecs, and gain with clipping.

A model that heard two studios hears every phone, laptop and messaging app as something new; these
reproduce the commonest differences so training can see them. Each takes a 16 kHz mono float32
waveform and a numpy Generator (all randomness from it, so a seeded caller gets identical output) and
returns a waveform of the same length, aligned with the input (codec delay removed):

  telephone   8 kHz narrowband: 300-3400 Hz band-pass, G.711 mu-law (8-bit) quantisation
  codec       Opus (6-24 kbit/s, speech mode) or MP3 (16-32 kbit/s) through PyAV, decoded back
  gain        a level change of -20 to +12 dB, hard-clipped at full scale (a hot microphone)
"""
from __future__ import annotations

import io

import numpy as np
import soxr

from .audio import SAMPLE_RATE

TELEPHONE_RATE = 8000
TELEPHONE_BAND_HZ = (300.0, 3400.0)
MU = 255.0  # G.711 mu-law
OPUS_KBPS = (6, 8, 12, 16, 24)
MP3_KBPS = (16, 24, 32)
GAIN_DB = (-20.0, 12.0)


def telephone(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Narrowband telephone speech: down to 8 kHz, 300-3400 Hz band-pass, mu-law 8-bit, back up to 16 kHz."""
    from scipy.signal import butter, sosfiltfilt

    wave = np.asarray(wave, np.float32)
    if wave.size < 64:
        return wave.copy()
    narrow = soxr.resample(wave, SAMPLE_RATE, TELEPHONE_RATE, quality="HQ").astype(np.float64)
    sos = butter(4, TELEPHONE_BAND_HZ, btype="bandpass", fs=TELEPHONE_RATE, output="sos")
    narrow = sosfiltfilt(sos, narrow) if narrow.size > 30 else narrow  # zero phase: stays aligned
    peak = float(np.abs(narrow).max())
    level = peak if peak > 0 else 1.0
    x = np.clip(narrow / level, -1.0, 1.0)
    companded = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    quantised = np.round((companded + 1.0) * 127.5) / 127.5 - 1.0  # 8 bits
    expanded = np.sign(quantised) * ((1.0 + MU) ** np.abs(quantised) - 1.0) / MU * level
    back = soxr.resample(expanded.astype(np.float32), TELEPHONE_RATE, SAMPLE_RATE, quality="HQ")
    return _same_length(back, wave.size)


def codec(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Through a lossy speech or music codec at a low bitrate (Opus or MP3, drawn), decoded back."""
    wave = np.asarray(wave, np.float32)
    if wave.size < 64:
        return wave.copy()
    if rng.random() < 0.5:
        name, rate, kbps, container = "libopus", 48000, OPUS_KBPS[int(rng.integers(len(OPUS_KBPS)))], "ogg"
    else:
        name, rate, kbps, container = "libmp3lame", 16000, MP3_KBPS[int(rng.integers(len(MP3_KBPS)))], "mp3"
    decoded = through_codec(wave, name, rate, kbps * 1000, container)
    return _aligned(decoded, wave)


def gain(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A level change drawn in GAIN_DB, clipped at full scale as an overdriven input would be."""
    wave = np.asarray(wave, np.float32)
    db = float(rng.uniform(*GAIN_DB))
    return np.clip(wave * np.float32(10 ** (db / 20)), -1.0, 1.0).astype(np.float32)


def through_codec(wave: np.ndarray, codec_name: str, rate: int, bit_rate: int, container: str) -> np.ndarray:
    """Encode a 16 kHz mono waveform with PyAV (resampled to the codec's `rate`) and decode it back to 16 kHz."""
    import av

    samples = wave if rate == SAMPLE_RATE else soxr.resample(wave, SAMPLE_RATE, rate, quality="HQ")
    samples = np.clip(samples, -1.0, 1.0).astype(np.float32)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec_name, rate=rate, layout="mono")
        stream.bit_rate = bit_rate
        if codec_name == "libopus":
            stream.options = {"application": "voip"}
        frame_size = stream.codec_context.frame_size or 1152
        fmt = stream.codec_context.format.name  # the encoder's sample format (flt, s16, fltp, ...)
        for start in range(0, samples.size, frame_size):
            chunk = samples[start:start + frame_size]
            frame = av.AudioFrame.from_ndarray(_as_format(chunk, fmt), format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    buffer.seek(0)
    parts = []
    with av.open(buffer, "r") as source:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in source.decode(audio=0):
            for converted in resampler.resample(frame):
                parts.append(converted.to_ndarray().reshape(-1))
        for converted in resampler.resample(None):
            parts.append(converted.to_ndarray().reshape(-1))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def _as_format(chunk: np.ndarray, fmt: str) -> np.ndarray:
    """One mono frame's samples in PyAV's layout for a sample format: planar (1, n), packed (1, n) too for mono."""
    data = chunk[None, :]
    if fmt.startswith("s16"):
        return np.round(data * 32767).astype(np.int16)
    if fmt.startswith("s32"):
        return np.round(data * 2147483647).astype(np.int32)
    return data.astype(np.float32)


def _aligned(decoded: np.ndarray, reference: np.ndarray, max_lag_s: float = 0.1) -> np.ndarray:
    """The decoded signal shifted by the codec's delay (found by cross-correlation) and cut to the reference."""
    max_lag = int(max_lag_s * SAMPLE_RATE)
    n = min(reference.size, decoded.size)
    if n < 64:
        return _same_length(decoded, reference.size)
    a = reference[:n].astype(np.float64)
    b = decoded[: n + max_lag].astype(np.float64)
    size = 1 << int(np.ceil(np.log2(a.size + b.size)))
    corr = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)[: max_lag + 1]
    lag = int(np.argmax(corr))
    return _same_length(decoded[lag:], reference.size)


def _same_length(wave: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, np.float32)
    out[: min(n, wave.size)] = wave[:n]
    return out
