"""Uploaded audio → 16 kHz mono, with the duration limits checked before the samples are decoded.

libsndfile (dmha's loader) reads wav, flac, ogg/opus, mp3 and aiff. Browsers record webm/opus
(Chromium) or mp4/aac (Safari), which it cannot read, so the service falls back to PyAV (FFmpeg;
shipped with faster-whisper) for those containers only. The container is chosen from the file's
magic bytes, never probed: FFmpeg's probing would also accept playlists that open other files.
Errors are AudioErrors naming the upload, never the service's temp path. Sample rates above
MAX_RATE are refused before decoding: a 300 KB FLAC of silence at 655 kHz decodes to a minute of
audio that needs about 0.5 GB and 9 s of CPU.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import SAMPLE_RATE, AudioError, audio_duration, load_audio, load_audio_array

log = logging.getLogger(__name__)

MAX_RATE = 192_000  # Hz: studio recordings go up to here; speech needs 16 kHz
_MAGIC = ((0, b"\x1aE\xdf\xa3", "matroska"), (0, b"OggS", "ogg"), (4, b"ftyp", "mp4"))


def decode_upload(path: Path, name: str, max_duration_s: float) -> np.ndarray:
    """The whole upload as a (n,) float32 array at 16 kHz; AudioError if bad or too long."""
    try:
        _check_header(path, name, max_duration_s)
        return load_audio(path, max_seconds=max_duration_s)  # the decoded length too: headers can lie
    except AudioError as err:
        container = _av_container(path)
        if container is None or not err.reason.startswith("cannot decode"):
            raise AudioError(name, err.reason) from None
        return _decode_av(path, container, name, max_duration_s)


def long_upload_input(path: Path, name: str, max_duration_s: float) -> tuple[Path | np.ndarray, int | None]:
    """What predict_long should read: the file itself when libsndfile can stream it, else the decoded array."""
    try:
        _check_header(path, name, max_duration_s)
        return path, None
    except AudioError as err:
        container = _av_container(path)
        if container is None or not err.reason.startswith("cannot decode"):
            raise AudioError(name, err.reason) from None
        return _decode_av(path, container, name, max_duration_s), SAMPLE_RATE


def _check_header(path: Path, name: str, max_duration_s: float) -> None:
    """Duration and sample rate from the header (libsndfile formats), before any sample is decoded."""
    _check_duration(audio_duration(path), name, max_duration_s)
    _check_rate(sf.info(str(path)).samplerate, name)


def _check_rate(rate: int, name: str) -> None:
    if rate > MAX_RATE:
        raise AudioError(name, f"sample rate {rate} Hz is over the service's limit of {MAX_RATE} Hz")


def _check_duration(seconds: float, name: str, limit: float) -> None:
    if seconds > limit:
        raise AudioError(name, f"audio lasts {seconds:.1f} s, over this endpoint's limit of {limit:g} s")


def _av_container(path: Path) -> str | None:
    """The FFmpeg demuxer for this file's magic bytes, if it is one the fallback accepts."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    return next((fmt for offset, magic, fmt in _MAGIC if head[offset:offset + len(magic)] == magic), None)


def _decode_av(path: Path, container: str, name: str, max_duration_s: float) -> np.ndarray:
    """Decode the first audio stream with PyAV, stopping as soon as it passes the duration limit."""
    try:
        import av
    except ImportError:
        raise AudioError(name, "cannot decode audio (webm/mp4 need PyAV: pip install av)") from None
    chunks: list[np.ndarray] = []
    try:
        with open(path, "rb") as handle, av.open(handle, format=container) as media:
            if not media.streams.audio:
                raise AudioError(name, "no audio stream in the file")
            stream = media.streams.audio[0]
            rate = stream.rate or stream.codec_context.sample_rate
            if not rate:
                raise AudioError(name, "cannot decode audio (unknown sample rate)")
            _check_rate(rate, name)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            limit, total = max_duration_s * rate, 0
            for frame in media.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))  # packed mono float: (1, n) → (n,)
                    total += chunks[-1].size
                if total > limit:
                    _check_duration(total / rate, name, max_duration_s)
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except av.FFmpegError as err:
        raise AudioError(name, f"cannot decode audio ({err.strerror or type(err).__name__})") from None
    if not chunks:
        raise AudioError(name, "contains no samples")
    wave = np.concatenate(chunks)  # (n,) at the stream's rate
    _check_duration(wave.size / rate, name, max_duration_s)
    log.debug("%s: decoded %s with PyAV (%d samples at %d Hz)", name, container, wave.size, rate)
    return load_audio_array(wave, int(rate), name=name)
