"""CREMA-D importer: labels, speakers, sentences and intensities from the file names, plus
demographics and the crowd's audio-only votes from the corpus's own tables when they are present.

Two layouts are recognised (only file names matter, in any audio format):
- the original release: `AudioWAV/AAAA_SSS_EEE_II.wav`, with `VideoDemographics.csv` and
  `finishedResponses.csv` (per-rater answers; `queryType` 1 = voice only) beside it, if present;
- a converted copy with its own `manifest.csv` holding sex, age, split and `votes_*` columns (as in
  ../shared/data/crema-d): those columns are kept as they are.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from dmha.audio import is_audio_file
from dmha.data.manifest import CorpusError, Item, add_durations, write_manifest

log = logging.getLogger(__name__)

_NAME = re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})")
EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
_VOTE_LETTERS = {"A": "angry", "D": "disgust", "F": "fear", "H": "happy", "N": "neutral", "S": "sad"}
INTENSITIES = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified",
               "X": "unspecified"}  # the original has one misnamed file, 1040_ITH_SAD_X
SENTENCES = {
    "IEO": "It's eleven o'clock.", "TIE": "That is exactly what happened.", "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.", "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.", "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.", "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.", "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
VOTE_COLUMNS = (*(f"votes_{e}" for e in sorted(EMOTIONS.values())), "votes_n", "vote_majority", "vote_intensity")
SPLIT_FRACTIONS = (0.7, 0.15)  # train, dev; the rest test (per sex, when sexes are known)


def prepare_crema_d(src: str | os.PathLike[str], out: str | os.PathLike[str], *, transcripts: bool = True) -> list[Item]:
    """Build a manifest for CREMA-D and write it to `out`.

    Args:
        src: folder searched recursively for CREMA-D-named audio files (`AAAA_SSS_EEE_II.*`).
        out: manifest CSV to write.
        transcripts: whether to fill `transcript` with the spoken sentence (the 12 carry no emotion).

    Returns:
        The items written, sorted by path. Extra columns: sex, age, sentence, intensity,
        duration_s and, when the votes are known, votes_<emotion>, votes_n, vote_majority, vote_intensity.

    Raises:
        CorpusError: no CREMA-D files, unknown codes, duplicate clips or unreadable audio.
    """
    root = Path(src)
    if not root.is_dir():
        raise CorpusError(f"{root}: CREMA-D folder not found")
    clips = _find_clips(root)
    given = _given_manifest(root)
    demographics = _demographics(root)
    votes = _audio_votes(root)
    items = []
    for path, (actor, sentence, emotion, intensity) in clips:
        row = given.get(path.stem, {})
        extra = {"corpus": "crema-d", "sex": row.get("sex") or demographics.get(actor, {}).get("Sex", "").lower(),
                 "age": row.get("age") or demographics.get(actor, {}).get("Age", ""),
                 "sentence": sentence, "intensity": INTENSITIES[intensity]}
        for column in VOTE_COLUMNS:
            value = row.get(column) if row else votes.get(path.stem, {}).get(column)
            if value not in (None, ""):
                extra[column] = str(value)
        items.append(Item(path=path.resolve(), label=EMOTIONS[emotion], split=row.get("split", ""),
                          speaker=actor, transcript=SENTENCES[sentence] if transcripts else None, extra=extra))
    if any(not item.split for item in items):
        _assign_splits(items)
    add_durations(items, root)
    write_manifest(items, out)
    log.info("CREMA-D: %d clips of %d actors from %s written to %s", len(items),
             len({i.speaker for i in items}), root, out)
    return items


def parse_name(path: Path) -> tuple[str, str, str, str] | None:
    """(actor, sentence, emotion, intensity) codes of a CREMA-D file name; None for other names."""
    match = _NAME.fullmatch(path.stem)
    if match is None:
        return None
    actor, sentence, emotion, intensity = match.groups()
    for what, code, known in (("sentence", sentence, SENTENCES), ("emotion", emotion, EMOTIONS),
                              ("intensity", intensity, INTENSITIES)):
        if code not in known:
            raise CorpusError(f"{path}: unknown CREMA-D {what} code {code}")
    if intensity == "X":
        log.info("CREMA-D: %s has the original's one-letter intensity code X; read as XX (unspecified)", path.name)
    return actor, sentence, emotion, intensity


def _find_clips(root: Path) -> list[tuple[Path, tuple[str, str, str, str]]]:
    clips, seen = [], {}
    for path in sorted(root.rglob("*")):
        if not (is_audio_file(path) and path.is_file()):
            continue
        codes = parse_name(path)
        if codes is None:
            continue
        clip = codes[:3] + (INTENSITIES[codes[3]],)
        if clip in seen:
            raise CorpusError(f"{root}: CREMA-D clip found twice: {seen[clip]} and {path}")
        seen[clip] = path
        clips.append((path, codes))
    if not clips:
        raise CorpusError(f"{root}: no CREMA-D audio files found (expected names like AudioWAV/1001_DFA_ANG_XX.wav)")
    return clips


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CorpusError(f"{path}: cannot read ({err})") from None


def _given_manifest(root: Path) -> dict[str, dict[str, str]]:
    """Rows of a converted copy's manifest.csv (with votes and a split), by file stem."""
    path = root / "manifest.csv"
    if not path.is_file():
        return {}
    rows = _read_csv(path)
    if not rows or "path" not in rows[0] or "votes_n" not in rows[0]:
        return {}
    return {Path(r["path"]).stem: r for r in rows}


