"""`dmha cv`: speaker folds, one feature store for all folds, results, resume and compare."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import write_tone_corpus
from dmha.cli import main
from dmha.config import ConfigError, load
from dmha.cv import cross_validate, cv_config
from dmha.cv_report import format_summary, interval95, summarize
from dmha.folds import assign_folds, make_folds
from dmha.data.manifest import Item, ManifestError


def _items(speakers, extra=None):
    return [Item(Path(f"/x/{s}_{j}.wav"), "a", "train", speaker=s, extra=dict(extra(s) if extra else {}))
            for s in speakers for j in range(2)]


def test_folds_group_speakers_in_natural_order_with_balanced_counts():
    speakers = [str(i) for i in range(1, 25)]
    folds = make_folds(assign_folds(_items(speakers), 6, None))
    assert [f.test for f in folds][:2] == [("1", "2", "3", "4"), ("5", "6", "7", "8")]
    for k, fold in enumerate(folds):
        assert fold.dev == folds[(k + 1) % 6].test  # dev is the next fold, cyclically
        assert set(fold.train) | set(fold.test) | set(fold.dev) == set(speakers)
        assert not set(fold.train) & (set(fold.test) | set(fold.dev))
    sizes = [len(f.test) for f in make_folds(assign_folds(_items([f"s{i}" for i in range(11)]), 3, None))]
    assert sorted(sizes) == [3, 4, 4]


def test_given_fold_column_is_used_and_a_speaker_in_two_folds_is_an_error():
    folds = make_folds(assign_folds(_items("abcdef", lambda s: {"fold": "A" if s in "ab" else "B" if s in "cd" else "C"}),
                                    None, "fold"))
    assert [(f.name, f.test, f.dev) for f in folds] == [("A", ("a", "b"), ("c", "d")), ("B", ("c", "d"), ("e", "f")),
                                                         ("C", ("e", "f"), ("a", "b"))]
    items = _items("abc", lambda s: {"fold": s})
    items[1].extra["fold"] = "b"  # speaker a's second clip in another fold
    with pytest.raises(ManifestError, match="speaker a is in folds a and b"):
        assign_folds(items, None, "fold")
    with pytest.raises(ConfigError, match="--folds must be >= 3"):
        assign_folds(_items("abcd"), 2, None)
    with pytest.raises(ManifestError, match="has no speaker"):
        assign_folds([Item(Path("/x/1.wav"), "a", "train")], 3, None)


def test_train_normalisation_becomes_per_utterance_so_folds_share_one_store():
    config, notes = cv_config(load(None, ["features.normalize=train"]))
    assert config.features.normalize == "utterance" and "re-extract" in notes[0]
    assert cv_config(load(None, ["features.normalize=none"]))[1] == []


def test_summary_interval_and_seed_spread():
    runs = [{"fold": f, "seed": s, "macro_f1": 0.5 + 0.1 * f + 0.01 * s, "uar": 0.5, "accuracy": 0.5,
             "dev_macro_f1": 0.4} for f in range(3) for s in (0, 1)]
    summary = summarize(runs, 3, [0, 1])
    assert summary["folds_done"] == 3
    assert summary["macro_f1"]["mean"] == pytest.approx(0.605)
    lo, hi = summary["macro_f1"]["ci95"]
    assert lo < 0.605 < hi and (lo, hi) == pytest.approx(interval95([0.505, 0.605, 0.705]))
    assert summary["seed_macro_f1"] == pytest.approx({"0": 0.6, "1": 0.61})
    assert summary["seed_std"] == pytest.approx(0.00707, abs=1e-4)
    assert summarize(runs[:5], 3, [0, 1])["folds_done"] == 2  # a fold counts once all its seeds are in
    assert "macro_f1_alone" not in summary
    alone = summarize([{**r, "macro_f1_alone": r["macro_f1"] - 0.1} for r in runs], 3, [0, 1])
    assert alone["macro_f1_alone"]["mean"] == pytest.approx(0.505)
    folds = [{"fold": f, "name": str(f), "test": [f"s{f}"], "dev": [], "train": []} for f in range(3)]
    printed = format_summary({"summary": summary, "folds": folds})
    assert "cv mean per seed: 0: 0.6000, 1: 0.6100 (std 0.0071)" in printed
    one_seed = [r for r in runs if r["seed"] == 0]
    assert "per seed" not in format_summary({"summary": summarize(one_seed, 3, [0]), "folds": folds})  # no "std nan"


def test_cv_end_to_end_extracts_once_resumes_and_compares(tiny_encoders, tmp_path, capsys):
    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=6)  # speakers s0..s5
    cache = tmp_path / "cache"
    sets = [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={cache}", "train.max_epochs=2", "train.batch_size=4", "model.hidden_layers=1",
            "features.normalize=train"]
    out = tmp_path / "cv"
    args = ["cv", "--manifest", str(manifest), "--out", str(out), "--folds", "3", "--seeds", "0,1", "--set", *sets]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "dev speakers are fold k+1" in printed.err and "features.normalize=utterance" in printed.err
    result = json.loads((out / "cv.json").read_text())
    assert len(result["runs"]) == 6 and result["summary"]["folds_done"] == 3
    assert result["features_computed_before_folds"] == 12  # every clip once, before the folds
    assert all(r["features_computed"] == 0 for r in result["runs"])  # no fold extracts again
    assert {tuple(f["test"]) for f in result["folds"]} == {("s0", "s1"), ("s2", "s3"), ("s4", "s5")}
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    for run in result["runs"]:  # each run's figures are scikit-learn's of the predictions it wrote
        for variant, suffix in (("eval_test", ""), ("eval_test_grouped", "_grouped")):
            rows = list(csv.DictReader(open(out / run["run"] / variant / "predictions.csv", newline="")))
            truth, predicted = [r["label"] for r in rows], [r["prediction"] for r in rows]
            assert len(rows) == run["n_test"] == 4
            assert run[f"macro_f1{suffix}"] == pytest.approx(f1_score(truth, predicted, average="macro"), abs=1e-9)
            assert run[f"accuracy{suffix}"] == pytest.approx(accuracy_score(truth, predicted), abs=1e-9)
            assert run[f"uar{suffix}"] == pytest.approx(balanced_accuracy_score(truth, predicted), abs=1e-9)
    with open(out / "fold0" / "manifest.csv", newline="") as f:
        roles = {(r["speaker"], r["split"]) for r in csv.DictReader(f)}
    assert roles == {("s0", "test"), ("s1", "test"), ("s2", "dev"), ("s3", "dev"), ("s4", "train"), ("s5", "train")}
    with open(out / "confusion.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert sum(int(v) for row in rows[1:] for v in row[1:]) == 2 * 12  # every clip once per seed
    assert (out / "confusion.png").stat().st_size > 0 and "Pooled confusion" in (out / "report.html").read_text()
    assert "macro-F1 over 3 folds" in printed.out
    # the default head normalises per speaker: each run is also scored with every test clip alone, and
    # that figure is scikit-learn's macro-F1 of the predictions the run made without speaker statistics
    per_fold = {}
    for run in result["runs"]:
        folder = out / run["run"]
        alone = list(csv.DictReader(open(folder / "eval_test" / "predictions.csv", newline="")))
        grouped = list(csv.DictReader(open(folder / "eval_test_grouped" / "predictions.csv", newline="")))
        assert [r["path"] for r in alone] == [r["path"] for r in grouped]
        assert run["macro_f1_alone"] == pytest.approx(f1_score([r["label"] for r in alone],
                                                               [r["prediction"] for r in alone], average="macro"))
        assert any(a["p_low"] != g["p_low"] for a, g in zip(alone, grouped))  # the speakers' statistics mattered
        per_fold.setdefault(run["fold"], []).append(run["macro_f1_alone"])
    expected = [sum(v) / len(v) for _, v in sorted(per_fold.items())]
    assert result["summary"]["macro_f1_alone"]["mean"] == pytest.approx(sum(expected) / 3)
    assert [result["summary"]["per_fold"][str(f)]["macro_f1_alone"] for f in range(3)] == pytest.approx(expected)
    assert "each test clip alone" in printed.out

    # A killed cv resumes: a finished run is read back (not retrained), a missing one is trained again.
    (out / "fold2" / "seed1" / "metrics.json").unlink()
    stamp = (out / "fold0" / "seed0" / "metrics.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "fold0" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
    assert (out / "fold2" / "seed1" / "metrics.json").is_file()
    assert json.loads((out / "cv.json").read_text())["summary"] == result["summary"]  # seeded: same figures

    with pytest.raises(ValueError, match="different config"):
        cross_validate(manifest, out, load(None, [*sets, "train.max_epochs=1"]), 3, None, [0, 1], progress=False)

    # Runs in parallel processes give the same figures; a finished cv takes more seeds, never fewer.
    (out / "fold1" / "seed1" / "metrics.json").unlink()
    grown = cross_validate(manifest, out, load(None, sets), 3, None, [0, 1, 2], progress=False, jobs=2)
    assert len(grown["runs"]) == 9 and grown["seeds"] == [0, 1, 2]
    assert [r["fold"] for r in grown["runs"]] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert (out / "fold0" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
    again = {(r["fold"], r["seed"]): r["macro_f1"] for r in grown["runs"]}
    assert {k: again[k] for k in again if k[1] < 2} == pytest.approx(
        {(r["fold"], r["seed"]): r["macro_f1"] for r in result["runs"]}, abs=1e-6)
    with pytest.raises(ValueError, match="--seeds must include them"):
        cross_validate(manifest, out, load(None, sets), 3, None, [0, 1], progress=False)

    table = tmp_path / "compare.csv"
    assert main(["compare", str(out), str(out / "fold0" / "seed0"), "--out", str(table)]) == 0
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["split"] == "cv 3x3" and rows[0]["macro_f1_ci95"].startswith("[")
    assert float(rows[0]["macro_f1"]) == pytest.approx(grown["summary"]["macro_f1"]["mean"], abs=1e-4)
    assert rows[1]["macro_f1_ci95"] == "-"


def test_cv_rejects_bad_seeds(tmp_path, capsys):
    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=6)
    assert main(["cv", "--manifest", str(manifest), "--out", str(tmp_path / "o"), "--seeds", "0,x"]) == 1
    assert "--seeds takes comma-separated integers" in capsys.readouterr().err
    assert main(["cv", "--manifest", str(manifest), "--out", str(tmp_path / "o"), "--jobs", "0"]) == 1
    assert "--jobs must be >= 1" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    """Live child processes of `pid`, from /proc (Linux)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_killed_cv_takes_its_job_processes_with_it(tiny_encoders, tmp_path):
    """SIGKILL to `dmha cv --jobs 2`: its training processes end too (no orphan keeps training)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=6)
    sets = [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={tmp_path / 'cache'}", "train.max_epochs=200", "train.early_stop_patience=200",
            "train.batch_size=4", "model.hidden_layers=1"]
    proc = subprocess.Popen([sys.executable, "-m", "dmha.cli", "cv", "--manifest", str(manifest), "--out",
                             str(tmp_path / "cv"), "--folds", "3", "--seeds", "0", "--jobs", "2", "--set", *sets],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline, workers = time.monotonic() + 120, []
    while time.monotonic() < deadline and len(list((tmp_path / "cv").glob("fold*/seed0/config.json"))) < 2:
        assert proc.poll() is None, "cv ended before it was killed"
        time.sleep(0.2)  # until both runs have started training (each claims its run folder first)
    workers = [k for k in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
    assert len(workers) == 2  # both runs are training
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() and
                                               "Z" not in Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1][:3]
                                               for w in workers):
        time.sleep(0.2)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()
             and Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert alive == []
