"""Audio in containers libsndfile cannot read: webm/matroska (Chromium's recordings, opus), mp4/m4a
(AAC: phones, Safari) and Ogg streams it refuses, decoded with PyAV (FFmpeg, shipped with faster-whisper).

The container is chosen from the file's magic bytes, never probed: FFmpeg's probing would also accept
playlists that open other files. Decoding stops as soon as the audio passes `max_seconds`, and a
sample rate above `max_rate` is refused before any sample is decoded. Errors are AudioErrors naming
the file, as for every other format (dmha.audio), so the CLI, the Python API and the service report
them alike.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from .audio import AudioError

log = logging.getLogger(__name__)
_MAGIC = ((0, b"\x1aE\xdf\xa3", "matroska"), (0, b"OggS", "ogg"), (4, b"ftyp", "mp4"))
EXTENSIONS = frozenset({".webm", ".mkv", ".mka", ".mp4", ".m4a", ".aac", ".3gp"})


def container_of(path: str | os.PathLike[str]) -> str | None:
    """The FFmpeg demuxer for this file's magic bytes, if it is one dmha decodes with PyAV."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    return next((fmt for offset, magic, fmt in _MAGIC if head[offset:offset + len(magic)] == magic), None)


def _av(name):
    try:
        import av
    except ImportError:
        raise AudioError(name, "cannot decode audio (webm/mp4/m4a need PyAV: pip install av)") from None
    return av


def decode(path: str | os.PathLike[str], container: str, name=None, max_seconds: float | None = None,
           max_rate: int | None = None) -> tuple[np.ndarray, int]:
    """The first audio stream as (n,) mono float32 at its own rate, and that rate."""
    name = name or path
    av = _av(name)
    chunks: list[np.ndarray] = []
    try:
        with open(path, "rb") as handle, av.open(handle, format=container) as media:
            if not media.streams.audio:
                raise AudioError(name, "no audio stream in the file")
            stream = media.streams.audio[0]
            rate = stream.rate or stream.codec_context.sample_rate
            if not rate:
                raise AudioError(name, "cannot decode audio (unknown sample rate)")
            if max_rate is not None and rate > max_rate:
                raise AudioError(name, f"sample rate {rate} Hz is over the limit of {max_rate} Hz")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            limit, total = (max_seconds or float("inf")) * rate, 0
            for frame in media.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))  # packed mono float: (1, n) → (n,)
                    total += chunks[-1].size
                if total > limit:
                    raise AudioError(name, f"audio lasts more than the limit of {max_seconds:g} s")
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except av.FFmpegError as err:
        raise AudioError(name, f"cannot decode audio ({err.strerror or type(err).__name__})") from None
    except OSError as err:
        raise AudioError(name, f"cannot read ({err.strerror or err})") from None
    if not chunks:
        raise AudioError(name, "contains no samples")
    wave = np.concatenate(chunks)  # (n,) at the stream's rate
    if not np.isfinite(wave).all():
        raise AudioError(name, "contains NaN/Inf samples")
    log.debug("%s: decoded %s with PyAV (%d samples at %d Hz)", name, container, wave.size, rate)
    return wave.astype(np.float32, copy=False), int(rate)


def duration(path: str | os.PathLike[str], container: str, name=None) -> float:
    """Length in seconds from the container's metadata (decoded when it does not say)."""
    name = name or path
    av = _av(name)
    try:
        with open(path, "rb") as handle, av.open(handle, format=container) as media:
            if not media.streams.audio:
                raise AudioError(name, "no audio stream in the file")
            stream = media.streams.audio[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            if media.duration:
                return media.duration / 1_000_000  # av.time_base
    except av.FFmpegError as err:
        raise AudioError(name, f"cannot decode audio ({err.strerror or type(err).__name__})") from None
    wave, rate = decode(path, container, name)
    return wave.size / rate