def _demographics(root: Path) -> dict[str, dict[str, str]]:
    """VideoDemographics.csv (ActorID, Age, Sex, Race, Ethnicity) by actor, if present."""
    found = sorted(root.rglob("VideoDemographics.csv"))
    return {r["ActorID"].strip(): r for r in _read_csv(found[0])} if found else {}


def _audio_votes(root: Path) -> dict[str, dict[str, str]]:
    """The crowd's voice-only answers (finishedResponses.csv rows with queryType 1), per clip:
    counts per emotion, raters, the majority (ties joined by commas) and the mean perceived level."""
    found = sorted(root.rglob("finishedResponses.csv"))
    if not found:
        return {}
    answers: dict[str, list[tuple[str, float]]] = {}
    for r in _read_csv(found[0]):
        if r.get("queryType", "").strip() != "1" or r.get("respEmo", "").strip() not in _VOTE_LETTERS:
            continue
        try:
            level = float(r.get("respLevel", "nan"))
        except ValueError:
            level = float("nan")
        answers.setdefault(r["clipName"].strip(), []).append((_VOTE_LETTERS[r["respEmo"].strip()], level))
    votes = {}
    for clip, given in answers.items():
        counts = Counter(e for e, _ in given)
        top = max(counts.values())
        levels = [lv for _, lv in given if lv == lv]
        votes[clip] = {**{f"votes_{e}": counts.get(e, 0) for e in sorted(EMOTIONS.values())}, "votes_n": len(given),
                       "vote_majority": ",".join(sorted(e for e, c in counts.items() if c == top)),
                       "vote_intensity": f"{np.mean(levels):.2f}" if levels else ""}
    return votes


def _assign_splits(items: list[Item]) -> None:
    """Speaker-independent split, deterministic: per sex (when known), the actors in a fixed
    seeded order, 70% train, 15% dev, the rest test."""
    by_sex: dict[str, list[str]] = {}
    for actor, sex in sorted({(i.speaker, i.extra.get("sex", "")) for i in items}):
        by_sex.setdefault(sex, []).append(actor)
    split_of = {}
    rng = np.random.default_rng(0)
    for sex in sorted(by_sex):
        actors = list(rng.permutation(by_sex[sex]))
        n_train = round(SPLIT_FRACTIONS[0] * len(actors))
        n_dev = max(round(SPLIT_FRACTIONS[1] * len(actors)), 1 if len(actors) >= 3 else 0)
        n_train = min(n_train, len(actors) - n_dev - (1 if len(actors) >= 3 else 0))  # every split gets an actor
        for k, actor in enumerate(actors):
            split_of[actor] = "train" if k < n_train else "dev" if k < n_train + n_dev else "test"
    for item in items:
        item.split = split_of[item.speaker]
