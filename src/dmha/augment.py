"""Online waveform augmentation (paper §5.1-5.2): speed perturbation, reverberation or additive noise, and
the channel techniques of dmha.channel (telephone band, low-bitrate codecs, gain with clipping).

Each training waveform is augmented with probability `p`; if so, exactly one technique is drawn
uniformly from `techniques`. All randomness comes from the numpy Generator passed to each call, so
a seeded caller gets identical output. Synthetic room impulse responses (used when no RIR corpus
is given) come from a small lazily filled pool whose entry i depends only on (seed, i), so every
DataLoader worker sees the same rooms without sharing state.

audiomentations' transforms draw from the global `random`/`np.random` state and take impulse
responses only as files (peak-normalised, not aligned), so the three techniques are written here
as small numpy/scipy/soxr functions; pyroomacoustics supplies the synthetic rooms.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soxr

from dmha.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, AudioError, is_audio_file, load_audio
from dmha.config import AUGMENT_TECHNIQUES, AugmentConfig, validate

log = logging.getLogger(__name__)

TECHNIQUES = AUGMENT_TECHNIQUES  # the config owns the names; each is a function below
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # PSD ∝ 1/f^beta
ROOM_SIDE_M = (3.0, 10.0)
RT60_S = (0.2, 0.8)
BABBLE_TALKERS = (3, 5)
RIR_POOL_SIZE = 16
# Image-source order cap: keeps each synthetic room to tens of ms of CPU; only small, very live
# rooms lose tail energy (worst case ≈ -20 dB of it), which is harmless for augmentation.
_MAX_IMAGE_ORDER = 50
_WALL_MARGIN_M = 0.5
_MIN_SOURCE_MIC_M = 0.5
_FILE_CACHE = 64  # decoded RIR/noise files kept per folder
_RIR_EXCLUDE = "noise"  # RIRS_NOISES keeps isotropic noises beside the real RIRs


def speed_perturb(wave: np.ndarray, factor: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Kaldi-style speed change: play as if recorded at rate*factor, so length scales by 1/factor and pitch shifts.

    Example:
        >>> speed_perturb(np.zeros(16000, np.float32), 1.1).shape
        (14545,)
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor!r}")
    if factor == 1.0 or wave.size == 0:
        return np.array(wave, dtype=np.float32)
    out = soxr.resample(np.asarray(wave, np.float32), sample_rate * factor, sample_rate, quality="HQ")  # (n/factor,)
    return np.ascontiguousarray(out, dtype=np.float32)


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a room impulse response aligned on its direct path; same length, alignment and RMS.

    Example:
        >>> reverberate(np.ones(100, np.float32), np.array([0.0, 1.0, 0.5])).shape
        (100,)
    """
    rir = np.asarray(rir, np.float64)
    if rir.ndim != 1 or not np.any(rir):
        raise ValueError(f"impulse response must be a non-silent 1-D array, got shape {rir.shape}")
    if wave.size == 0:
        return np.array(wave, dtype=np.float32)
    from scipy.signal import fftconvolve  # ~0.7 s import; config.py imports this module for AugmentConfig

    signal = np.asarray(wave, np.float64)
    rir = rir[int(np.argmax(np.abs(rir))):]  # direct path at lag 0, so labels/crops stay aligned
    out = fftconvolve(signal, rir)[: signal.size]  # (n,)
    out_rms = _rms(out)
    if out_rms > 0:
        out *= _rms(signal) / out_rms
    return out.astype(np.float32)


