"""The contracts every frozen encoder honours, so the model never sees which one it got."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, Sequence

import numpy as np
import torch

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class EncoderInfo:
    """What the rest of dmha needs to know about an encoder without loading it again."""

    name: str  # registry name, HF id or local dir, as the user gave it
    identity: str  # stable string for cache keys: name + weights fingerprint + settings
    num_layers: int  # number of hidden states returned (L); 1 for text encoders (last layer)
    dim: int  # width of each hidden state
    frame_rate: float  # frames per second of audio (speech); 0 for text


class SpeechEncoder(Protocol):
    """Frozen speech model returning all hidden states of each utterance."""

    info: EncoderInfo

    def encode(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """16 kHz mono float32 waveforms → one (L, T_i, D) float32 tensor per wave, unpadded."""
        ...


class TextEncoder(Protocol):
    """Frozen BERT-like model returning its last hidden layer."""

    info: EncoderInfo

    def encode(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Texts → one (T_i, D) float32 tensor per text (special tokens kept), unpadded."""
        ...


class Transcriber(Protocol):
    """Automatic speech recognition used when no transcript is given."""

    identity: str

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[str]:
        """16 kHz mono float32 waveforms → one transcript per wave ('' for no speech)."""
        ...


class LayerSubset:
    """A speech encoder that keeps only some hidden states (`features.layers`).

    Large encoders return 25 states of 1024 (≈ 9 GB per audio hour in fp16); keeping a few
    shrinks the cache and the head's layer weights accordingly. The identity names the subset,
    so cached features of different subsets never mix.
    """

    def __init__(self, encoder: SpeechEncoder, layers: Sequence[int]):
        available = encoder.info.num_layers
        bad = [k for k in layers if not 0 <= k < available]
        if bad:
            raise ValueError(f"features.layers {list(layers)}: {encoder.info.name} has hidden states 0-{available - 1}")
        self.encoder, self.layers = encoder, list(layers)
        self.info = replace(encoder.info, identity=f"{encoder.info.identity}|layers={','.join(map(str, layers))}",
                            num_layers=len(self.layers))

    def encode(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        return [hidden[self.layers] for hidden in self.encoder.encode(waves)]


class NoTextEncoder:
    """`encoders.text = "none"`: a speech-only model. Every text is zero tokens of zero width, so the
    head sees speech frames only and no transcript is ever needed (no ASR)."""

    info = EncoderInfo(name="none", identity="none", num_layers=1, dim=0, frame_rate=0.0)

    def encode(self, texts: Sequence[str]) -> list[torch.Tensor]:
        return [torch.zeros(0, 0) for _ in texts]

