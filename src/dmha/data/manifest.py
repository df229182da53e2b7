"""The manifest: a CSV of `path,label,split` (+ optional columns) that every dmha command reads."""
from __future__ import annotations

import codecs
import csv
import io
import os
import re

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dmha.audio import AudioError, audio_duration
from dmha.fileio import atomic_path

REQUIRED = ("path", "label", "split")
CORE_COLUMNS = ("path", "label", "split", "speaker", "transcript")
_DELIMITERS = (",", ";", "\t")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]+")
_SHOW_MISSING = 5  # missing files named in the error; the rest are counted


@dataclass
class Item:
    """One utterance of a corpus, with its path already resolved."""

    path: Path  # absolute, resolved
    label: str | None
    split: str
    speaker: str | None = None
    transcript: str | None = None  # None when the column is missing or the cell is empty
    extra: dict[str, str] = field(default_factory=dict)  # every other column, e.g. duration_s


class ManifestError(ValueError):
    """A manifest that cannot be used; the one-line message names the file (and row)."""

    def __init__(self, message: str) -> None:
        # A quoted CSV cell can hold a newline or a tab; the message stays one line whatever it quotes.
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message)))


class CorpusError(ValueError):
    """An importer could not turn a source folder into a manifest."""


def read_transcript(path: Path) -> str | None:
    """A given transcript file on one line (importers); None when absent or empty, so ASR fills it."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise CorpusError(f"{path}: cannot read transcript ({err})") from None
    return " ".join(text.split()) or None


def read_manifest(
    path: str | os.PathLike[str], *, require_label: bool = True, check_files: bool = True
) -> list[Item]:
    """Read and validate a manifest; every problem is found before any audio is touched.

    Args:
        path: the CSV (comma, semicolon or tab separated; UTF-8, BOM tolerated).
        require_label: whether `label` must be a column with a value on every row.
        check_files: whether every audio file must exist.

    Returns:
        One Item per non-blank row, in file order; relative paths resolved against the
        manifest's folder.

    Raises:
        ManifestError: unreadable file, missing columns, empty cells, bad split names,
            duplicate paths, or missing audio files (one error listing them).

    Example:
        >>> items = read_manifest("data/ravdess.csv")
        >>> require_splits(items, ["train", "dev"], "data/ravdess.csv")
    """
    manifest = Path(path)
    text = _read_text(manifest)
    delimiter = _sniff_delimiter(manifest, text)
    records = _records(manifest, csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    header = [name.strip() for name in next(records)[1]]
    _check_header(manifest, header, require_label)
    base = manifest.parent.resolve()  # the folder, not a symlinked file's target
    items: list[Item] = []
    rows_by_path: dict[Path, int] = {}
    for row, cells in records:
        if not any(cell.strip() for cell in cells):
            continue
        item = _parse_row(manifest, row, header, cells, base, require_label, delimiter)
        if item.path in rows_by_path:
            raise ManifestError(
                f"manifest {manifest}: rows {rows_by_path[item.path]} and {row} both name {item.path}"
            )
        rows_by_path[item.path] = row
        items.append(item)
    if not items:
        raise ManifestError(f"manifest {manifest} has no data rows")
    if check_files:
        _check_files(manifest, items)
    return items


def require_splits(
    items: Sequence[Item], splits: Iterable[str], manifest_path: str | os.PathLike[str]
) -> None:
    """Fail early, naming the manifest, when a split a command needs has no rows."""
    found = sorted({item.split for item in items})
    missing = [split for split in splits if split not in found]
    if missing:
        names = ", ".join(f"'{split}'" for split in missing)
        raise ManifestError(
            f"manifest {manifest_path} has no rows in split(s) {names} "
            f"(found: {', '.join(found) or 'none'})"
        )


def write_manifest(items: Iterable[Item], path: str | os.PathLike[str]) -> Path:
    """Write items as a manifest, atomically, with paths relative to its folder where possible.

    Columns are path,label,split,speaker,transcript (always, so `transcribe` can fill them),
    then the extra columns in first-seen order. The parent folder is created.

    Returns:
        The manifest's path.

    Example:
        >>> write_manifest(items, "out/manifest.csv")
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = list(items)
    columns = _columns(rows)
    base = out.parent.resolve()
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for item in rows:
            writer.writerow(_row(item, columns, base))
    return out


