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


WINDOW_S = 30  # Whisper's input window: shorter clips are decoded together in one batched call
NO_SPEECH_PROB, MIN_AVG_LOGPROB = 0.6, -1.0  # faster-whisper's rule for dropping a silent window


class FasterWhisperTranscriber:
    """English transcription with faster-whisper's model, greedy (temperature 0, no sampling fallback).

    Clips up to 30 s (one Whisper window) are decoded as one batch: log-mel features padded to the
    window, one CTranslate2 encoder call and one batched greedy decode without timestamps, so a
    list of utterances costs about one decode step per token for all of them together. The same
    function decodes a batch of one, so results do not depend on the batch size. Longer recordings
    go through faster-whisper's sequential long-form transcription.

    Parameters: model_dir_or_name ("tiny.en", "base" or a CTranslate2 Whisper dir), device,
    compute_type (CTranslate2 quantisation), beam_size, cpu_threads (default: available cores, ≤ 8),
    language, vad_filter (long-form only), local_files_only (False lets faster-whisper fetch a size
    name or hub id), window_s (encoder window for clips up to 30 s: 30 = Whisper's own; shorter is
    faster but model-dependent: tiny.en kept its RAVDESS accuracy at 10 s, base did not).
    Returns from `transcribe`: one stripped transcript per wave ('' if silent).
    Example: `FasterWhisperTranscriber("tiny.en").transcribe([wave])  # ['Kids are talking by the door.']`.
    """

    def __init__(self, model_dir_or_name: str | Path = "tiny.en", device: str = "cpu", compute_type: str = "int8",
                 *, beam_size: int = 1, cpu_threads: int | None = None, language: str = "en",
                 vad_filter: bool = False, local_files_only: bool = True, window_s: float = WINDOW_S) -> None:
        from faster_whisper import WhisperModel  # heavy import, only when ASR is wanted
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model = resolve_model(model_dir_or_name, local_files_only)
        self.model = WhisperModel(model, device=device, compute_type=compute_type,
                                  cpu_threads=cpu_threads or _default_threads(), local_files_only=local_files_only)
        if not 1 <= window_s <= WINDOW_S:
            raise ValueError(f"ASR window must be 1-{WINDOW_S} s, got {window_s}")
        self.beam_size, self.language, self.vad_filter, self.window_s = beam_size, language, vad_filter, window_s
        multilingual = self.model.model.is_multilingual
        if not multilingual and language != "en":
            raise ValueError(f"{model_dir_or_name} is an English-only Whisper: it cannot transcribe language "
                             f"{language!r}; use a multilingual one (encoders.asr=base)")
        self.tokenizer = Tokenizer(self.model.hf_tokenizer, multilingual, task="transcribe",
                                   language=language if multilingual else None)
        self.prompt = self.model.get_prompt(self.tokenizer, [], without_timestamps=True)
        self.suppress = list(get_suppressed_tokens(self.tokenizer, [-1]))
        label = str(model_dir_or_name) if str(model_dir_or_name) in PACKAGED_ASR_MODELS else None
        self.identity = (f"{weights_id('faster-whisper', model, label=label)}|{compute_type}"
                         f"|beam={beam_size}|lang={language}|vad={vad_filter}|temperature=0|batched-notimestamps"
                         + (f"|window={window_s:g}" if window_s != WINDOW_S else ""))

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[str]:
        """16 kHz mono waveforms → one transcript per wave; clips ≤ 30 s are decoded in one batch."""
        waves = [np.asarray(w, dtype=np.float32) for w in waves]
        texts = [""] * len(waves)  # under 10 ms there is nothing to hear
        short = [i for i, w in enumerate(waves) if SAMPLE_RATE // 100 <= w.size <= WINDOW_S * SAMPLE_RATE]
        for i, text in zip(short, self._decode_windows([waves[i] for i in short]) if short else []):
            texts[i] = text
        for i, wave in enumerate(waves):
            if wave.size > WINDOW_S * SAMPLE_RATE:
                texts[i] = self._transcribe_long(wave)
        return texts

    def _decode_windows(self, waves: list[np.ndarray]) -> list[str]:
        """Clips of at most one window → transcripts, in one encoder call and one batched decode."""
        from faster_whisper.audio import pad_or_trim

        # Pad to the window (Whisper's 30 s unless asked for less; never below the longest clip).
        # Shorter windows cut the encoder's cost but the decoder may loop on them: see the README.
        longest = max(w.size for w in waves) / SAMPLE_RATE
        frames = round(min(WINDOW_S, max(self.window_s, longest)) * 100)  # 100 mel frames per second
        frames += frames % 2  # the encoder's stride-2 convolution
        features = np.stack([pad_or_trim(self.model.feature_extractor(w)[..., :-1], frames) for w in waves])  # (B, 80, F)
        encoded = self.model.encode(features)
        results = self.model.model.generate(
            encoded, [list(self.prompt) for _ in waves], beam_size=self.beam_size, max_length=self.model.max_length,
            suppress_blank=True, suppress_tokens=self.suppress, return_scores=True, return_no_speech_prob=True)
        texts = []
        for result in results:
            tokens = result.sequences_ids[0]
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)  # faster-whisper's definition
            silent = result.no_speech_prob > NO_SPEECH_PROB and avg_logprob < MIN_AVG_LOGPROB
            texts.append("" if silent else self.tokenizer.decode(tokens).strip())
        return texts

    def _transcribe_long(self, wave: np.ndarray) -> str:
        # temperature=0 only: faster-whisper's default falls back to *sampling* at higher temperatures
        # when a decode looks repetitive, which makes transcripts (and so predictions) vary run to run.
        segments, _info = self.model.transcribe(wave, language=self.language, beam_size=self.beam_size,
                                                vad_filter=self.vad_filter, temperature=0.0)
        return " ".join(s.text.strip() for s in segments if s.text.strip())
