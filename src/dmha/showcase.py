"""`dmha examples` (and `make demo`): a model on the shipped example clips, one by one and as one recording.

What a newcomer wants to see first is emotion recognised in real speech with nothing to train: the
bundled model predicts each CREMA-D example clip alone (as `dmha predict` does a file), then the clips
joined into one recording with pauses between them go through `predict_long` (voice activity
detection, one prediction per speech segment: the timeline). The table is printed; OUT gets the
predictions (jsonl), the timeline (csv, json, png), the joined recording and report.html.
"""
from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, load_audio
from .corpora import canonical
from .examples import Clip, clips
from .fileio import atomic_write_text

PAUSE_S = 1.0  # silence between the joined clips, so voice activity detection parts them


@dataclass
class Showcase:
    model: str
    load_s: float  # loading the model and its encoders
    first_s: float  # the first clip's prediction (encoders warm-up included)
    rows: list[dict]  # per clip: path, acted label, predicted label, probabilities
    timeline: object  # dmha.timeline.Timeline of the joined recording

    @property
    def correct(self) -> int:
        return sum(as_acted(r) for r in self.rows)


def as_acted(row: dict) -> bool:
    """Whether a clip was predicted as acted (canonical names: a model's `fearful` is CREMA-D's `fear`)."""
    return canonical(row["label"]) == canonical(row["predicted"] or "")


def joined_recording(examples: list[Clip]) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """The clips one after another with PAUSE_S of silence between them, and where each lies (s)."""
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), dtype=np.float32)
    parts, spans, at = [pause], [], PAUSE_S
    for clip in examples:
        wave = load_audio(clip.path)
        parts += [wave, pause]
        spans.append((at, at + wave.size / SAMPLE_RATE, clip.label))
        at += wave.size / SAMPLE_RATE + PAUSE_S
    return np.concatenate(parts), spans


def run(model: str | Path | None = None, out: str | Path = "demo_out") -> Showcase:
    """Predict the example clips with `model` (None: the bundled default) and write OUT's files."""
    from .inference import EmotionRecognizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rec = EmotionRecognizer() if model is None else EmotionRecognizer.from_pretrained(str(model))
    load_s = time.perf_counter() - start
    examples = clips()
    rows, first_s = [], None
    for clip in examples:
        began = time.perf_counter()
        pred = rec.predict(str(clip.path))  # a multimodal model transcribes it, as `dmha predict` would
        first_s = first_s if first_s is not None else time.perf_counter() - began
        rows.append({"path": clip.path.name, "label": clip.label, "predicted": pred.label, "probs": pred.probs})
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    wave, spans = joined_recording(examples)
    import soundfile as sf

    sf.write(out / "examples_joined.flac", wave, SAMPLE_RATE)
    timeline = rec.predict_long(wave, sample_rate=SAMPLE_RATE, transcribe=rec.reads_text)
    timeline.path = "examples_joined.flac"
    timeline.write_all(out, "timeline")
    name = str(model) if model is not None else "the bundled default model"
    show = Showcase(name, load_s, first_s or 0.0, rows, timeline)
    atomic_write_text(out / "report.html", report_html(show, spans, rec.labels, out / "timeline.png"))
    return show


def format_table(show: Showcase) -> str:
    lines = [f"{'clip':24} {'acted':8} {'predicted':10} {'p':>5}   runner-up"]
    for row in show.rows:
        ranked = sorted(row["probs"].items(), key=lambda kv: -kv[1])
        second = f"{ranked[1][0]} {ranked[1][1]:.2f}" if len(ranked) > 1 else ""
        mark = "" if as_acted(row) else "  ✗"
        lines.append(f"{row['path']:24} {row['label']:8} {row['predicted']:10} {row['probs'][row['predicted']]:5.2f}"
                     f"   {second}{mark}")
    lines.append(f"{show.correct} of {len(show.rows)} clips as acted. Timeline of the joined recording: "
                 + ", ".join(f"{s.start:.1f}-{s.end:.1f}s {s.label}" for s in show.timeline.segments))
    lines.append(f"model loaded in {show.load_s:.1f} s, first clip predicted in {show.first_s:.2f} s")
    return "\n".join(lines)


def report_html(show: Showcase, spans, labels, timeline_png: Path) -> str:
    """One self-contained page: each clip's probabilities as bars, the timeline figure, where the clips lie."""
    def bars(probs: dict) -> str:
        return "".join(f"<div class=bar><span>{html.escape(k)}</span><i style='width:{100 * v:.1f}%'></i>"
                       f"<b>{v:.2f}</b></div>" for k, v in sorted(probs.items(), key=lambda kv: -kv[1]))

    rows = "".join(f"<tr><td>{html.escape(r['path'])}</td><td>{html.escape(r['label'])}</td>"
                   f"<td class={'ok' if as_acted(r) else 'no'}>{html.escape(r['predicted'])}</td>"
                   f"<td>{bars(r['probs'])}</td></tr>" for r in show.rows)
    image = base64.b64encode(timeline_png.read_bytes()).decode("ascii")
    where = ", ".join(f"{a:.1f}-{b:.1f} s {html.escape(label)}" for a, b, label in spans)
    return f"""<!doctype html><html lang=en><meta charset=utf-8><title>dmha: the example clips</title>
<style>body{{font:15px system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}}
.bar{{display:grid;grid-template-columns:5.5em 12em 3em;gap:.4em;align-items:center;font-size:13px}}
.bar i{{display:block;height:.8em;background:#4a7ab8}}.ok{{color:#17702d;font-weight:bold}}.no{{color:#a8321e;font-weight:bold}}
img{{max-width:100%}}</style>
<h1>dmha on six CREMA-D clips</h1>
<p>Model: {html.escape(show.model)}. Each clip predicted alone, as <code>dmha predict</code> does one file;
{show.correct} of {len(show.rows)} as acted. The clips are of actors the bundled model never trained on
(provenance and licence: <code>dmha/examples/PROVENANCE.md</code>). Loading took {show.load_s:.1f} s, the
first prediction {show.first_s:.2f} s.</p>
<table><tr><th>clip</th><th>acted</th><th>predicted</th><th>probabilities (calibrated)</th></tr>{rows}</table>
<h2>One recording: the clips joined, with {PAUSE_S:g} s pauses</h2>
<p>Voice activity detection finds the speech segments and each is predicted (<code>dmha predict --segment</code>).
The clips lie at: {where}.</p>
<img alt="timeline" src="data:image/png;base64,{image}">
"""
