"""Indian EmoSpeech Command importer: phone recordings of one keyword each, the speaker's own portrayal
of an emotion, users from the hash that ends every file name.

Two layouts are recognised (only file names matter, in any audio format):
- the original repository: `webservice/<keyword>-<environment>-<emotion>-<timestamp>-<userhash>.wav`
  (other place folders are read too, but see below);
- a converted copy with its own `manifest.csv` holding `split` (as in ../shared/data/emospeech): its
  splits, by user, are kept.

What is left out, as the corpus's own README and ../shared/data/emospeech/PROVENANCE.md explain:
the "unknown user" hash (thousands of clips from many people under one hash, so it cannot be split by
speaker), clips with emotion `None` or keyword `background` (no keyword spoken: nothing portrayed), and
byte-identical files that carry different labels (both copies: the label cannot be trusted).

Labels. The corpus offers Calm, Happy, Angry and Fearful, and no neutral. `calm` is the state a user
portrays when portraying no emotion (the low-arousal baseline of the set), the role `neutral` plays in
the other corpora's vocabularies, so by default it is imported as `neutral`: a six-class model
(angry, disgust, fear, happy, neutral, sad) can then be scored on every clip. RAVDESS, whose actors
were asked for both calm and neutral, keeps the two apart; `calm_as="calm"` keeps EmoSpeech's name
instead. The corpus's own name stays in the `source_label` column either way.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from dmha.audio import is_audio_file
from dmha.data.manifest import CorpusError, Item, add_durations, write_manifest

log = logging.getLogger(__name__)

CORPUS = "emospeech"
_NAME = re.compile(r"(?P<keyword>[a-z]+)-(?P<environment>[a-z ]+)-(?P<emotion>[a-z]+)-(?P<timestamp>[^-]+)"
                   r"-(?P<user>[0-9a-f]{10,})", re.IGNORECASE)
EMOTIONS = {"calm": "calm", "happy": "happy", "angry": "angry", "fearful": "fear"}
CALM_AS = ("neutral", "calm")
# The README's "Unknown user": many people under one hash, so no speaker split can hold it.
UNKNOWN_USER = "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f"
NO_KEYWORD = "background"
USER_DIGITS = 10  # the converted copy names users by the hash's first 10 hex digits (unique here)
SPLIT_FRACTIONS = (0.7, 0.15)  # train, dev; the rest test, by user


def prepare_emospeech(src: str | os.PathLike[str], out: str | os.PathLike[str], *, transcripts: bool = True,
                      calm_as: str = "neutral") -> list[Item]:
    """Build a manifest for the Indian EmoSpeech Command dataset and write it to `out`.

    Args:
        src: folder searched recursively for EmoSpeech-named audio files.
        out: manifest CSV to write.
        transcripts: fill `transcript` with the spoken keyword (`unknown` keywords stay empty).
        calm_as: the canonical label of the corpus's `calm` ("neutral", the default, or "calm"; module
            docstring says why).

    Returns:
        The items written, sorted by path. Extra columns: corpus, sex (unknown), keyword, environment,
        source_label (the corpus's emotion name) and duration_s.

    Raises:
        CorpusError: no EmoSpeech files, an unknown emotion, or unreadable audio.
    """
    if calm_as not in CALM_AS:
        raise ValueError(f"calm_as must be one of {', '.join(CALM_AS)}, got {calm_as!r}")
    root = Path(src)
    if not root.is_dir():
        raise CorpusError(f"{root}: EmoSpeech folder not found")
    given = _given_splits(root)
    clips = _usable(_find_clips(root), root)
    items = []
    for path, fields in clips:
        emotion = EMOTIONS[fields["emotion"].lower()]
        keyword = fields["keyword"].lower()
        user = fields["user"].lower()[:USER_DIGITS]
        extra = {"corpus": CORPUS, "sex": "unknown", "keyword": keyword, "environment": fields["environment"],
                 "source_label": emotion}
        items.append(Item(path=path.resolve(), label=calm_as if emotion == "calm" else emotion,
                          split=given.get(path.stem, ""), speaker=user,
                          transcript=keyword if transcripts and keyword != "unknown" else None, extra=extra))
    if any(not item.split for item in items):
        _assign_splits(items)
    add_durations(items, root)
    write_manifest(items, out)
    log.info("EmoSpeech: %d clips of %d users from %s written to %s", len(items), len({i.speaker for i in items}),
             root, out)
    return items


def parse_name(path: Path) -> dict[str, str] | None:
    """The fields of an EmoSpeech file name (keyword, environment, emotion, timestamp, user); None for
    other names. An emotion the corpus does not define is an error; `None` is returned as such."""
    match = _NAME.fullmatch(path.stem)
    if match is None:
        return None
    fields = match.groupdict()
    if fields["emotion"].lower() not in (*EMOTIONS, "none"):
        raise CorpusError(f"{path}: unknown EmoSpeech emotion {fields['emotion']!r}")
    return fields


def _find_clips(root: Path) -> list[tuple[Path, dict[str, str]]]:
    clips = [(p, f) for p in sorted(root.rglob("*")) if is_audio_file(p) and p.is_file()
             if (f := parse_name(p)) is not None]
    if not clips:
        raise CorpusError(f"{root}: no EmoSpeech audio files found "
                          "(expected names like webservice/help-safe-angry-1563001087773-<userhash>.wav)")
    return clips


def _usable(clips: list[tuple[Path, dict[str, str]]], root: Path) -> list[tuple[Path, dict[str, str]]]:
    """The clips a speaker-independent emotion study can use (module docstring: what is left out and why)."""
    dropped: dict[str, int] = defaultdict(int)
    kept = []
    for path, fields in clips:
        if fields["user"].lower() == UNKNOWN_USER:
            dropped["unknown user"] += 1
        elif fields["emotion"].lower() == "none" or fields["keyword"].lower() == NO_KEYWORD:
            dropped["no keyword spoken"] += 1
        else:
            kept.append((path, fields))
    by_content: dict[str, list[int]] = defaultdict(list)
    for k, (path, _) in enumerate(kept):
        by_content[hashlib.sha256(path.read_bytes()).hexdigest()].append(k)
    conflicting = set()
    for group in by_content.values():
        if len({kept[k][1]["emotion"].lower() for k in group}) > 1:
            conflicting.update(group)
    if conflicting:
        dropped["identical files with different labels"] = len(conflicting)
    kept = [clip for k, clip in enumerate(kept) if k not in conflicting]
    if dropped:
        log.info("EmoSpeech: left out %s", ", ".join(f"{n} ({why})" for why, n in sorted(dropped.items())))
    if not kept:
        raise CorpusError(f"{root}: no usable EmoSpeech clips (all were of the unknown user or had no keyword)")
    return kept


def _given_splits(root: Path) -> dict[str, str]:
    """Splits of a converted copy's manifest.csv, by file stem."""
    path = root / "manifest.csv"
    if not path.is_file():
        return {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CorpusError(f"{path}: cannot read ({err})") from None
    if not rows or "path" not in rows[0] or "split" not in rows[0]:
        return {}
    return {Path(r["path"]).stem: r["split"] for r in rows if r.get("split") in ("train", "dev", "test")}


def _assign_splits(items: list[Item]) -> None:
    """Speaker-independent split, deterministic: the users in a fixed seeded order, 70% train,
    15% dev, the rest test (every split gets a user when there are at least 3)."""
    users = sorted({i.speaker for i in items})
    order = list(np.random.default_rng(0).permutation(users))
    n_dev = max(round(SPLIT_FRACTIONS[1] * len(order)), 1 if len(order) >= 3 else 0)
    n_train = min(round(SPLIT_FRACTIONS[0] * len(order)), len(order) - n_dev - (1 if len(order) >= 3 else 0))
    split_of = {u: "train" if k < n_train else "dev" if k < n_train + n_dev else "test" for k, u in enumerate(order)}
    for item in items:
        item.split = split_of[item.speaker]
