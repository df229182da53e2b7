"""Audio in: any file or array → mono float32 at 16 kHz, with one-line errors for bad input."""
from __future__ import annotations

import hashlib
import logging
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
# Extensions importers treat as audio; all are decoded by libsndfile (mp3 needs libsndfile ≥ 1.1).
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
                              ".webm", ".mkv", ".mka", ".mp4", ".m4a", ".aac", ".3gp"})  # the last: PyAV
_DIGEST_BLOCK = 1 << 20
_READ_SAMPLES = 1 << 20  # samples per read over all channels: memory follows what is decoded, not what a
# header claims, and not the channel count either (1 M frames of a 255-channel Ogg Vorbis were 1 GB)
_MIN_RATE, _MAX_RATE = 1_000, 1_000_000  # Hz; outside this a header is corrupt (a 1 Hz header made 1 GB)
_ARRAY_NAME = "<array>"
# libsndfile's words that mislead once _check_file has passed: its mp3 probe says this of unknown bytes.
_MISLEADING = {"File does not exist or is not a regular file (possibly a pipe?)": "Format not recognised"}


class AudioError(ValueError):
    """A file or array that cannot be used as audio; the message is one line, `<path>: <problem>`."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever libsndfile said
        shown = self.path if self.path.isprintable() else repr(self.path)  # a file name may hold a newline
        super().__init__(f"{shown}: {self.reason}")


def load_audio(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE, *,
               max_seconds: float | None = None) -> np.ndarray:
    """Read an audio file as a mono float32 1-D array at `sample_rate`.

    Channels are averaged; other rates are resampled with soxr (HQ). Silent audio is valid.
    Decoding is block by block, so a header that overstates its length costs nothing, and
    `max_seconds` is enforced on the decoded samples, so one that understates it cannot smuggle
    in hours of audio (a 4 KB compressed file can decode to minutes of many-channel audio).

    Args:
        path: any format libsndfile decodes (wav, flac, ogg/opus, mp3, aiff).
        sample_rate: rate of the returned array, in Hz.
        max_seconds: refuse audio that decodes to more than this (None: no limit).

    Returns:
        float32 array of shape (n,).

    Raises:
        AudioError: missing, unreadable, empty, undecodable, sample-free, too short, too long or
            non-finite audio, or a sample rate outside 1000-1000000 Hz.

    Example:
        >>> wave = load_audio("clip.wav")  # (n,) float32 at 16 kHz
    """
    _check_file(path, allow_empty=False)
    _check_rate(sample_rate, path, "target sample rate")
    try:
        with sf.SoundFile(os.fspath(path)) as handle:
            rate = _check_rate(handle.samplerate, path)
            blocks = list(read_blocks(handle, path, max_seconds=max_seconds))
            mono = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]  # (n,)
    except AudioError:
        raise
    except PermissionError:
        raise AudioError(path, "permission denied") from None
    except MemoryError:
        raise AudioError(path, "too long to decode in memory") from None
    except (sf.SoundFileError, RuntimeError, ValueError, EOFError) as err:
        container = _container(path)
        if container is None:
            raise AudioError(path, f"cannot decode audio ({decode_reason(err)})") from None
        from . import containers  # webm, mp4/m4a: PyAV

        mono, rate = containers.decode(path, container, max_seconds=max_seconds, max_rate=_MAX_RATE)
    return _resample(mono, rate, sample_rate, path)


def _container(path) -> str | None:
    from .containers import container_of

    return container_of(path)


def load_audio_array(
    wave: np.ndarray, sample_rate: int, *, target_rate: int = SAMPLE_RATE, name: str = _ARRAY_NAME
) -> np.ndarray:
    """Apply load_audio's checks, mixdown and resampling to an in-memory waveform.

    Args:
        wave: shape (n,) or (n, channels); float, or integer PCM (scaled to [-1, 1)).
        sample_rate: rate of `wave`, in Hz.
        target_rate: rate of the returned array, in Hz.
        name: how errors refer to this array.

    Returns:
        float32 array of shape (n',) at `target_rate`.

    Raises:
        AudioError: wrong shape or dtype, bad rate, no samples, NaN/Inf or float32-overflowing samples.

    Example:
        >>> load_audio_array(np.zeros((48000, 2), np.float32), 48000).shape
        (16000,)
    """
    try:
        array = np.asarray(wave)
    except (ValueError, TypeError) as err:  # ragged nested lists and the like
        raise AudioError(name, f"not an array of samples ({err})") from None
    if array.ndim not in (1, 2):
        raise AudioError(name, f"expected shape (n,) or (n, channels), got {array.shape}")
    rate = _check_rate(sample_rate, name)
    _check_rate(target_rate, name, "target sample rate")
    data = _as_float32(array, name)
    if data.ndim == 1:
        data = data[:, None]  # (n, 1)
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(name, "contains no samples")
    return _resample(_mono(data, name), rate, target_rate, name)


def audio_duration(path: str | os.PathLike[str]) -> float:
    """Length in seconds from the file header, without decoding the samples."""
    _check_file(path, allow_empty=False)
    try:
        info = sf.info(os.fspath(path))
    except PermissionError:
        raise AudioError(path, "permission denied") from None
    except (sf.SoundFileError, RuntimeError, ValueError, EOFError) as err:
        container = _container(path)
        if container is None:
            raise AudioError(path, f"cannot decode audio ({decode_reason(err)})") from None
        from . import containers  # webm, mp4/m4a: PyAV

        return containers.duration(path, container)
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(path, "contains no samples")
    return info.frames / _check_rate(info.samplerate, path)


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex of the file's bytes, streamed, so feature caches notice edited audio."""
    _check_file(path, allow_empty=True)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(_DIGEST_BLOCK):
                digest.update(block)
    except PermissionError:
        raise AudioError(path, "permission denied") from None
    return digest.hexdigest()


def is_audio_file(path: Path) -> bool:
    """Whether an importer should treat this file as audio, judged by its extension."""
    return path.suffix.lower() in AUDIO_EXTENSIONS


def _check_file(path: str | os.PathLike[str], *, allow_empty: bool) -> None:
    """Turn the usual file-system problems into AudioErrors before libsndfile sees the file."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise AudioError(path, "file not found") from None
    except PermissionError:
        raise AudioError(path, "permission denied") from None
    except OSError as err:
        raise AudioError(path, f"cannot access file ({err.strerror or err})") from None
    except ValueError as err:  # e.g. an embedded NUL byte
        raise AudioError(path, f"invalid path ({err})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a special file"
        raise AudioError(path, f"not a regular file ({kind})")
    if not os.access(path, os.R_OK):
        raise AudioError(path, "permission denied")
    if info.st_size == 0 and not allow_empty:
        raise AudioError(path, "empty file (0 bytes)")


def decode_reason(err: BaseException) -> str:
    """libsndfile's own words, without the 'Error opening <path>:' prefix that repeats the path."""
    reason = (getattr(err, "error_string", None) or str(err) or type(err).__name__).strip().rstrip(".")
    return _MISLEADING.get(reason, reason)


def _check_rate(rate: object, name: str | os.PathLike[str], what: str = "sample rate") -> int:
    """A plausible integer rate in Hz, or an AudioError naming it."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise AudioError(name, f"{what} must be a positive integer, got {rate!r}")
    if not _MIN_RATE <= rate <= _MAX_RATE:
        raise AudioError(name, f"{what} {rate} Hz is outside {_MIN_RATE}-{_MAX_RATE} Hz")
    return int(rate)


def _as_float32(array: np.ndarray, name: str) -> np.ndarray:
    """Float arrays are cast; integer PCM is scaled to [-1, 1) the way libsndfile does."""
    if np.issubdtype(array.dtype, np.floating):
        with np.errstate(over="ignore"):
            data = array.astype(np.float32, copy=False)
        if data is not array and not np.isfinite(data).all() and np.isfinite(array).all():
            raise AudioError(name, "sample values too large (overflow float32)")
        return data
    if array.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128 (as in WAV files)
        return ((array.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if np.issubdtype(array.dtype, np.signedinteger):
        scale = float(2 ** (8 * array.dtype.itemsize - 1))
        return (array.astype(np.float64) / scale).astype(np.float32)
    raise AudioError(name, f"expected float or signed integer samples, got dtype {array.dtype}")


def read_blocks(handle: sf.SoundFile, name: str | os.PathLike[str], *, frames: int | None = None,
                max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """Decode an open file as (n,) mono float32 blocks at its own rate, until the decoder stops.

    A block is at most `frames` frames and at most _READ_SAMPLES samples over all channels. The
    header's frame count is never trusted: it can be wildly wrong either way. AudioError when
    there are no samples, NaN/Inf ones, or more than `max_seconds` of them.
    """
    if handle.channels <= 0:
        raise AudioError(name, "contains no samples")
    size = max(1, min(frames or _READ_SAMPLES, _READ_SAMPLES // handle.channels))
    limit = None if max_seconds is None else max_seconds * handle.samplerate
    total = 0
    while True:
        block = handle.read(size, dtype="float32", always_2d=True)  # (≤ size, channels)
        total += block.shape[0]
        if limit is not None and total > limit:
            raise AudioError(name, f"audio lasts more than the limit of {max_seconds:g} s")
        if block.shape[0]:
            yield _mono(block, name)
        elif total == 0:
            raise AudioError(name, "contains no samples")
        if block.shape[0] < size:
            break


def _mono(data: np.ndarray, name: str | os.PathLike[str]) -> np.ndarray:
    """(n, channels) float32 → finite (n,) float32, channels averaged."""
    if not np.isfinite(data).all():
        raise AudioError(name, "contains NaN/Inf samples")
    if data.shape[1] == 1:
        return data[:, 0]  # (n,)
    with np.errstate(over="ignore"):  # overflow is caught after resampling
        return data.mean(axis=1, dtype=np.float32)  # (n,)


def _resample(mono: np.ndarray, rate: int, target_rate: int, name: str | os.PathLike[str]) -> np.ndarray:
    """(n,) float32 at `rate` → checked (n',) float32 at target_rate."""
    samples = mono.size
    if rate != target_rate:
        mono = soxr.resample(mono, rate, target_rate, quality="HQ")  # (n * target / rate,)
    if mono.size == 0:
        raise AudioError(name, f"too short: {samples} sample(s) at {rate} Hz make none at {target_rate} Hz")
    with np.errstate(over="ignore"):
        finite = bool(np.isfinite(mono).all())
    if not finite:  # finite input that overflowed float32 in the cast, the mixdown or the resampler
        raise AudioError(name, "sample values too large (overflow float32)")
    return np.ascontiguousarray(mono, dtype=np.float32)


@dataclass(frozen=True)
class WaveNorm:
    """Waveform standardisation: the training split's mean/std (paper §5.2), each utterance's own
    (`per_utterance`: needs no statistics, so one feature store serves every cv fold), or identity."""

    mean: float = 0.0
    std: float = 1.0
    per_utterance: bool = False

    def apply(self, wave: np.ndarray) -> np.ndarray:
        if self.per_utterance:
            wave = wave.astype(np.float64)
            return ((wave - wave.mean()) / max(float(wave.std()), 1e-8)).astype(np.float32) if wave.size else wave.astype(np.float32)
        return ((wave - self.mean) / self.std).astype(np.float32)

    @property
    def tag(self) -> str:
        return "norm=utterance" if self.per_utterance else f"norm={self.mean:.6g},{self.std:.6g}"


def compute_wave_norm(items: Sequence, progress: bool = True) -> WaveNorm:
    """Mean/std over every sample of the given items (anything with a `.path`; streamed: sums in float64)."""
    total, total_sq, count = 0.0, 0.0, 0
    from tqdm.auto import tqdm

    for item in tqdm(items, desc="waveform stats", disable=not progress, leave=False):
        try:
            wave = load_audio(item.path).astype(np.float64)
        except AudioError as err:
            logging.getLogger(__name__).warning("skipping in normalisation stats: %s", err)
            continue
        total, total_sq, count = total + wave.sum(), total_sq + (wave**2).sum(), count + wave.size
    if count == 0:
        raise ValueError("no readable training audio to compute normalisation statistics")
    mean = total / count
    std = max(float(np.sqrt(max(total_sq / count - mean**2, 0.0))), 1e-8)
    return WaveNorm(float(mean), std)


def _is_tensor(x) -> bool:
    """A torch tensor, without importing torch: `dmha predict --segment` tunes the allocator before torch
    loads (cli.predicting), so decoding audio must not be what loads it."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_waveform(x) -> bool:
    """A waveform given as an array (numpy or torch), not a path."""
    return isinstance(x, np.ndarray) or _is_tensor(x)


def as_array(wave) -> np.ndarray:
    """A numpy array or torch tensor → numpy (n,) or (n, channels): a 2-D input's shorter axis is its channels."""
    if _is_tensor(wave):
        import torch

        wave = wave.detach().cpu()
        if wave.is_floating_point() and wave.dtype not in (torch.float32, torch.float64):
            wave = wave.float()  # numpy has no bfloat16
        wave = wave.numpy()
    array = np.asarray(wave)
    if array.ndim == 2 and array.shape[0] < array.shape[1]:
        array = array.T  # (channels, n) → (n, channels)
    return array

