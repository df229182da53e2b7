"""Many files and long recordings: `EmotionRecognizer.predict_files` / `iter_predict_files` (length-sorted
windows, each result as soon as it is known, bad files reported and skipped) and `predict_long` (a
recording streamed block by block through voice activity detection into segments, memory flat)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .audio import SAMPLE_RATE, AudioError, as_array, audio_duration, is_waveform, load_audio
from .batching import MAX_BATCH_SECONDS, length_sorted_batches
from .segment import SegmentStream, stream_audio
from .timeline import Segment, Timeline

if TYPE_CHECKING:
    from .inference import EmotionRecognizer
    from .prediction import Prediction, SpeakerProfile

log = logging.getLogger(__name__)
PREDICT_WINDOW_BATCHES = 8  # files are length-sorted within windows of this many batches


class PredictionStopped(RuntimeError):
    """predict_long gave up because its caller's should_stop said so (e.g. a service deadline)."""


def predict_long(rec: "EmotionRecognizer", inputs, *, sample_rate: int | None = None, min_s: float = 2.0, max_s: float = 15.0,
                 batch_size: int = 8, progress: Callable[[float], None] | None = None,
                 transcribe: bool = True, max_seconds: float | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Timeline:
    """Predict the emotion of each speech segment of a long recording.

    The audio is streamed (a file is read in blocks, never whole), silero-vad finds speech,
    speech regions are merged or split into segments of min_s-max_s seconds, and segments are
    predicted in batches as they complete, so memory stays flat however long the file is.

    Args:
        inputs: an audio file path, or a waveform (numpy array or torch tensor, as for predict).
        sample_rate: the waveform's rate in Hz (waveforms only).
        min_s, max_s: segment length bounds in seconds (shorter speech is merged with a neighbour
            or widened into the surrounding silence; longer speech is cut into equal pieces).
        batch_size: segments per encoder call.
        progress: called with the seconds of audio consumed after each block (e.g. tqdm.update).
        transcribe: run ASR on each segment (True) or give the text branch an empty transcript.
        max_seconds: stop with an AudioError once more than this much audio has been decoded
            (a file's header may understate its length); None: no limit.
        should_stop: checked before each block of audio and each batch of segments; once it
            returns True the job stops with PredictionStopped (a caller's deadline, for example)
            and has let go of the input.

    Returns:
        A Timeline: `path`, `duration` (s) and `segments` (start, end, label, probs, transcript).

    Example:
        >>> timeline = rec.predict_long("meeting.flac", max_s=10)    # doctest: +SKIP
        >>> [(s.start, s.label) for s in timeline.segments[:2]]      # doctest: +SKIP
        [(0.42, 'neutral'), (3.9, 'happy')]
        >>> timeline.write_csv("meeting.csv"); timeline.plot("meeting.png")   # doctest: +SKIP
    """
    if not rec.predicts_category:
        raise ValueError(f"{rec.members[0].name}: an attribute-only model has no labels for a timeline; "
                         "predict segments' attributes with predict() on each segment")
    if isinstance(inputs, (str, Path)):
        audio = stream_audio(inputs, sample_rate, max_seconds=max_seconds)
    elif is_waveform(inputs):
        audio = stream_audio(as_array(inputs), sample_rate, max_seconds=max_seconds)
    else:
        raise TypeError(f"predict_long takes one path or waveform, got {type(inputs).__name__}")
    stop = should_stop or (lambda: False)

    def blocks():
        for block in audio.blocks:
            if stop():
                raise PredictionStopped(f"{audio.name}: stopped after {block_end[0]:.0f} s of audio")
            block_end[0] += len(block) / SAMPLE_RATE
            yield block

    block_end = [0.0]
    stream = SegmentStream(blocks(), min_s=min_s, max_s=max_s, progress=progress)
    segments, batch = [], []
    try:
        for item in stream:
            batch.append(item)
            if len(batch) >= batch_size:
                segments += _predict_segments(rec, batch, transcribe, stop, audio.name)
                batch = []
        segments += _predict_segments(rec, batch, transcribe, stop, audio.name)
    finally:
        close = getattr(audio.blocks, "close", None)
        if close is not None:
            close()  # a stopped job closes its file now, not when the generator is collected
    log.info("%s: %d segments in %.1f s of audio", audio.name, len(segments), stream.duration)
    return Timeline(audio.name, stream.duration, segments, rec.labels)

def _predict_segments(rec: "EmotionRecognizer", batch, transcribe: bool, stop=lambda: False, name: str = "") -> list[Segment]:
    if not batch:
        return []
    if stop():
        raise PredictionStopped(f"{name}: stopped at {batch[0].start:.0f} s")
    # the segments are silero's speech regions: the speech gate would only ask again
    preds = rec.predict_waves([s.wave for s in batch], [None if transcribe else ""] * len(batch), check_speech=False)
    return [Segment(s.start, s.end, p.label, p.probs, p.transcript, p.votes) for s, p in zip(batch, preds)]

def predict_files(rec: "EmotionRecognizer", paths: Sequence[str | Path], transcripts: Sequence[str | None] | None = None,
                  batch_size: int = 1, return_attention: bool = False, progress=None,
                  speaker: SpeakerProfile | None = None) -> tuple[list[Prediction | None], list[tuple[str, str]]]:
    """Batch prediction in length-sorted buckets; bad files are skipped and reported, never fatal."""
    results: list[Prediction | None] = [None] * len(paths)
    errors: list[tuple[str, str]] = []
    for i, pred, reason in iter_predict_files(rec, paths, transcripts, batch_size, return_attention, progress,
                                                   speaker):
        if pred is not None:
            results[i] = pred
        else:
            errors.append((str(paths[i]), reason))
    return results, errors

def iter_predict_files(rec: "EmotionRecognizer", paths: Sequence[str | Path], transcripts: Sequence[str | None] | None = None,
                       batch_size: int = 1, return_attention: bool = False, progress=None,
                       speaker: SpeakerProfile | None = None):
    """Yield (index, Prediction, None) or (index, None, reason) for every file, in input order, as
    soon as its window is done, so a caller can write each result before the next file runs.

    With batch_size > 1, files are length-sorted within windows of 8 batches (less padding) and the
    window is yielded in input order (a batch also keeps within MAX_BATCH_SECONDS of padded
    audio, so long files go in small batches): a crash loses at most the window in progress; with
    batch_size 1, each file is yielded as soon as it is done. An unreadable file, or a batch the
    model fails on (e.g. out of memory), is reported with its reason and the others go on."""
    transcripts = list(transcripts) if transcripts is not None else [None] * len(paths)
    window = batch_size * PREDICT_WINDOW_BATCHES if batch_size > 1 else 1  # one at a time: nothing to sort
    for first in range(0, len(paths), window):
        done: dict[int, tuple[Prediction | None, str | None]] = {}
        durations = {}
        for i in range(first, min(first + window, len(paths))):
            try:
                durations[i] = rec._check_duration(paths[i], audio_duration(paths[i]))
            except AudioError as err:
                done[i] = (None, err.reason)
        ids = sorted(durations)
        for batch in length_sorted_batches([durations[i] for i in ids], batch_size, MAX_BATCH_SECONDS,
                                           longest_first=False):
            chunk = [ids[k] for k in batch]
            done.update(_predict_chunk(rec, paths, transcripts, chunk, return_attention, speaker))
            if progress is not None:
                progress(len(chunk))
        if progress is not None:
            progress(len(done) - len(ids))  # the unreadable ones
        for i in sorted(done):
            yield (i, *done[i])

def _predict_chunk(rec: "EmotionRecognizer", paths, transcripts, chunk: list[int], return_attention: bool,
                   speaker: SpeakerProfile | None = None) -> dict[int, tuple[Prediction | None, str | None]]:
    done: dict[int, tuple[Prediction | None, str | None]] = {}
    index, waves = [], []
    for i in chunk:
        try:
            waves.append(load_audio(paths[i]))
            index.append(i)
        except AudioError as err:
            done[i] = (None, err.reason)
    if not waves:
        return done
    try:
        preds = rec.predict_waves(waves, [transcripts[i] for i in index], return_attention, speaker)
    except (RuntimeError, MemoryError) as err:  # e.g. torch out of memory: this batch fails, not the job
        reason = f"prediction failed ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})"
        log.warning("%s: %s", ", ".join(str(paths[i]) for i in index), reason)
        return {**done, **{i: (None, reason) for i in index}}
    for i, pred in zip(index, preds):
        pred.path = str(paths[i])
        done[i] = (pred, None)
    return done
