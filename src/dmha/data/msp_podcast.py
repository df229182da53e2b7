"""MSP-Podcast importer for the Odyssey 2024 SER challenge layout, and the challenge's label codes."""
from __future__ import annotations

import csv
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dmha.audio import is_audio_file
from dmha.data.manifest import CorpusError, Item, add_durations, read_transcript, write_manifest

log = logging.getLogger(__name__)

# EmoClass codes of labels_consensus.csv → dmha labels (the challenge's 8 categorical classes).
EMO_CODES: dict[str, str] = {"A": "angry", "H": "happy", "S": "sad", "F": "fear", "U": "surprise",
                             "C": "contempt", "D": "disgust", "N": "neutral"}
# What a challenge submission writes in its EmoClass column for each dmha label.
CHALLENGE_CODES: dict[str, str] = {label: code for code, label in EMO_CODES.items()}
NO_AGREEMENT = ("X", "O")  # no consensus / other: not one of the 8 classes, so dropped
# Split_Set → manifest split; Test1 and Test2 (labels public) and Test3 (the challenge's test set, labels
# hidden) stay apart, others are lowercased.
SPLITS = {"Train": "train", "Development": "dev", "Test1": "test1", "Test2": "test2", "Test3": "test3"}
HIDDEN = "test3"  # the split whose labels are hidden: its files are kept, labelled UNLABELLED
UNLABELLED = "unknown"  # label of rows without EmoClass (Test3 always; others with include_unlabelled=True)
EXTRA_COLUMNS = ("FileName", "EmoAct", "EmoVal", "EmoDom", "Gender")  # kept as-is when present
ATTRIBUTE_RANGE = (1.0, 7.0)  # EmoAct, EmoVal, EmoDom: the annotators' 7-point scales
# Task 2 submission columns and the attribute names a model may give them (first match wins).
TASK2 = {"EmoAct": ("arousal", "emoact", "activation"), "EmoVal": ("valence", "emoval"),
         "EmoDom": ("dominance", "emodom")}
VOTE_PREFIX = "votes_"  # per-class annotator counts from labels_detailed.csv: votes_angry, ..., votes_n
_WORDS = {label: label for label in EMO_CODES.values()} | {"anger": "angry", "happiness": "happy",
                                                           "sadness": "sad"}
_REQUIRED = ("FileName", "Split_Set")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]+")
_SHOW = 5  # missing files named in an error; the rest are counted


@dataclass(frozen=True)
class _Row:
    """One row of labels_consensus.csv, checked."""

    file_name: str
    code: str  # EmoClass as given, upper-cased; "" when unlabelled
    split: str
    speaker: str | None
    extra: dict[str, str]


