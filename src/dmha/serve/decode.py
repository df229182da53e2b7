"""Uploaded audio → 16 kHz mono, with the duration limits checked before the samples are decoded.

libsndfile reads wav, flac, ogg/opus, mp3 and aiff; browsers record webm/opus (Chromium) or mp4/aac
(Safari), which dmha.containers decodes with PyAV, here under this service's limits.
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
from ..containers import container_of, decode

log = logging.getLogger(__name__)

MAX_RATE = 192_000  # Hz: studio recordings go up to here; speech needs 16 kHz


def decode_upload(path: Path, name: str, max_duration_s: float) -> np.ndarray:
    """The whole upload as a (n,) float32 array at 16 kHz; AudioError if bad or too long."""
    container = container_of(path)
    try:
        _check_header(path, name, max_duration_s)
        return load_audio(path, max_seconds=max_duration_s)  # the decoded length too: headers can lie
    except AudioError as err:
        if container is None or not err.reason.startswith("cannot decode"):
            raise AudioError(name, _endpoint_words(err.reason, max_duration_s)) from None
        return _decode_av(path, container, name, max_duration_s)


def long_upload_input(path: Path, name: str, max_duration_s: float) -> tuple[Path | np.ndarray, int | None]:
    """What predict_long should read: the file itself when libsndfile can stream it, else the decoded array."""
    try:
        _check_header(path, name, max_duration_s)
        return path, None
    except AudioError as err:
        container = container_of(path)
        if container is None or not err.reason.startswith("cannot decode"):
            raise AudioError(name, err.reason) from None
        return _decode_av(path, container, name, max_duration_s), SAMPLE_RATE


def _check_header(path: Path, name: str, max_duration_s: float) -> None:
    """Duration and sample rate from the header (libsndfile formats), before any sample is decoded; a
    PyAV container is left to the caller's fallback (its limits are checked while it decodes)."""
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, ValueError, EOFError):
        info = None
    if info is None and container_of(path) is not None:
        raise AudioError(name, "cannot decode audio with libsndfile (a PyAV container)")
    _check_duration(audio_duration(path), name, max_duration_s)  # dmha.audio names what is wrong
    _check_rate(info.samplerate, name)


def _check_rate(rate: int, name: str) -> None:
    if rate > MAX_RATE:
        raise AudioError(name, f"sample rate {rate} Hz is over the service's limit of {MAX_RATE} Hz")


def _check_duration(seconds: float, name: str, limit: float) -> None:
    if seconds > limit:
        raise AudioError(name, f"audio lasts {seconds:.1f} s, over this endpoint's limit of {limit:g} s")


def _endpoint_words(reason: str, limit: float) -> str:
    """The decoder's 'more than the limit' in the words of this endpoint's limit."""
    if reason.startswith("audio lasts more than the limit"):
        return f"audio lasts more than this endpoint's limit of {limit:g} s"
    return reason


def _decode_av(path: Path, container: str, name: str, max_duration_s: float) -> np.ndarray:
    """Decode the first audio stream with PyAV (dmha.containers), with this service's limits."""
    try:
        wave, rate = decode(path, container, name, max_seconds=max_duration_s, max_rate=MAX_RATE)
    except AudioError as err:
        words = err.reason.replace("over the limit of", "over the service's limit of")
        raise AudioError(name, _endpoint_words(words, max_duration_s)) from None
    _check_duration(wave.size / rate, name, max_duration_s)
    return load_audio_array(wave, int(rate), name=name)
