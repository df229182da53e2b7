"""Whisper's log-mel features on any length, since its own extractor always pads to 30 s."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import WhisperFeatureExtractor


@dataclass(frozen=True)
class WhisperMel:
    """Log-mel spectrogram with WhisperFeatureExtractor's numbers: 25 ms / 10 ms STFT, log10, max-8 floor, (x+4)/4."""

    filters: torch.Tensor  # (n_freq, n_mels) float32, Slaney mel filter bank
    n_fft: int = 400
    hop_length: int = 160
    sampling_rate: int = 16_000

    @classmethod
    def from_feature_extractor(cls, extractor: WhisperFeatureExtractor) -> "WhisperMel":
        """Reuse a (possibly checkpoint-specific) extractor's filter bank and STFT settings."""
        filters = torch.as_tensor(np.asarray(extractor.mel_filters), dtype=torch.float32)
        return cls(filters, extractor.n_fft, extractor.hop_length, extractor.sampling_rate)

    @classmethod
    def default(cls, n_mels: int = 80) -> "WhisperMel":
        """OpenAI Whisper's front end for `n_mels` bins (80, or 128 for large-v3)."""
        return cls.from_feature_extractor(WhisperFeatureExtractor(feature_size=n_mels))

    @property
    def n_mels(self) -> int:
        """Number of mel bins."""
        return self.filters.shape[1]

    def num_frames(self, num_samples: int) -> int:
        """Mel frames for a wave of `num_samples` (the extractor drops the last centred frame)."""
        return max(num_samples, self.n_fft) // self.hop_length

    def __call__(self, wave: np.ndarray, pad_to_samples: int = 0) -> torch.Tensor:
        """(N,) float waveform → (n_mels, M) log-mel; zero-pads the wave to `pad_to_samples` first."""
        x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        # Reflect padding of the centred STFT needs more than n_fft / 2 samples.
        target = max(pad_to_samples, self.n_fft, x.shape[0])
        x = torch.nn.functional.pad(x, (0, target - x.shape[0]))  # (N',)
        window = torch.hann_window(self.n_fft)
        stft = torch.stft(x, self.n_fft, self.hop_length, window=window, return_complex=True)  # (F, M+1)
        power = stft[:, :-1].abs() ** 2  # (F, M)
        mel = self.filters.T @ power  # (n_mels, M)
        log_spec = torch.clamp(mel, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0
