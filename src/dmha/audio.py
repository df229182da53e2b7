"""Audio in: any file or array → mono float32 at 16 kHz, with one-line errors for bad input."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
# Extensions importers treat as audio; all are decoded by libsndfile (mp3 needs libsndfile ≥ 1.1).
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"})
_DIGEST_BLOCK = 1 << 20
_ARRAY_NAME = "<array>"


class AudioError(ValueError):
    """A file or array that cannot be used as audio; the message is one line, `<path>: <problem>`."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever libsndfile said
        super().__init__(f"{self.path}: {self.reason}")


def load_audio(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as a mono float32 1-D array at `sample_rate`.

    Channels are averaged; other rates are resampled with soxr (HQ). Silent audio is valid.

    Args:
        path: any format libsndfile decodes (wav, flac, ogg/opus, mp3, aiff).
        sample_rate: rate of the returned array, in Hz.

    Returns:
        float32 array of shape (n,).

    Raises:
        AudioError: missing, unreadable, empty, undecodable, sample-free or non-finite audio.

    Example:
        >>> wave = load_audio("clip.wav")  # (n,) float32 at 16 kHz
    """
    _check_file(path, allow_empty=False)
    try:
        data, rate = sf.read(os.fspath(path), dtype="float32", always_2d=True)  # (n, channels)
    except PermissionError:
        raise AudioError(path, "permission denied") from None
    except (sf.SoundFileError, RuntimeError, ValueError, EOFError) as err:
        raise AudioError(path, f"cannot decode audio ({_short_reason(err)})") from None
    return _to_mono_rate(data, rate, sample_rate, path)


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
        AudioError: wrong shape or dtype, bad rate, no samples, NaN/Inf samples.

    Example:
        >>> load_audio_array(np.zeros((48000, 2), np.float32), 48000).shape
        (16000,)
    """
    array = np.asarray(wave)
    if array.ndim not in (1, 2):
        raise AudioError(name, f"expected shape (n,) or (n, channels), got {array.shape}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(name, f"sample rate must be a positive integer, got {sample_rate!r}")
    data = _as_float32(array, name)
    if data.ndim == 1:
        data = data[:, None]  # (n, 1)
    return _to_mono_rate(data, int(sample_rate), target_rate, name)


def audio_duration(path: str | os.PathLike[str]) -> float:
    """Length in seconds from the file header, without decoding the samples."""
    _check_file(path, allow_empty=False)
    try:
        info = sf.info(os.fspath(path))
    except PermissionError:
        raise AudioError(path, "permission denied") from None
    except (sf.SoundFileError, RuntimeError, ValueError, EOFError) as err:
        raise AudioError(path, f"cannot decode audio ({_short_reason(err)})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(path, "contains no samples")
    return info.frames / info.samplerate


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
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a special file"
        raise AudioError(path, f"not a regular file ({kind})")
    if not os.access(path, os.R_OK):
        raise AudioError(path, "permission denied")
    if info.st_size == 0 and not allow_empty:
        raise AudioError(path, "empty file (0 bytes)")


def _short_reason(err: BaseException) -> str:
    """libsndfile's own words, without the 'Error opening <path>:' prefix that repeats the path."""
    reason = getattr(err, "error_string", None) or str(err) or type(err).__name__
    return reason.strip().rstrip(".")


def _as_float32(array: np.ndarray, name: str) -> np.ndarray:
    """Float arrays are cast; integer PCM is scaled to [-1, 1) the way libsndfile does."""
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    if np.issubdtype(array.dtype, np.signedinteger):
        scale = float(2 ** (8 * array.dtype.itemsize - 1))
        return (array.astype(np.float64) / scale).astype(np.float32)
    raise AudioError(name, f"expected float or signed integer samples, got dtype {array.dtype}")


def _to_mono_rate(data: np.ndarray, rate: int, target_rate: int, name: str | os.PathLike[str]) -> np.ndarray:
    """(n, channels) float32 → checked (n',) float32 at target_rate."""
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(name, "contains no samples")
    if not np.isfinite(data).all():
        raise AudioError(name, "contains NaN/Inf samples")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]  # (n,)
    if rate != target_rate:
        mono = soxr.resample(mono, rate, target_rate, quality="HQ")  # (n * target / rate,)
    return np.ascontiguousarray(mono, dtype=np.float32)