def labels_of(items: Iterable[Item]) -> list[str]:
    """Sorted unique labels, the order a model stores its classes in."""
    return sorted({item.label for item in items if item.label is not None})


def add_durations(items: Iterable[Item], source: str | os.PathLike[str]) -> None:
    """Fill extra['duration_s'] from each header (cheap); finds unreadable files before training does.

    Raises:
        CorpusError: one error naming `source`, the count and the first few bad files.
    """
    bad: list[str] = []
    for item in items:
        try:
            item.extra["duration_s"] = f"{audio_duration(item.path):.3f}"
        except AudioError as err:
            bad.append(str(err))
    if bad:
        more = f"; and {len(bad) - _SHOW_MISSING} more" if len(bad) > _SHOW_MISSING else ""
        shown = "; ".join(bad[:_SHOW_MISSING])
        raise CorpusError(f"{source}: {len(bad)} unreadable audio files: {shown}{more}")


def _read_text(manifest: Path) -> str:
    """The whole file as text (UTF-8, or UTF-16 with its BOM: Excel's "Unicode text"); no NUL bytes."""
    try:
        raw = manifest.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"manifest {manifest}: file not found") from None
    except IsADirectoryError:
        raise ManifestError(f"manifest {manifest}: is a directory, not a CSV file") from None
    except PermissionError:
        raise ManifestError(f"manifest {manifest}: permission denied") from None
    except OSError as err:
        raise ManifestError(f"manifest {manifest}: cannot read ({err.strerror or err})") from None
    encoding = "UTF-16" if raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "UTF-8"
    try:
        text = raw.decode("utf-16" if encoding == "UTF-16" else "utf-8-sig")
    except UnicodeDecodeError as err:
        raise ManifestError(f"manifest {manifest}: not {encoding} text (byte {err.start})") from None
    if "\0" in text:  # csv would pass it on, and no path can hold it
        line = text.count("\n", 0, text.index("\0")) + 1
        raise ManifestError(f"manifest {manifest}: line {line} holds a NUL byte (a binary file, not CSV text)")
    return text


