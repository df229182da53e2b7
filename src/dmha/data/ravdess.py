"""RAVDESS importer: labels, speakers and a speaker-independent split from the file-name codes."""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dmha.audio import is_audio_file
from dmha.data.manifest import CorpusError, Item, add_durations, write_manifest

log = logging.getLogger(__name__)
VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm"})

# MM-VV-EE-II-SS-RR-AA: modality, vocal channel, emotion, intensity, statement, repetition, actor.
_NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)")
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad",
            "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised"}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_MODALITIES = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
_VOCAL_CHANNELS = {"01": "speech", "02": "song"}


@dataclass(frozen=True)
class Clip:
    """The codes in one RAVDESS file name."""

    path: Path
    modality: str
    vocal_channel: str
    emotion: str
    intensity: str
    statement: str
    repetition: str
    actor: str  # two digits, "01" … "24"

    @property
    def utterance(self) -> tuple[str, ...]:
        """The recording, whichever modality file it came in."""
        return (self.vocal_channel, self.emotion, self.intensity, self.statement, self.repetition,
                self.actor)


def split_of_actor(actor: int) -> str:
    """The speaker-independent split: actors 1-16 train, 17-20 dev, 21-24 test."""
    return "train" if actor <= 16 else "dev" if actor <= 20 else "test"


def prepare_ravdess(
    src: str | os.PathLike[str], out: str | os.PathLike[str], *, transcripts: bool = True
) -> list[Item]:
    """Build a manifest for RAVDESS speech and write it to `out`.

    Works on the original release (`Actor_XX/*.wav`, or under `Audio_Speech_Actors_01-24/`) and
    on converted copies in any audio format; only file names matter. Song and video-only files
    are skipped (counted in the log). Labels are emotion names; extra columns are gender,
    intensity, statement, actor and duration_s.

    Args:
        src: folder searched recursively for RAVDESS-named audio files.
        out: manifest CSV to write.
        transcripts: whether to fill `transcript` with the statement text.

    Returns:
        The items written, sorted by path.

    Raises:
        CorpusError: no RAVDESS files, malformed codes, duplicate clips or unreadable audio.

    Example:
        >>> items = prepare_ravdess("Audio_Speech_Actors_01-24", "data/ravdess.csv")
    """
    root = Path(src)
    if not root.is_dir():
        raise CorpusError(f"{root}: RAVDESS folder not found")
    clips = _speech_clips(root, _find_clips(root))
    items = [_item(clip, transcripts) for clip in clips]
    add_durations(items, root)
    write_manifest(items, out)
    log.info("RAVDESS: %d speech clips from %s written to %s", len(items), root, out)
    return items


def parse_name(path: Path) -> Clip | None:
    """The codes of a RAVDESS file name, None for other names; bad codes are an error."""
    match = _NAME.fullmatch(path.stem)
    if match is None:
        return None
    clip = Clip(path, *match.groups())
    checks = [("modality", clip.modality, _MODALITIES),
              ("vocal channel", clip.vocal_channel, _VOCAL_CHANNELS),
              ("emotion", clip.emotion, EMOTIONS), ("intensity", clip.intensity, INTENSITIES),
              ("statement", clip.statement, STATEMENTS), ("repetition", clip.repetition, {"01", "02"})]
    for field_name, code, known in checks:
        if code not in known:
            raise CorpusError(f"{path}: unknown RAVDESS {field_name} code {code}")
    if not 1 <= int(clip.actor) <= 24:
        raise CorpusError(f"{path}: unknown RAVDESS actor code {clip.actor} (expected 01-24)")
    return clip


def _find_clips(root: Path) -> list[Clip]:
    """Every RAVDESS-named audio file under root, in path order."""
    # RAVDESS ships its audio-video recordings as .mp4 video: the speech corpus is the audio files
    clips = [clip for path in sorted(root.rglob("*"))
             if is_audio_file(path) and path.suffix.lower() not in VIDEO_EXTENSIONS and path.is_file()
             and (clip := parse_name(path)) is not None]
    if not clips:
        raise CorpusError(
            f"{root}: no RAVDESS audio files found "
            "(expected names like Actor_12/03-01-05-02-01-01-12.wav)"
        )
    return clips


def _speech_clips(root: Path, clips: list[Clip]) -> list[Clip]:
    """Speech only, one file per recording; an audio-only file wins over its audio-video twin."""
    speech = [clip for clip in clips if clip.vocal_channel == "01" and clip.modality != "02"]
    songs = sum(clip.vocal_channel == "02" for clip in clips)
    video = sum(clip.vocal_channel == "01" and clip.modality == "02" for clip in clips)
    if songs or video:
        log.info("RAVDESS: skipped %d song and %d video-only files under %s", songs, video, root)
    if not speech:
        raise CorpusError(f"{root}: no RAVDESS speech files (skipped {songs} song, {video} video-only)")
    chosen: dict[tuple[str, ...], Clip] = {}
    for clip in sorted(speech, key=lambda c: c.modality != "03"):  # audio-only first
        kept = chosen.setdefault(clip.utterance, clip)
        if kept is not clip and kept.modality == clip.modality:
            raise CorpusError(f"{root}: RAVDESS clip found twice: {kept.path} and {clip.path}")
    twins = len(speech) - len(chosen)
    if twins:
        log.info("RAVDESS: skipped %d audio-video files that also exist audio-only", twins)
    return sorted(chosen.values(), key=lambda c: c.path)


def _item(clip: Clip, transcripts: bool) -> Item:
    """One speech clip → manifest item."""
    actor = int(clip.actor)
    return Item(
        path=clip.path.resolve(),
        label=EMOTIONS[clip.emotion],
        split=split_of_actor(actor),
        speaker=str(actor),
        transcript=STATEMENTS[clip.statement] if transcripts else None,
        extra={"corpus": "ravdess", "gender": "male" if actor % 2 else "female",
               "intensity": INTENSITIES[clip.intensity], "statement": clip.statement, "actor": clip.actor},
    )

