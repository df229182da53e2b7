"""`dmha examples` / `make demo`: a model on the shipped example clips, one by one and joined into one
recording; the table, predictions.jsonl, the timeline and report.html."""
from __future__ import annotations

import csv
import hashlib
import json

from dmha.cli import main
from dmha.examples import clips, folder


def test_the_example_clips_are_shipped_with_their_provenance():
    listed = list(csv.DictReader((folder() / "clips.csv").open(encoding="utf-8")))
    assert sorted(r["label"] for r in listed) == ["angry", "disgust", "fear", "happy", "neutral", "sad"]
    for row in listed:
        assert hashlib.sha256((folder() / row["path"]).read_bytes()).hexdigest() == row["sha256"]
    provenance = (folder() / "PROVENANCE.md").read_text(encoding="utf-8")
    assert "DbCL" in provenance and "doi:10.1109/TAFFC.2014.2336244" in provenance
    assert [c.path.name for c in clips()] == [r["path"] for r in listed]


def test_examples_predicts_each_clip_and_the_joined_recording(serve_model_dir, tmp_path, capsys):
    from dmha.inference import EmotionRecognizer

    out = tmp_path / "demo"
    assert main(["examples", str(serve_model_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rows] == [c.path.name for c in clips()]
    rec = EmotionRecognizer.from_pretrained(str(serve_model_dir))
    for row, clip in zip(rows, clips()):  # each clip alone: what `dmha predict` gives the file
        expected = rec.predict(str(clip.path))
        assert row["predicted"] == expected.label and row["label"] == clip.label
        assert all(abs(row["probs"][k] - expected.probs[k]) < 1e-5 for k in expected.probs)
        assert row["path"] in printed
    timeline = json.loads((out / "timeline.json").read_text())
    assert len(timeline["segments"]) >= 1 and timeline["duration"] > sum(c.duration_s for c in clips())
    assert (out / "timeline.png").stat().st_size > 0 and (out / "timeline.csv").is_file()
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("<tr>") == len(clips()) + 1 and "data:image/png;base64," in page
    assert "model loaded in" in printed
