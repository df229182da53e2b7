"""What batch prediction writes: results in a --format, one at a time and flushed, and the skipped items.

Every writer flushes after each record, so a crash or kill keeps every result written before it;
the CLI only opens the files and prints the summary lines.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Sequence, TextIO

PREDICTION_FORMATS = ("jsonl", "csv", "table", "challenge", "challenge-task2")
SEGMENT_FORMATS = ("jsonl", "csv", "table")


def _top3(probs: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.2f}" for k, v in sorted(probs.items(), key=lambda kv: -kv[1])[:3])


class PredictionWriter:
    """One `Prediction` per record in a format (jsonl, csv, table, challenge, challenge-task2); CSV
    headers first. A model's attributes (`attributes`) get a column each in csv and a field in table.
    An input given no emotion (no speech heard) has an empty label and probabilities in csv, `-` and
    its reason in table, and its `reason` in jsonl; csv's last column, `reason`, is empty otherwise."""

    def __init__(self, out: TextIO, labels: Sequence[str], fmt: str, attributes: Sequence[str] = (),
                 category: bool = True):
        if fmt not in PREDICTION_FORMATS:
            raise ValueError(f"unknown prediction format {fmt!r} (choose from {', '.join(PREDICTION_FORMATS)})")
        if fmt == "challenge" and not category:
            raise ValueError("--format challenge needs a model that predicts categories; this one predicts "
                             f"only {', '.join(attributes)} (use --format challenge-task2)")
        if fmt == "challenge-task2":
            from .data.msp_podcast import task2_columns

            self.task2 = task2_columns(attributes)  # refuses a model without arousal, valence and dominance
        self.out, self.labels, self.fmt, self.attributes = out, list(labels) if category else [], fmt, list(attributes)
        self.csv = csv.writer(out) if fmt in ("csv", "challenge", "challenge-task2") else None
        if fmt == "csv":
            self.csv.writerow(["path", *(["label"] if category else []), *[f"p_{l}" for l in self.labels],
                               *self.attributes, "transcript", "reason"])
        elif fmt == "challenge":
            self.csv.writerow(["FileName", "EmoClass"])
        elif fmt == "challenge-task2":
            self.csv.writerow(["FileName", "EmoAct", "EmoVal", "EmoDom"])

    def write(self, p) -> None:
        values = [f"{p.attributes[a]:.4f}" for a in self.attributes] if p.attributes is not None else []
        if self.fmt == "jsonl":
            print(json.dumps(p.to_dict()), file=self.out)
        elif self.fmt == "challenge":
            from .data.msp_podcast import challenge_rows

            self.csv.writerows(challenge_rows([p.path], [p.label]))
        elif self.fmt == "challenge-task2":
            from .data.msp_podcast import challenge_task2_row

            self.csv.writerow(challenge_task2_row(p.path, p.attributes, self.task2))
        elif self.fmt == "csv":
            probs = [f"{p.probs[l]:.6f}" if l in p.probs else "" for l in self.labels]
            self.csv.writerow([p.path, *([p.label or ""] if self.labels else []), *probs, *values, p.transcript,
                               p.reason or ""])
        else:
            said = [p.label, _top3(p.probs)] if self.labels else []
            if p.reason is not None:
                said = ["-", f"no emotion: {p.reason}"]
            shown = ["  ".join(f"{a} {v}" for a, v in zip(self.attributes, values))] if values else []
            print("\t".join([str(p.path), *said, *shown, repr(p.transcript)]), file=self.out)
        self.out.flush()


class SegmentWriter:
    """The segments of each recording's `Timeline` as records (jsonl, csv, table), and each timeline's
    own files (STEM.csv, .json, .png) in a folder, stems made unique when two inputs share a name."""

    def __init__(self, out: TextIO, labels: Sequence[str], fmt: str, timeline_dir: str | Path):
        if fmt not in SEGMENT_FORMATS:
            raise ValueError(f"unknown segment format {fmt!r} (choose from {', '.join(SEGMENT_FORMATS)})")
        self.out, self.labels, self.fmt, self.timeline_dir = out, list(labels), fmt, Path(timeline_dir)
        self.csv = csv.writer(out) if fmt == "csv" else None
        self.stems: set[str] = set()
        self.segments = 0
        if self.csv is not None:
            self.csv.writerow(["path", "start", "end", "label", *[f"p_{l}" for l in self.labels], "transcript"])

    def write(self, timeline, source: str | Path | None = None) -> list[Path]:
        """Write one recording's segments and timeline files (named after `source`, the input path,
        by default the timeline's own); returns the files."""
        stem = Path(source if source is not None else timeline.path).stem
        stem = next(s for s in (stem, *(f"{stem}-{k}" for k in range(2, len(self.stems) + 3))) if s not in self.stems)
        self.stems.add(stem)
        written = timeline.write_all(self.timeline_dir, stem)
        for s in timeline.segments:
            if self.fmt == "jsonl":
                print(json.dumps(s.to_dict(timeline.path)), file=self.out)
            elif self.fmt == "csv":
                self.csv.writerow([timeline.path, f"{s.start:.3f}", f"{s.end:.3f}", s.label,
                                   *[f"{s.probs[l]:.6f}" for l in self.labels], s.transcript])
            else:
                print(f"{timeline.path}\t{s.start:8.2f}-{s.end:8.2f}\t{s.label}\t{_top3(s.probs)}\t{s.transcript!r}",
                      file=self.out)
        self.out.flush()
        self.segments += len(timeline.segments)
        return written


class SkippedItems:
    """The items a batch command skipped: each one written (and flushed) to the errors file as it
    happens, so a crash keeps the list so far; listed on stderr when the command ends. The file is
    created empty up front, so it exists (and is fresh) even when nothing is skipped."""

    def __init__(self, errors_file: str | Path | None = None, stderr: TextIO | None = None):
        self.items: list[tuple[str, str]] = []
        self.path = Path(errors_file) if errors_file else None
        self.stderr = stderr
        self.file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "w", encoding="utf-8")

    def add(self, path, reason: str) -> None:
        self.items.append((str(path), reason))
        if self.file is not None:
            self.file.write(error_line(str(path), reason))
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.items:
            err = self.stderr or sys.stderr
            print(f"skipped {len(self.items)} bad file(s):", file=err)
            for path, reason in self.items:
                print(f"  {path}: {reason}", file=err)
            if self.path is not None:
                print(f"wrote {self.path}: {len(self.items)} skipped item(s)", file=err)

    def __enter__(self) -> "SkippedItems":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_errors(errors: Sequence[tuple[str, str]], path: Path) -> None:
    """One `path<TAB>reason` line per skipped item (nothing written when there are none); backslash,
    tab and newline in a path are escaped as \\\\, \\t and \\n, so every line stays one record."""
    if errors:
        path.write_text("".join(error_line(p, r) for p, r in errors), encoding="utf-8")


def error_line(path: str, reason: str) -> str:
    """One errors-file record: `path<TAB>reason` and a newline, escaped to stay one line."""
    return f"{_escape(path)}\t{_escape(reason)}\n"


def _escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
