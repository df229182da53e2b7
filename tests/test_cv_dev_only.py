"""`dmha cv --dev-only`: the mode a recipe is chosen in. Same folds and dev speakers as the test cv, but the
held-out speakers are in no run's manifest: nothing about them is trained, scored, written or printed."""
from __future__ import annotations

import csv
import json

import pytest

from conftest import write_tone_corpus
from dmha.cli import main
from dmha.cv import dev_only_view, figures_about_test


def test_dev_only_cv_never_trains_scores_or_writes_a_test_fold(tiny_encoders, tmp_path, capsys):
    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=6)  # speakers s0..s5
    sets = [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={tmp_path / 'cache'}", "train.max_epochs=2", "train.batch_size=4",
            "model.hidden_layers=1"]
    out = tmp_path / "dev"
    args = ["cv", "--manifest", str(manifest), "--out", str(out), "--folds", "3", "--seeds", "0", "--dev-only",
            "--set", *sets]
    assert main(args) == 0
    printed = capsys.readouterr()
    result = json.loads((out / "cv.json").read_text())
    assert result["dev_only"] is True and figures_about_test(result) == []
    assert [f["held_out"] for f in result["folds"]] == [["s0", "s1"], ["s2", "s3"], ["s4", "s5"]]
    # the held-out speakers are not in the fold's manifest at all: the run cannot train on or score them
    with open(out / "fold0" / "manifest.csv", newline="") as f:
        roles = {(r["speaker"], r["split"]) for r in csv.DictReader(f)}
    assert roles == {("s2", "dev"), ("s3", "dev"), ("s4", "train"), ("s5", "train")}
    for run in result["runs"]:
        folder = out / run["run"]
        assert not list(folder.glob("eval_test*")), "a dev-only run wrote test predictions"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["split"] == "dev" and "test" not in metrics and run["n_dev"] == 4
        with open(folder / "eval_dev" / "predictions.csv", newline="") as f:  # the figure is the dev predictions'
            rows = list(csv.DictReader(f))
        from sklearn.metrics import f1_score

        assert run["dev_macro_f1_alone"] == pytest.approx(
            f1_score([r["label"] for r in rows], [r["prediction"] for r in rows], average="macro"))
    per_fold = [result["summary"]["per_fold"][str(k)]["dev_macro_f1_alone"] for k in range(3)]
    assert result["summary"]["dev_macro_f1_alone"]["mean"] == pytest.approx(sum(per_fold) / 3)
    assert not (out / "confusion.csv").exists()  # the pooled confusion is a test figure
    assert "dev macro-F1 over 3 folds, each dev clip alone" in printed.out
    for text in (printed.out, printed.err, (out / "report.html").read_text()):
        assert "macro-F1 over 3 folds" not in text.replace("dev macro-F1 over", "")  # no test headline
        assert "grouped by test speaker" not in text and "test speakers" not in text

    # a dev-only folder is not resumed as a test cv (or the other way round)
    with pytest.raises(ValueError, match="holds a dev-only cv"):
        from dmha.config import load
        from dmha.cv import cross_validate

        cross_validate(manifest, out, load(None, sets), 3, None, [0], progress=False)


def test_figures_about_test_finds_every_test_figure_and_the_legacy_view_keeps_dev_ones():
    runs = [{"fold": f, "seed": 0, "run": f"fold{f}/seed0", "macro_f1": 0.3 + f / 10, "ece": 0.1, "n_test": 4,
             "dev_macro_f1_alone": 0.5 + f / 10, "dev_macro_f1_grouped": 0.6, "best_epoch": 1}
            for f in range(3)]
    full = {"manifest": "m.csv", "config": {"train": {"max_epochs": 2}}, "seeds": [0], "notes": [],
            "folds": [{"fold": f, "name": str(f), "test": [f"s{f}"], "dev": [f"s{(f + 1) % 3}"]} for f in range(3)],
            "runs": runs, "summary": {"macro_f1": {"mean": 0.4}, "seed_macro_f1": {"0": 0.4}}}
    found = figures_about_test(full)
    assert "/runs/0/macro_f1" in found and "/runs/2/ece" in found and "/runs/1/n_test" in found
    assert "/folds/0/test" in found and "/summary/macro_f1" in found and "/summary/seed_macro_f1" in found
    assert not any("dev_" in key for key in found)
    view = dev_only_view(full, "a test")
    assert figures_about_test(view) == [] and view["dev_only"] == "a test"
    assert view["summary"]["dev_macro_f1_alone"]["mean"] == pytest.approx(0.6)
    assert [f["held_out"] for f in view["folds"]] == [["s0"], ["s1"], ["s2"]]
