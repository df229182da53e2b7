"""What `predict` reads: folders (recursively), a manifest, a transcripts table; `--set` never eats the files
after it; with no model named, the bundled default model predicts."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from dmha.cli import main
from dmha.inputs import audio_files, read_transcripts
from helpers import train_tone_model


@pytest.fixture(scope="module")
def model(tiny_encoders, tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    return train_tone_model(tiny_encoders, root), root / "corpus"


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_folders_are_searched_recursively_and_keep_a_stable_order(model, tmp_path):
    _, corpus = model
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("low_0.wav", "high_1.wav"):
        shutil.copy(corpus / name, tmp_path / "a" / "b" / name)
    shutil.copy(corpus / "low_2.wav", tmp_path / "a" / "first.wav")
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    assert [p.name for p in audio_files([tmp_path / "a"])] == ["high_1.wav", "low_0.wav", "first.wav"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert audio_files([empty]) == [empty]  # reported as a bad item by the batch, not fatal here


def test_predict_takes_folders_a_manifest_and_a_transcripts_table(model, tmp_path):
    model_dir, corpus = model
    table = tmp_path / "t.csv"
    table.write_text(f"path,transcript\n{corpus / 'low_0.wav'},hello there\n")
    out = tmp_path / "p.jsonl"
    # --set before the files: one KEY=VALUE per --set, so the files after it stay files
    assert main(["predict", str(model_dir), "--set", "decision.prior=uniform", str(corpus), "--transcripts", str(table),
                 "--format", "jsonl", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(list(corpus.glob("*.wav")))
    assert next(r for r in records if r["path"].endswith("low_0.wav"))["transcript"] == "hello there"
    assert read_transcripts(table, [corpus / "high_0.wav"]) == [None]  # not in the table: ASR
    out2 = tmp_path / "m.csv"
    assert main(["predict", str(model_dir), "--manifest", str(corpus / "manifest.csv"), "--format", "csv",
                 "--out", str(out2)]) == 0
    assert len(_rows(out2)) == len(_rows(corpus / "manifest.csv"))
    assert main(["predict", str(model_dir)]) == 1  # no input at all


def test_with_no_model_named_the_bundled_default_predicts(model, tmp_path, monkeypatch):
    """`dmha predict FILE...` (and `EmotionRecognizer()`): the default bundled model, here a tone model
    standing in for it in a temporary package folder."""
    import dmha.pretrained as pretrained
    from dmha.inference import EmotionRecognizer

    model_dir, corpus = model
    shipped = tmp_path / "pkg" / "stand_in"
    shutil.copytree(model_dir, shipped)
    (shipped / "bundled.json").write_text(json.dumps({"name": pretrained.DEFAULT, "classes": ["high", "low"],
                                                      "training_data": "tones", "licence": "MIT"}))
    monkeypatch.setattr(pretrained, "_root", lambda: tmp_path / "pkg")
    out = tmp_path / "p.csv"
    assert main(["predict", str(corpus / "low_0.wav"), str(corpus / "high_0.wav"), "--no-asr", "--format", "csv",
                 "--out", str(out)]) == 0
    assert [r["path"].rsplit("/", 1)[-1] for r in _rows(out)] == ["low_0.wav", "high_0.wav"]
    named = tmp_path / "named.csv"
    assert main(["predict", pretrained.DEFAULT, str(corpus / "low_0.wav"), "--no-asr", "--format", "csv",
                 "--out", str(named)]) == 0
    assert _rows(named)[0] == _rows(out)[0]
    assert EmotionRecognizer().labels == EmotionRecognizer.from_pretrained(pretrained.DEFAULT).labels == ["high", "low"]


def test_dmha_models_lists_the_bundled_models_and_shows_a_card(model, tmp_path, monkeypatch, capsys):
    import dmha.pretrained as pretrained

    model_dir, _ = model
    shipped = tmp_path / "pkg" / "stand_in"
    shutil.copytree(model_dir, shipped)
    (shipped / "bundled.json").write_text(json.dumps({"name": pretrained.DEFAULT, "classes": ["high", "low"],
                                                      "training_data": "tones", "licence": "MIT",
                                                      "summary": "a stand-in"}))
    (shipped / "MODEL_CARD.md").write_text("# Stand-in\n\nIntended use: tests.\n")
    monkeypatch.setattr(pretrained, "_root", lambda: tmp_path / "pkg")
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert f"{pretrained.DEFAULT} (default): high, low" in listing and "licence: MIT" in listing
    assert main(["models", pretrained.DEFAULT]) == 0
    assert "Intended use: tests." in capsys.readouterr().out
    assert main(["models", "nope"]) == 1
    assert "no bundled model 'nope'" in capsys.readouterr().err