def prepare_msp_podcast(
    src: str | os.PathLike[str], out: str | os.PathLike[str], *, include_unlabelled: bool = False
) -> list[Item]:
    """Build a manifest for MSP-Podcast (Odyssey 2024 challenge layout) and write it to `out`.

    Reads `SRC/Labels/labels_consensus.csv`, audio `SRC/Audios/<FileName>` and, when present,
    `SRC/Transcripts/<stem>.txt` (others are left empty for `dmha transcribe`). EmoClass A H S F U C
    D N → angry happy sad fear surprise contempt disgust neutral; X/O rows (no agreement, other) are
    dropped and counted in the log. Split_Set Train/Development/Test1/Test2/Test3 →
    train/dev/test1/test2/test3, others lowercased. Test3 (the challenge's test set, labels hidden) is
    kept as split test3 with label "unknown": its rows, and audio files in Audios/ that the labels file
    does not list but whose name says test3 (e.g. `MSP-PODCAST_test3_0001.wav`); `train` leaves it out
    and `predict` scores it. Other rows with no EmoClass are skipped and counted, or with
    `include_unlabelled` written as label "unknown". Speaker is SpkrID ("Unknown" → empty); extra
    columns FileName, EmoAct, EmoVal, EmoDom, Gender, duration_s and, when the per-annotator file
    `SRC/Labels/labels_detailed.csv` (FileName + EmoClass per annotator, codes or words) is present,
    votes_<label> for the 8 classes and votes_n (all annotations, "other" ones included):
    `train.soft_targets=votes_` trains on them.

    Args:
        src: the challenge folder (holding Labels/ and Audios/).
        out: manifest CSV to write.
        include_unlabelled: keep rows without EmoClass, labelled "unknown".

    Returns:
        The items written, in the order of labels_consensus.csv.

    Raises:
        CorpusError: no labels file or audio folder, bad columns or codes, duplicate file names,
            no usable rows, or missing or unreadable audio (one error for all).

    Example:
        >>> items = prepare_msp_podcast("MSP-Podcast", "data/msp.csv")
    """
    root = Path(src)
    labels_csv, audio_dir = _layout(root)
    rows = _read_labels(labels_csv)
    rows = _keep(rows + _unlisted_test3(audio_dir, rows), labels_csv, include_unlabelled)
    _check_audio(audio_dir, rows)
    votes = _annotator_votes(root / "Labels" / "labels_detailed.csv")
    items = [_item(row, root) for row in rows]
    for item in items:
        item.extra.update(votes.get(item.path.name, {}))
    add_durations(items, root)
    write_manifest(items, out)
    log.info("MSP-Podcast: %d items (%s) from %s written to %s", len(items),
             _counts(Counter(item.split for item in items)), root, out)
    return items


def challenge_rows(paths: Iterable[str | os.PathLike[str]], labels: Iterable[str]) -> list[tuple[str, str]]:
    """(file name, EmoClass code) per prediction: the rows of a challenge submission CSV.

    Args:
        paths: audio files predicted (only the file name is written, as in labels_consensus.csv).
        labels: one predicted dmha label per path (angry, happy, …, neutral).

    Returns:
        [(FileName, EmoClass)], e.g. [("MSP-PODCAST_0002_0033.wav", "N")].

    Raises:
        ValueError: a label that is not one of the 8 challenge classes, or a length mismatch.

    Example:
        >>> challenge_rows(["a/MSP-PODCAST_0002_0033.wav"], ["neutral"])
        [('MSP-PODCAST_0002_0033.wav', 'N')]
    """
    paths, labels = list(paths), list(labels)
    if len(paths) != len(labels):
        raise ValueError(f"challenge rows need one label per path, got {len(paths)} paths "
                         f"and {len(labels)} labels")
    unknown = sorted(set(labels) - set(CHALLENGE_CODES))
    if unknown:
        raise ValueError(f"label(s) {', '.join(map(repr, unknown))} are not challenge classes "
                         f"(valid: {', '.join(CHALLENGE_CODES)})")
    return [(Path(path).name, CHALLENGE_CODES[label]) for path, label in zip(paths, labels)]


def _layout(root: Path) -> tuple[Path, Path]:
    """The labels file and the audio folder, or an error naming the one that is missing."""
    labels_csv, audio_dir = root / "Labels" / "labels_consensus.csv", root / "Audios"
    if not labels_csv.is_file():
        raise CorpusError(f"{labels_csv}: MSP-Podcast labels file not found")
    if not audio_dir.is_dir():
        raise CorpusError(f"{audio_dir}: MSP-Podcast audio folder not found")
    return labels_csv, audio_dir