def add_noise(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add `noise` (already wave-length) scaled so 10·log10(P_signal / P_noise) over the whole clip is `snr_db`.

    Example:
        >>> add_noise(np.ones(8, np.float32), np.ones(8, np.float32), 20.0)[0]
        1.1
    """
    if noise.shape != wave.shape:
        raise ValueError(f"noise shape {noise.shape} does not match wave shape {wave.shape}")
    signal = np.asarray(wave, np.float64)
    noise = np.asarray(noise, np.float64)
    noise_power = float(np.mean(noise**2)) if noise.size else 0.0
    if noise_power == 0.0:
        return signal.astype(np.float32)  # nothing to add; also keeps silent input NaN-free
    gain = np.sqrt(float(np.mean(signal**2)) / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (signal + gain * noise).astype(np.float32)


def coloured_noise(length: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise shaped to a 1/f^beta power spectrum (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(length))  # (length//2 + 1,)
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0  # keep DC finite; it is removed below anyway
    noise = np.fft.irfft(spectrum / freqs ** (beta / 2.0), n=length)
    noise -= noise.mean()
    rms = _rms(noise)
    return (noise / rms if rms > 0 else noise).astype(np.float32)


def fit_length(audio: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random `length`-sample stretch of `audio`, looping it when it is shorter."""
    if audio.size >= length:
        start = int(rng.integers(audio.size - length + 1))
        return audio[start : start + length]
    start = int(rng.integers(audio.size))
    return np.resize(np.roll(audio, -start), length)  # np.resize repeats cyclically


def babble(pool: Sequence[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of 3-5 random utterances from `pool`, each at unit RMS, so no single talker dominates."""
    talkers = min(int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1)), len(pool))
    mix = np.zeros(length, np.float64)
    for index in rng.choice(len(pool), size=talkers, replace=False):
        voice = fit_length(np.asarray(pool[index], np.float64), length, rng)
        rms = _rms(voice)
        mix += voice / rms if rms > 0 else voice
    return mix.astype(np.float32)


def synthetic_rir(rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Impulse response of a random shoebox room (sides 3-10 m, RT60 0.2-0.8 s) by the image-source method."""
    import pyroomacoustics as pra  # ~1 s import, only needed without an RIR corpus

    dims, rt60 = random_room(rng)
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    source, mic = _positions(dims, rng)
    room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption),
                       max_order=min(max_order, _MAX_IMAGE_ORDER))
    room.add_source(source)
    room.add_microphone(mic)
    room.compute_rir()
    return np.asarray(room.rir[0][0], np.float32)


def random_room(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Room sides (m) and an RT60 (s) that walls with absorption < 1 can reach (Sabine), else inverse_sabine fails."""
    import pyroomacoustics as pra

    dims = rng.uniform(*ROOM_SIDE_M, size=3)
    volume = float(np.prod(dims))
    surface = 2.0 * float(dims[0] * dims[1] + dims[1] * dims[2] + dims[0] * dims[2])
    fastest = 24.0 * np.log(10.0) * volume / (pra.constants.get("c") * surface)  # RT60 of fully absorbing walls
    return dims, float(rng.uniform(max(RT60_S[0], 1.01 * fastest), RT60_S[1]))


def _positions(dims: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Source and microphone inside the room, away from walls and from each other."""
    while True:
        source, mic = rng.uniform(_WALL_MARGIN_M, dims - _WALL_MARGIN_M, size=(2, 3))
        if np.linalg.norm(source - mic) >= _MIN_SOURCE_MIC_M:
            return source, mic


def _rms(x: np.ndarray) -> float:
    """Root mean square in float64 (0 for an empty array)."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


class _AudioFolder:
    """Audio files found recursively under one folder, decoded on first use and kept in a small cache."""

    def __init__(self, folder: str, what: str, sample_rate: int, exclude: str = "") -> None:
        self.root = Path(folder)
        self.what = what
        self.sample_rate = sample_rate
        if not self.root.is_dir():
            raise ValueError(f"{folder}: {what} folder not found")
        self.files = [
            path for path in sorted(self.root.rglob("*"))
            if is_audio_file(path) and not (exclude and exclude in path.name.lower()) and path.is_file()
        ]
        if not self.files:
            raise ValueError(f"{folder}: no {what} audio files found ({', '.join(sorted(AUDIO_EXTENSIONS))})")
        self._cache: dict[Path, np.ndarray] = {}

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """A random readable, non-silent file; bad files are dropped with a warning."""
        while self.files:
            path = self.files[int(rng.integers(len(self.files)))]
            audio = self._read(path)
            if audio is not None:
                return audio
            self.files.remove(path)
        raise ValueError(f"{self.root}: none of the {self.what} audio files could be read")

    def _read(self, path: Path) -> np.ndarray | None:
        """Decoded audio from the cache or disk; None (logged) when unusable."""
        if path in self._cache:
            return self._cache[path]
        try:
            audio = load_audio(path, self.sample_rate)
        except AudioError as err:
            log.warning("skipping %s file: %s", self.what, err)
            return None
        if not np.any(audio):
            log.warning("skipping %s file: %s: silent", self.what, path)
            return None
        if len(self._cache) >= _FILE_CACHE:
            self._cache.pop(next(iter(self._cache)))  # oldest first
        self._cache[path] = audio
        return audio


class Augmenter:
    """Callable that augments one training waveform with probability p, by one random technique.

    Args:
        config: the `aug` section; with `enabled = False` the call returns the input unchanged.
        sample_rate: rate of the waveforms, in Hz.
        babble_pool: training utterances to mix as babble noise when no `noise_dir` is set.
        seed: seeds the synthetic RIR pool (used only without `rir_dir`).
        rir_pool_size: number of distinct synthetic rooms.

    Raises:
        ValueError: invalid config, or an `rir_dir`/`noise_dir` that is missing or has no audio.

    Example:
        >>> augment = Augmenter(AugmentConfig(enabled=True))
        >>> out = augment(wave, np.random.default_rng(0))  # float32, augmented half of the time
    """

    def __init__(self, config: AugmentConfig, sample_rate: int = SAMPLE_RATE,
                 babble_pool: Sequence[np.ndarray] | None = None, seed: int = 0,
                 rir_pool_size: int = RIR_POOL_SIZE) -> None:
        validate(config, "aug.")  # the config's own rules (a config built in code is not checked on load)
        if rir_pool_size <= 0:
            raise ValueError(f"rir_pool_size must be > 0, got {rir_pool_size!r}")
        self.config = config
        self.sample_rate = sample_rate
        self.babble_pool = list(babble_pool or [])
        self.seed = seed
        self.rir_pool_size = rir_pool_size
        self._rirs: dict[int, np.ndarray] = {}
        self._rir_folder: _AudioFolder | None = None
        self._noise_folder: _AudioFolder | None = None
        if "reverb" in config.techniques and config.rir_dir:
            self._rir_folder = _AudioFolder(config.rir_dir, "RIR", sample_rate, exclude=_RIR_EXCLUDE)
            log.info("augment: %d RIR files under %s", len(self._rir_folder.files), config.rir_dir)
        if "noise" in config.techniques and config.noise_dir:
            self._noise_folder = _AudioFolder(config.noise_dir, "noise", sample_rate)
            log.info("augment: %d noise files under %s", len(self._noise_folder.files), config.noise_dir)

    @property
    def rir_files(self) -> list[Path]:
        """RIR files in use (empty when rooms are synthesised)."""
        return list(self._rir_folder.files) if self._rir_folder else []

    @property
    def noise_files(self) -> list[Path]:
        """Noise files in use (empty when noise is generated)."""
        return list(self._noise_folder.files) if self._noise_folder else []

    def __call__(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """With probability p, one technique drawn uniformly from config.techniques; float32 out."""
        if not self.config.enabled or rng.random() >= self.config.p:
            return np.array(wave, dtype=np.float32)
        techniques = self.config.techniques
        return self.apply(techniques[int(rng.integers(len(techniques)))], wave, rng)

    def apply(self, technique: str, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply one named technique with parameters drawn from `rng` (also when disabled)."""
        from . import channel

        methods: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
            "speed": self._speed, "reverb": self._reverb, "noise": self._noise,
            "telephone": channel.telephone, "codec": channel.codec, "gain": channel.gain,
        }
        if technique not in methods:
            raise ValueError(f"unknown augmentation technique {technique!r} (valid: {', '.join(methods)})")
        wave = np.asarray(wave)
        if wave.ndim != 1:
            raise ValueError(f"augment expects a 1-D waveform, got shape {wave.shape}")
        return methods[technique](wave, rng)

    def _speed(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Speed perturbation with a factor drawn from config.speeds."""
        speeds = self.config.speeds
        return speed_perturb(wave, float(speeds[int(rng.integers(len(speeds)))]), self.sample_rate)

    def _reverb(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Reverberation with a corpus RIR, else a room from the synthetic pool."""
        if self._rir_folder is not None:
            return reverberate(wave, self._rir_folder.draw(rng))
        index = int(rng.integers(self.rir_pool_size))
        if index not in self._rirs:
            self._rirs[index] = synthetic_rir(np.random.default_rng([self.seed, index]), self.sample_rate)
        return reverberate(wave, self._rirs[index])

    def _noise(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Additive noise at an SNR uniform in [snr_db_min, snr_db_max]."""
        if wave.size == 0:
            return np.array(wave, dtype=np.float32)
        snr_db = float(rng.uniform(self.config.snr_db_min, self.config.snr_db_max))
        if self._noise_folder is not None:
            noise = fit_length(self._noise_folder.draw(rng), wave.size, rng)
        elif self.babble_pool and rng.random() < 0.5:
            noise = babble(self.babble_pool, wave.size, rng)
        else:
            colours = list(NOISE_COLOURS.values())
            noise = coloured_noise(wave.size, colours[int(rng.integers(len(colours)))], rng)
        return add_noise(wave, noise, snr_db)


def babble_pool(items: Sequence, count: int = 32, seed: int = 0) -> list[np.ndarray]:
    """A few training utterances (anything with a `.path`) to mix into babble noise when no noise corpus is given."""
    rng = np.random.default_rng(seed)
    pool = []
    for i in rng.permutation(len(items))[:count]:
        try:
            pool.append(load_audio(items[i].path))
        except AudioError as err:
            log.warning("not used for babble: %s", err)
    return pool
