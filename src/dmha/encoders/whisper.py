"""Whisper encoder on the true length of each recording, batched exactly, windowed past 30 s."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from dmha.encoders.base import SAMPLE_RATE, EncoderInfo
from dmha.batching import length_sorted_batches
from dmha.encoders.windows import consecutive_windows
from dmha.encoders.whisper_mel import WhisperMel

logger = logging.getLogger(__name__)


def whisper_hidden_states(encoder: WhisperEncoder, mel: torch.Tensor, mel_lengths: torch.Tensor) -> torch.Tensor:
    """(B, n_mels, M) log-mel, zero past each length → (L, B, T, D) hidden states, T = ceil(M / 2).

    HF's forward insists on 3000 frames; this one slices the positional embedding instead. Padded
    frames are zeroed after each convolution and masked in attention, so a batch equals batch size 1.
    """
    batch, _, m = mel.shape
    t = (m + 1) // 2  # conv2 has stride 2, padding 1
    if t > encoder.embed_positions.num_embeddings:
        raise ValueError(f"{m} mel frames exceed the encoder's {encoder.embed_positions.num_embeddings} positions")
    ragged = bool((mel_lengths < m).any())
    mel_ok = torch.arange(m, device=mel.device) < mel_lengths[:, None]  # (B, M)
    frame_ok = torch.arange(t, device=mel.device) < ((mel_lengths + 1) // 2)[:, None]  # (B, T)

    x = F.gelu(encoder.conv1(mel))  # (B, D, M)
    if ragged:  # batch size 1 sees zero padding right after its last frame, not our padded frames
        x = x * mel_ok[:, None, :]
    x = F.gelu(encoder.conv2(x))  # (B, D, T)
    if ragged:
        x = x * frame_ok[:, None, :]
    x = x.transpose(1, 2) + encoder.embed_positions.weight[:t]  # (B, T, D)

    mask = None
    if ragged:
        mask = torch.zeros(batch, 1, 1, t, dtype=x.dtype, device=x.device)  # (B, 1, 1, T) additive
        mask.masked_fill_(~frame_ok[:, None, None, :], torch.finfo(x.dtype).min)
    states = [x]
    for layer in encoder.layers:
        x = layer(x, mask)
        states.append(x)
    states[-1] = encoder.layer_norm(x)  # HF also reports the last state after the final norm
    return torch.stack(states)  # (L, B, T, D)


@dataclass(frozen=True)
class _Segment:
    """One window of one recording: its log-mel and how many mel frames of it are real audio."""

    wave: int
    mel: torch.Tensor  # (n_mels, M)
    real_frames: int


class WhisperSpeechEncoder:
    """Frozen Whisper encoder returning all hidden states at 50 frames/s.

    Parameters: encoder (a transformers WhisperEncoder), mel (its front end), name (as the user gave it),
    weights_id (fingerprint of the weights), device, pad_to_s (0 = true length; else pad each window
    to that many seconds, 30 = Whisper's own window; outputs are cut back to the real audio),
    max_window_s (true-length window, capped at the encoder's 30 s), batch_size.
    Returns from `encode`: one (L, T_i, D) float32 CPU tensor per wave.
    Example: `WhisperSpeechEncoder(enc, WhisperMel.default(), name="w", weights_id="x").encode([wave])`.
    """

    def __init__(
        self,
        encoder: WhisperEncoder,
        mel: WhisperMel,
        *,
        name: str,
        weights_id: str,
        device: str = "cpu",
        pad_to_s: float = 0.0,
        max_window_s: float = 30.0,
        batch_size: int = 8,
    ) -> None:
        if mel.sampling_rate != SAMPLE_RATE:  # a checkpoint for another rate would silently misbehave
            raise ValueError(f"Whisper front end expects {mel.sampling_rate} Hz, dmha provides {SAMPLE_RATE} Hz")
        self.encoder = encoder.float().eval().requires_grad_(False).to(device)
        self.mel = mel
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.pad_to_s = float(pad_to_s)
        self.max_mel_frames = 2 * encoder.embed_positions.num_embeddings
        self.window_frames = self._window_frames(self.pad_to_s, float(max_window_s))
        config = encoder.config
        self.info = EncoderInfo(
            name=name,
            identity=f"{weights_id}|pad_to_s={self.pad_to_s:g}|window_frames={self.window_frames}",
            num_layers=config.encoder_layers + 1,
            dim=config.d_model,
            frame_rate=mel.sampling_rate / mel.hop_length / 2,
        )

    def _window_frames(self, pad_to_s: float, max_window_s: float) -> int:
        """Even mel frames per window: pad_to_s when padding, else max_window_s capped at the encoder's limit."""
        max_s = self.max_mel_frames * self.mel.hop_length / self.mel.sampling_rate
        if not 0 <= pad_to_s <= max_s:
            raise ValueError(f"pad_to_s must be in [0, {max_s:g}] seconds, got {pad_to_s}")
        if max_window_s <= 0:
            raise ValueError(f"max_window_s must be > 0, got {max_window_s}")
        seconds = pad_to_s or min(max_window_s, max_s)  # longer windows are what the 30 s limit forbids
        return max(2, 2 * round(seconds * self.mel.sampling_rate / self.mel.hop_length / 2))

    def _segments(self, index: int, wave: np.ndarray) -> list[_Segment]:
        """Split one recording into encoder windows (consecutive, the last one padded in padded mode)."""
        real = self.mel.num_frames(len(wave))
        if self.pad_to_s == 0:
            mel = self.mel(wave)  # (n_mels, real)
        else:
            windows = max(1, math.ceil(real / self.window_frames))
            mel = self.mel(wave, pad_to_samples=windows * self.window_frames * self.mel.hop_length)
        return [
            _Segment(index, mel[:, start : start + self.window_frames], end - start)
            for start, end in consecutive_windows(real, self.window_frames)
        ]

    def _encode_batch(self, segments: list[_Segment]) -> list[torch.Tensor]:
        """Pad a batch of windows with zeros, encode, return each window's (L, T_real, D)."""
        width = max(s.mel.shape[1] for s in segments)
        mel = torch.zeros(len(segments), self.mel.n_mels, width)  # (B, n_mels, M)
        for b, segment in enumerate(segments):
            mel[b, :, : segment.mel.shape[1]] = segment.mel
        lengths = torch.tensor([s.mel.shape[1] for s in segments])  # padded mode: whole window is real input
        states = whisper_hidden_states(self.encoder, mel.to(self.device), lengths.to(self.device))  # (L, B, T, D)
        return [states[:, b, : (s.real_frames + 1) // 2].float().cpu().clone() for b, s in enumerate(segments)]

    def encode(self, waves: Sequence[np.ndarray], batch_size: int | None = None) -> list[torch.Tensor]:
        """16 kHz mono waveforms → one (L, T_i, D) float32 tensor per wave, T_i ≈ 50 × seconds."""
        segments = [seg for i, wave in enumerate(waves) for seg in self._segments(i, wave)]
        outputs: list[torch.Tensor | None] = [None] * len(segments)
        batches = length_sorted_batches([s.mel.shape[1] for s in segments], batch_size or self.batch_size)
        with torch.inference_mode():
            for batch in batches:
                for i, out in zip(batch, self._encode_batch([segments[i] for i in batch])):
                    outputs[i] = out
        per_wave: list[list[torch.Tensor]] = [[] for _ in waves]
        for segment, out in zip(segments, outputs):
            per_wave[segment.wave].append(out)
        # Joined outside inference mode: callers may train on these, which inference tensors forbid.
        return [torch.cat(parts, dim=1) for parts in per_wave]  # (L, T_i, D)

