"""Fill missing transcripts with ASR, caching each result by audio content and ASR identity."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from .audio import AudioError, file_digest, load_audio
from .config import EncodersConfig
from .data.manifest import Item
from .encoders.base import Transcriber
from .layout import StoreRoot
from .fileio import atomic_write_text

log = logging.getLogger(__name__)


def transcribe_items(
    items: Sequence[Item],
    asr_identity: str,
    get_transcriber: Callable[[], Transcriber],
    stores: StoreRoot,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[list[Item], list[tuple[str, str]]]:
    """Return items with every empty transcript filled (given ones kept) and the (path, reason) of failures.

    The transcriber is only built (get_transcriber) when some transcript is missing and not cached,
    so a fully transcribed manifest never loads the ASR model.
    """
    out = list(items)
    errors: list[tuple[str, str]] = []
    todo: list[tuple[int, Path]] = []
    for i, item in enumerate(items):
        if item.transcript is not None and item.transcript.strip():
            continue
        try:
            path = stores.transcript_path(asr_identity, file_digest(item.path))
        except AudioError as err:
            errors.append((str(item.path), err.reason))
            continue
        if path.exists():
            out[i] = dataclasses.replace(item, transcript=path.read_text(encoding="utf-8"))
        else:
            todo.append((i, path))
    transcriber = get_transcriber() if todo else None
    for start in tqdm(range(0, len(todo), batch_size), desc="transcribing", disable=not progress or not todo):
        chunk, waves = [], []
        for i, path in todo[start:start + batch_size]:
            try:
                waves.append(load_audio(items[i].path))
                chunk.append((i, path))
            except AudioError as err:
                errors.append((str(items[i].path), err.reason))
        for (i, path), text in zip(chunk, transcriber.transcribe(waves) if waves else []):
            atomic_write_text(path, text)
            out[i] = dataclasses.replace(items[i], transcript=text)
    return out, errors


def asr_identity(enc: EncodersConfig) -> str:
    """Cache identity of the ASR setting (the name is enough: registry names pin packaged weights)."""
    window = f"|window={enc.asr_window_s:g}" if enc.asr_window_s != 30 else ""
    language = f"|lang={enc.asr_language}" if enc.asr_language != "en" else ""
    return f"asr:{enc.asr}|temperature=0|batched-notimestamps{window}{language}"  # settings that change the text


def fill_transcripts(items: Sequence[Item], enc: EncodersConfig, stores: StoreRoot,
                     batch_size: int = 8, progress: bool = True) -> tuple[list[Item], list[tuple[str, str]]]:
    """ASR for every item without a transcript (cached; given transcripts are kept). A speech-only model
    (`encoders.text = "none"`) reads no transcript: nothing is transcribed."""
    from .encoders.registry import transcriber, uses_text

    if not uses_text(enc):
        return list(items), []

    return transcribe_items(items, asr_identity(enc), lambda: transcriber(enc),
                            stores, batch_size=batch_size, progress=progress)