def _records(manifest: Path, reader) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) of each CSV record; the csv module's own errors become ManifestErrors.

    The row number is the line the record starts on (a quoted cell may span lines).
    """
    try:
        start = 1
        for cells in reader:
            yield start, cells
            start = reader.line_num + 1
    except csv.Error as err:
        raise ManifestError(f"manifest {manifest}: malformed CSV near line {reader.line_num} ({err})") from None


def _sniff_delimiter(manifest: Path, text: str) -> str:
    """The delimiter whose header has a `path` column; spreadsheets in many locales write `;`."""
    first = text.splitlines()[:1]
    if not first:
        raise ManifestError(f"manifest {manifest} is empty (expected a header with path,label,split)")
    for delimiter in _DELIMITERS:
        names = next(_records(manifest, csv.reader(first, delimiter=delimiter)))[1]
        if "path" in (name.strip() for name in names):
            return delimiter
    raise ManifestError(
        f"manifest {manifest}: header has no 'path' column (header: {first[0].strip()[:200]!r})"
    )


def _check_header(manifest: Path, header: list[str], require_label: bool) -> None:
    """Required columns present, no column named twice."""
    needed = REQUIRED if require_label else ("path", "split")
    missing = [name for name in needed if name not in header]
    if missing:
        raise ManifestError(
            f"manifest {manifest}: missing column(s) {', '.join(missing)} (found: {', '.join(header)})"
        )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ManifestError(f"manifest {manifest}: column(s) named twice: {', '.join(repeated)}")


def _parse_row(
    manifest: Path, row: int, header: list[str], cells: list[str], base: Path, require_label: bool,
    delimiter: str = ",",
) -> Item:
    """One CSV row → Item, or a ManifestError naming the row."""
    if len(cells) > len(header):
        raise ManifestError(
            f"manifest {manifest}: row {row} has {len(cells)} fields, header has {len(header)}"
        )
    other = [d for d in _DELIMITERS if d != delimiter and d in cells[0]] if len(cells) == 1 < len(header) else []
    if other:
        raise ManifestError(f"manifest {manifest}: row {row} has 1 field, header has {len(header)} "
                            f"(row separated by {other[0]!r}, header by {delimiter!r}?)")
    values = dict(zip(header, (cell.strip() for cell in cells)))
    for name in header[len(cells):]:
        values[name] = ""  # short rows: trailing optional cells left out
    required = REQUIRED if require_label else ("path", "split")
    empty = [name for name in required if not values[name]]
    if empty:
        raise ManifestError(f"manifest {manifest}: row {row} has an empty {', '.join(empty)}")
    split = values["split"]
    if not _SPLIT_NAME.fullmatch(split):
        raise ManifestError(
            f"manifest {manifest}: row {row} has split {split!r}; use letters, digits, '_' or '-'"
        )
    return Item(
        path=_resolve(manifest, row, cells[header.index("path")], base),
        label=values.get("label") or None,
        split=split,
        speaker=values.get("speaker") or None,
        transcript=values.get("transcript") or None,
        extra={name: value for name, value in values.items() if name not in CORE_COLUMNS},
    )


def _resolve(manifest: Path, row: int, cell: str, base: Path) -> Path:
    """A path cell → absolute resolved path ('~user' expanded), or a ManifestError naming the row.

    Surrounding spaces are padding, unless the file's name really has them (write_manifest keeps them).
    """
    try:
        if cell != cell.strip():
            exact = (base / _expand(cell)).resolve()
            if _is_file(exact):
                return exact
        return (base / _expand(cell.strip())).resolve()
    except OSError as err:  # a path the OS refuses
        raise ManifestError(f"manifest {manifest}: row {row} has path {cell[:200]!r} that cannot be resolved "
                            f"({err})") from None


def _expand(cell: str) -> Path:
    """'~' and '~user' expanded (not './~…'); a name like '~$draft.wav' that names no user is taken literally."""
    try:
        return Path(cell).expanduser() if cell.startswith("~") else Path(cell)
    except RuntimeError:
        return Path(cell)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the file system: it cannot be an existing file
        return False


def _check_files(manifest: Path, items: list[Item]) -> None:
    """One error for all missing audio, so a user with a wrong root fixes it in one go."""
    missing = [str(item.path) for item in items if not _is_file(item.path)]
    if missing:
        shown = ", ".join(missing[:_SHOW_MISSING])
        more = f" and {len(missing) - _SHOW_MISSING} more" if len(missing) > _SHOW_MISSING else ""
        raise ManifestError(
            f"manifest {manifest}: {len(missing)} of {len(items)} audio files not found: {shown}{more}"
        )


def _columns(items: list[Item]) -> list[str]:
    """Core columns, then extra columns in the order they first appear."""
    columns = list(CORE_COLUMNS)
    for item in items:
        for name in item.extra:
            if name in CORE_COLUMNS:
                raise ValueError(f"extra column {name!r} clashes with a core manifest column")
            if name not in columns:
                columns.append(name)
    return columns


def _row(item: Item, columns: list[str], base: Path) -> list[str]:
    """Item → CSV cells; None is written as an empty cell."""
    path = str(item.path)
    # Relative keeps a corpus and its manifest movable together; but a path climbing up to the
    # filesystem root (or to another drive) says nothing useful, so that one stays absolute.
    if os.path.splitdrive(path)[0] == os.path.splitdrive(base)[0]:
        common = os.path.commonpath([path, base])
        if common != item.path.anchor:
            path = os.path.relpath(path, base)
            path = f".{os.sep}{path}" if path.startswith("~") else path  # a file named ~…, not a home
    core = {"path": path, "label": item.label, "split": item.split, "speaker": item.speaker,
            "transcript": item.transcript}
    return [(core[name] if name in core else item.extra.get(name)) or "" for name in columns]