def _read_labels(labels_csv: Path) -> list[_Row]:
    """Every row of labels_consensus.csv, checked; file names must be unique."""
    try:
        with open(labels_csv, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            missing = [name for name in _REQUIRED if name not in header]
            if missing:
                raise CorpusError(f"{labels_csv}: missing column(s) {', '.join(missing)} "
                                  f"(found: {', '.join(header) or 'no header'})")
            rows: list[_Row] = []
            seen: dict[str, int] = {}
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue
                row = _parse_row(labels_csv, reader.line_num, header, cells)
                if row.file_name in seen:
                    raise CorpusError(f"{labels_csv}: rows {seen[row.file_name]} and {reader.line_num} "
                                      f"both list {row.file_name}")
                seen[row.file_name] = reader.line_num
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CorpusError(f"{labels_csv}: cannot read labels file ({err})") from None
    return rows


def _parse_row(labels_csv: Path, line: int, header: list[str], cells: list[str]) -> _Row:
    """One CSV row → _Row, or a CorpusError naming the row."""
    values = dict(zip(header, (cell.strip() for cell in cells)))  # short rows: missing cells absent
    file_name, split_set = values.get("FileName", ""), values.get("Split_Set", "")
    if not file_name or not split_set:
        raise CorpusError(f"{labels_csv}: row {line} has an empty FileName or Split_Set")
    if Path(file_name).name != file_name:
        raise CorpusError(f"{labels_csv}: row {line} FileName {file_name!r} is not a plain file name")
    split = SPLITS.get(split_set, split_set.lower())
    if not _SPLIT_NAME.fullmatch(split):
        raise CorpusError(f"{labels_csv}: row {line} has Split_Set {split_set!r}; "
                          "use letters, digits, '_' or '-'")
    code = values.get("EmoClass", "").upper()
    if code and code not in EMO_CODES and code not in NO_AGREEMENT:
        raise CorpusError(f"{labels_csv}: row {line} has EmoClass {code!r} "
                          f"(valid: {', '.join([*EMO_CODES, *NO_AGREEMENT])} or empty)")
    speaker = values.get("SpkrID", "")
    return _Row(file_name=file_name, code=code, split=split,
                speaker=None if speaker.lower() in ("", "unknown") else speaker,
                extra={name: values[name] for name in EXTRA_COLUMNS if name in values})


def _keep(rows: list[_Row], labels_csv: Path, include_unlabelled: bool) -> list[_Row]:
    """Drop X/O rows, and unlabelled rows unless asked for; log how many of each, per split."""
    dropped = Counter(row.split for row in rows if row.code in NO_AGREEMENT)
    unlabelled = Counter(row.split for row in rows if not row.code and row.split != HIDDEN)
    if dropped:
        log.info("MSP-Podcast: dropped %d rows with EmoClass X or O (%s)", dropped.total(), _counts(dropped))
    if unlabelled and not include_unlabelled:
        log.info("MSP-Podcast: skipped %d unlabelled rows (%s); include_unlabelled=True keeps them as %r",
                 unlabelled.total(), _counts(unlabelled), UNLABELLED)
    elif unlabelled:
        log.info("MSP-Podcast: kept %d unlabelled rows as %r (%s)", unlabelled.total(), UNLABELLED,
                 _counts(unlabelled))
    hidden = sum(1 for row in rows if not row.code and row.split == HIDDEN)
    if hidden:
        log.info("MSP-Podcast: kept %d %s rows (labels hidden) as label %r", hidden, HIDDEN, UNLABELLED)
    kept = [row for row in rows if row.code in EMO_CODES or (not row.code and (include_unlabelled or row.split == HIDDEN))]
    if not kept:
        raise CorpusError(f"{labels_csv}: no usable rows ({len(rows)} rows, {dropped.total()} X/O, "
                          f"{unlabelled.total()} unlabelled)")
    return kept


def _unlisted_test3(audio_dir: Path, rows: list[_Row]) -> list[_Row]:
    """Test3 files the labels file does not list, recognised by name (`test3` in it): unlabelled rows."""
    listed = {row.file_name for row in rows}
    found = sorted(p.name for p in audio_dir.iterdir() if p.is_file() and "test3" in p.name.lower()
                   and p.name not in listed and is_audio_file(p))
    if found:
        log.info("MSP-Podcast: %d Test3 files found by name in %s (not in the labels file)", len(found), audio_dir)
    return [_Row(file_name=name, code="", split=HIDDEN, speaker=None, extra={"FileName": name}) for name in found]


def _annotator_votes(path: Path) -> dict[str, dict[str, str]]:
    """{FileName: {votes_<label>: count, ..., votes_n: all}} from the per-annotator labels file, if any."""
    if not path.is_file():
        return {}
    counts: dict[str, Counter] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            if not {"FileName", "EmoClass"} <= set(reader.fieldnames or []):
                raise CorpusError(f"{path}: needs columns FileName and EmoClass (found: {', '.join(reader.fieldnames or [])})")
            for row in reader:
                name, said = (row.get("FileName") or "").strip(), (row.get("EmoClass") or "").strip()
                if not name or not said:
                    continue
                label = EMO_CODES.get(said.upper()) if len(said) == 1 else _WORDS.get(said.lower())
                tally = counts.setdefault(name, Counter())
                tally["n"] += 1
                if label is not None:
                    tally[label] += 1
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CorpusError(f"{path}: cannot read per-annotator labels ({err})") from None
    log.info("MSP-Podcast: annotator votes for %d files from %s", len(counts), path)
    return {name: {f"{VOTE_PREFIX}{label}": str(tally[label]) for label in sorted(EMO_CODES.values())}
            | {f"{VOTE_PREFIX}n": str(tally["n"])} for name, tally in counts.items()}


def task2_columns(attributes) -> list[str]:
    """For EmoAct, EmoVal, EmoDom, the model attribute that fills each (a Task 2 submission's columns).

    Raises:
        ValueError: the model lacks one of arousal, valence and dominance (by those names or EmoAct...).
    """
    by_name = {a.lower(): a for a in attributes}
    chosen, missing = [], []
    for column, names in TASK2.items():
        match = next((by_name[n] for n in names if n in by_name), None)
        (chosen if match else missing).append(match or column)
    if missing:
        raise ValueError(f"--format challenge-task2 needs attributes arousal, valence and dominance (or EmoAct, EmoVal, "
                         f"EmoDom); the model predicts {', '.join(attributes) or 'none'}")
    return chosen


def challenge_task2_row(path, attributes: dict[str, float], names: list[str]) -> list[str]:
    """FileName,EmoAct,EmoVal,EmoDom for one prediction, clipped to the 1-7 scale.

    Example:
        >>> challenge_task2_row("a/MSP-PODCAST_0002_0033.wav", {"arousal": 4.2, "valence": 7.3, "dominance": 3},
        ...                     ["arousal", "valence", "dominance"])
        ['MSP-PODCAST_0002_0033.wav', '4.2000', '7.0000', '3.0000']
    """
    low, high = ATTRIBUTE_RANGE
    return [Path(path).name, *(f"{min(max(attributes[n], low), high):.4f}" for n in names)]


def _check_audio(audio_dir: Path, rows: list[_Row]) -> None:
    """One error for all missing audio, so a partial download is fixed in one go."""
    missing = [row.file_name for row in rows if not (audio_dir / row.file_name).is_file()]
    if missing:
        more = f" and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
        raise CorpusError(f"{audio_dir}: {len(missing)} of {len(rows)} audio files listed in "
                          f"labels_consensus.csv not found: {', '.join(missing[:_SHOW])}{more}")


def _item(row: _Row, root: Path) -> Item:
    """A kept row → manifest item, with its transcript when there is one."""
    return Item(
        path=(root / "Audios" / row.file_name).resolve(),
        label=EMO_CODES.get(row.code, UNLABELLED),
        split=row.split,
        speaker=row.speaker,
        transcript=read_transcript(root / "Transcripts" / f"{Path(row.file_name).stem}.txt"),
        extra={"corpus": "msp-podcast", **row.extra},
    )




def _counts(counter: Counter) -> str:
    """'dev 2, train 3': per-split counts for the log."""
    return ", ".join(f"{split} {n}" for split, n in sorted(counter.items()))
