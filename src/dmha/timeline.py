"""A long recording's emotion timeline: one prediction per speech segment, as CSV, JSON and a PNG plot."""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .fileio import atomic_path, atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class Segment:
    """One speech segment's result; times in seconds from the start of the recording."""

    start: float
    end: float
    label: str
    probs: dict[str, float]
    transcript: str
    votes: dict[str, str] | None = None  # ensembles: each member's label

    def to_dict(self, path: str | None = None) -> dict:
        """The `predict --segment --format jsonl` record: path, start, end, label, probs, transcript."""
        record = {"path": path, "start": round(self.start, 3), "end": round(self.end, 3), "label": self.label,
                  "probs": self.probs, "transcript": self.transcript}
        if self.votes is not None:
            record["votes"] = self.votes
        return record


@dataclass
class Timeline:
    """A recording's segments in time order.

    Example:
        >>> timeline = rec.predict_long("meeting.flac")            # doctest: +SKIP
        >>> timeline.write_csv("meeting.csv"); timeline.plot("meeting.png")  # doctest: +SKIP
    """

    path: str
    duration: float
    segments: list[Segment] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # the model's label order (CSV columns, plot rows)

    def __post_init__(self):
        if not self.labels and self.segments:
            self.labels = list(self.segments[0].probs)

    def to_dict(self) -> dict:
        """{"path", "duration", "segments": [{start, end, label, probs, transcript}, ...]}, and `reason` when
        there is no segment (no speech found: no emotion)."""
        segments = []
        for segment in self.segments:
            record = segment.to_dict()
            del record["path"]  # the timeline's own
            segments.append(record)
        record = {"path": self.path, "duration": round(self.duration, 3), "segments": segments}
        if not segments:
            record["reason"] = "no speech found"
        return record

    @classmethod
    def from_dict(cls, payload: dict, labels: list[str] | None = None) -> "Timeline":
        """The inverse of to_dict (e.g. a timeline JSON read back)."""
        segments = [Segment(float(s["start"]), float(s["end"]), str(s["label"]),
                            {str(k): float(v) for k, v in s["probs"].items()}, str(s["transcript"]), s.get("votes"))
                    for s in payload["segments"]]
        return cls(str(payload["path"]), float(payload["duration"]), segments, list(labels or []))

    def write_json(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    def write_csv(self, path: str | Path) -> None:
        """path,start,end,label,p_<label>...,transcript: one row per segment."""
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "start", "end", "label", *[f"p_{l}" for l in self.labels], "transcript"])
            for s in self.segments:
                writer.writerow([self.path, f"{s.start:.3f}", f"{s.end:.3f}", s.label,
                                 *[f"{s.probs.get(l, 0.0):.6f}" for l in self.labels], s.transcript])

    def plot(self, path: str | Path) -> None:
        """A PNG: predicted label per segment (one row per label) above each segment's class probabilities."""
        figure = timeline_figure(self)
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=110)

    def write_all(self, folder: str | Path, stem: str) -> list[Path]:
        """folder/stem.csv, .json and .png; returns their paths."""
        folder = Path(folder)
        paths = [folder / f"{stem}.{ext}" for ext in ("csv", "json", "png")]
        self.write_csv(paths[0])
        self.write_json(paths[1])
        self.plot(paths[2])
        return paths


def _clock(seconds: float, _pos=None) -> str:
    """Axis ticks: m:ss, or h:mm:ss past an hour."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _tick_step(duration: float) -> float:
    """A clock-friendly tick spacing giving at most about 12 ticks."""
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
    return next((s for s in steps if duration / s <= 12), steps[-1])


def timeline_figure(timeline: Timeline):
    """The matplotlib Figure behind Timeline.plot (Agg canvas; no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    labels = list(timeline.labels) or sorted({s.label for s in timeline.segments})
    labels += sorted({s.label for s in timeline.segments} - set(labels))
    colours = {label: _colour(k) for k, label in enumerate(labels)}
    segments = timeline.segments
    starts = np.array([s.start for s in segments], dtype=float)  # (N,)
    widths = np.array([s.end - s.start for s in segments], dtype=float)  # (N,)
    probs = np.array([[s.probs.get(l, 0.0) for l in labels] for s in segments]).reshape(len(segments), len(labels))
    figure = Figure(figsize=(12, 1.6 + 0.32 * len(labels) + 2.2), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[0.35 * len(labels) + 0.4, 2.2])
    _draw_labels(top, segments, starts, widths, labels, colours)
    _draw_probabilities(bottom, starts, widths, probs, labels, colours)
    speech = float(widths.sum())
    top.set_title(f"{Path(timeline.path).name}: {len(segments)} speech segments, {_clock(speech)} of "
                  f"{_clock(timeline.duration)} is speech (bar opacity: the label's probability; "
                  "%: share of speech time)", loc="left", fontsize=10)
    bottom.set_xlim(0, max(timeline.duration, 1e-3))
    bottom.xaxis.set_major_locator(MultipleLocator(_tick_step(timeline.duration)))
    bottom.xaxis.set_major_formatter(FuncFormatter(_clock))
    bottom.set_xlabel("time (gaps: no speech)")
    return figure


def _draw_labels(ax, segments, starts, widths, labels, colours) -> None:
    """One row per label (the first on top), a bar per segment, opaque as the label is probable."""
    row = {label: len(labels) - 1 - k for k, label in enumerate(labels)}
    speech = float(widths.sum())
    for label in labels:
        mine = [i for i, s in enumerate(segments) if s.label == label]
        faces = [(*colours[label][:3], 0.35 + 0.65 * segments[i].probs.get(label, 1.0)) for i in mine]
        ax.broken_barh([(starts[i], widths[i]) for i in mine], (row[label] - 0.4, 0.8), facecolors=faces,
                       edgecolor="none")
    share = {label: widths[[s.label == label for s in segments]].sum() / speech if speech else 0.0
             for label in labels}
    ax.set_yticks([row[l] for l in labels], [f"{l} {100 * share[l]:.0f}%" for l in labels])
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.grid(axis="x", color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)


def _draw_probabilities(ax, starts, widths, probs, labels, colours) -> None:
    """Each segment's class probabilities stacked, one rectangle collection per label (bar() is slow)."""
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    tops = np.cumsum(probs, axis=1)  # (N, K)
    ends = starts + widths  # (N,)
    for k, label in enumerate(labels):
        lows = tops[:, k] - probs[:, k]  # (N,)
        corners = [(starts, lows), (starts, tops[:, k]), (ends, tops[:, k]), (ends, lows)]
        boxes = np.stack([np.stack(c, axis=1) for c in corners], axis=1)  # (N, 4, 2)
        ax.add_collection(PolyCollection(boxes, facecolors=[colours[label]], edgecolors="none"))
    ax.set_ylim(0, 1)
    ax.set_ylabel("class probability")
    ax.legend(handles=[Patch(color=colours[l], label=l) for l in labels], loc="upper left",
              bbox_to_anchor=(1.005, 1.0), fontsize=9, frameon=False)


def _colour(k: int):
    from matplotlib import colormaps

    return colormaps["tab10" if k < 10 else "tab20"](k % 20)
