"""Frozen encoders (speech, text) and ASR, by registry name, local directory or Hugging Face id."""
from dmha.encoders.asr import FasterWhisperTranscriber
from dmha.encoders.base import SAMPLE_RATE, EncoderInfo, SpeechEncoder, TextEncoder, Transcriber
from dmha.encoders.ct2_whisper import build_whisper_encoder, load_ct2_whisper
from dmha.encoders.hf import HFSpeechEncoder, HFTextEncoder
from dmha.encoders.registry import (
    DEFAULT_SPEECH_ENCODER,
    DEFAULT_TEXT_ENCODER,
    DEFAULT_TRANSCRIBER,
    SPEECH_ENCODERS,
    TEXT_ENCODERS,
    TRANSCRIBERS,
    EncoderNotFoundError,
    clear_cache,
    load_speech_encoder,
    load_text_encoder,
    load_transcriber,
)
from dmha.encoders.whisper import WhisperSpeechEncoder

__all__ = [
    "DEFAULT_SPEECH_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "DEFAULT_TRANSCRIBER",
    "SAMPLE_RATE",
    "SPEECH_ENCODERS",
    "TEXT_ENCODERS",
    "TRANSCRIBERS",
    "EncoderInfo",
    "EncoderNotFoundError",
    "FasterWhisperTranscriber",
    "HFSpeechEncoder",
    "HFTextEncoder",
    "SpeechEncoder",
    "TextEncoder",
    "Transcriber",
    "WhisperSpeechEncoder",
    "build_whisper_encoder",
    "clear_cache",
    "load_ct2_whisper",
    "load_speech_encoder",
    "load_text_encoder",
    "load_transcriber",
]
