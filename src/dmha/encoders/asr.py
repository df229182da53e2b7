"""Transcripts from faster-whisper on local weights, for recordings that come without one."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dmha.encoders import packaged
from dmha.encoders.base import SAMPLE_RATE
from dmha.encoders.fingerprint import weights_id

logger = logging.getLogger(__name__)

# Packaged CTranslate2 Whisper models by short name.
PACKAGED_ASR_MODELS: dict[str, Callable[[], Path]] = {
    "tiny.en": packaged.whisper_tiny_en_dir,
    "base": packaged.whisper_base_dir,
}


def _default_threads() -> int:
    """All cores this process may use, capped where CTranslate2 stops scaling for one stream."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores))


def resolve_model(model_dir_or_name: str | Path, local_files_only: bool = True) -> str:
    """A packaged short name or a local CTranslate2 directory → the directory; else a hub name if allowed."""
    if str(model_dir_or_name) in PACKAGED_ASR_MODELS:
        return str(PACKAGED_ASR_MODELS[str(model_dir_or_name)]())
    path = Path(model_dir_or_name)
    if (path / "model.bin").is_file():
        return str(path)
    if not local_files_only and not path.exists():
        return str(model_dir_or_name)  # faster-whisper size name or hub id, downloaded by faster-whisper
    raise FileNotFoundError(
        f"{model_dir_or_name!r} is neither a packaged ASR model (valid: {', '.join(PACKAGED_ASR_MODELS)}) "
        "nor a CTranslate2 Whisper directory with a model.bin"
    )


class FasterWhisperTranscriber:
    """English transcription with faster-whisper, greedy (temperature 0, no sampling fallback), no VAD.

    Parameters: model_dir_or_name ("tiny.en", "base" or a CTranslate2 Whisper dir), device,
    compute_type (CTranslate2 quantisation), beam_size, cpu_threads (default: available cores, ≤ 8),
    language, vad_filter, local_files_only (False lets faster-whisper fetch a size name or hub id).
    Returns from `transcribe`: one stripped transcript per wave ('' if silent).
    Example: `FasterWhisperTranscriber("tiny.en").transcribe([wave])  # ['Kids are talking by the door.']`.
    """

    def __init__(self, model_dir_or_name: str | Path = "tiny.en", device: str = "cpu", compute_type: str = "int8",
                 *, beam_size: int = 1, cpu_threads: int | None = None, language: str = "en",
                 vad_filter: bool = False, local_files_only: bool = True) -> None:
        from faster_whisper import WhisperModel  # heavy import, only when ASR is wanted

        model = resolve_model(model_dir_or_name, local_files_only)
        self.model = WhisperModel(model, device=device, compute_type=compute_type,
                                  cpu_threads=cpu_threads or _default_threads(), local_files_only=local_files_only)
        self.beam_size, self.language, self.vad_filter = beam_size, language, vad_filter
        label = str(model_dir_or_name) if str(model_dir_or_name) in PACKAGED_ASR_MODELS else None
        self.identity = (f"{weights_id('faster-whisper', model, label=label)}|{compute_type}"
                         f"|beam={beam_size}|lang={language}|vad={vad_filter}|temperature=0")

    def transcribe_one(self, wave: np.ndarray) -> str:
        """One 16 kHz waveform → its transcript."""
        wave = np.asarray(wave, dtype=np.float32)
        if wave.size < SAMPLE_RATE // 100:  # under 10 ms there is nothing to hear
            return ""
        # temperature=0 only: faster-whisper's default falls back to *sampling* at higher temperatures
        # when a decode looks repetitive, which makes transcripts (and so predictions) vary run to run.
        segments, _info = self.model.transcribe(wave, language=self.language, beam_size=self.beam_size,
                                                vad_filter=self.vad_filter, temperature=0.0)
        return " ".join(s.text.strip() for s in segments if s.text.strip())

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[str]:
        """16 kHz mono waveforms → one transcript per wave."""
        return [self.transcribe_one(w) for w in waves]
