"""benchmarks/cv_peers.py on a synthetic cv folder: folds read back, peers per fold, paired statistics."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cv_peers.py"
spec = importlib.util.spec_from_file_location("cv_peers", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
LABELS = ["angry", "calm", "happy"]


def test_macro_f1_codes_matches_sklearn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        t, p = rng.integers(0, 4, 30), rng.integers(0, 4, 30)
        assert bench.macro_f1_codes(t, p, 5) == pytest.approx(f1_score(t, p, average="macro"))


def test_fold_tests_and_interval() -> None:
    tests = bench.fold_tests([0.05, 0.02, 0.04, 0.01, 0.03, 0.06])
    assert tests["wins"] == 6 and tests["losses"] == 0
    assert tests["sign_p"] == pytest.approx(2 / 64) and tests["wilcoxon_p"] == pytest.approx(2 / 64)
    span = bench.interval([0.5, 0.7])
    assert span["mean"] == pytest.approx(0.6) and span["ci95"][0] < 0.5 < 0.7 < span["ci95"][1]


def test_bootstrap_separates_a_perfect_system_from_chance() -> None:
    rng = np.random.default_rng(1)
    truth = [rng.integers(0, 3, 40) for _ in range(4)]
    perfect = [[t.copy(), t.copy()] for t in truth]
    chance = [rng.integers(0, 3, 40) for _ in truth]
    boot = bench.paired_bootstrap(truth, perfect, chance, 3, draws=200)
    assert boot["ci95"][0] > 0.3 and boot["p_value"] < 0.01
    same = bench.paired_bootstrap(truth, [[c] for c in chance], chance, 3, draws=50)
    assert same["ci95"] == [0.0, 0.0] and same["p_value"] == 1.0


def test_seed_vote_takes_the_majority_and_breaks_ties_by_seed_order() -> None:
    seeds = [np.array([0, 1, 2, 2]), np.array([0, 2, 1, 2]), np.array([1, 2, 0, 0])]
    assert bench.seed_vote(seeds, 3).tolist() == [0, 2, 2, 2]  # last: 2 twice; third: a three-way tie → seed 0
    assert bench.seed_vote(seeds[:2], 3).tolist() == [0, 1, 2, 2]  # two seeds that disagree: seed 0


def _fake_cv(tmp_path: Path, n_folds: int = 4, per_speaker: int = 6) -> tuple[Path, np.ndarray]:
    """A cv folder as `dmha cv` leaves it: fold manifests, cv.json, each run's test predictions."""
    from dmha.data.manifest import Item, write_manifest

    speakers = [f"s{k}" for k in range(n_folds)]
    items = [Item(tmp_path / f"{s}_{j}.wav", LABELS[j % 3], "train", s) for s in speakers for j in range(per_speaker)]
    for item in items:
        item.path.write_bytes(b"")  # the manifest reader checks that each file exists
    runs, folds, per_fold = [], [], {}
    for k in range(n_folds):
        role = {speakers[k]: "test", speakers[(k + 1) % n_folds]: "dev"}
        fold_items = [Item(i.path, i.label, role.get(i.speaker, "train"), i.speaker) for i in items]
        write_manifest(fold_items, tmp_path / "cv" / f"fold{k}" / "manifest.csv")
        folds.append({"fold": k, "name": str(k), "test": [speakers[k]], "dev": [speakers[(k + 1) % n_folds]]})
        for seed in (0, 1):
            run = tmp_path / "cv" / f"fold{k}" / f"seed{seed}"
            (run / "eval_test").mkdir(parents=True)
            with open(run / "eval_test" / "predictions.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["path", "label", "prediction"])
                for i in fold_items:
                    if i.split == "test":  # seed 1 misses the first test item, seed 0 none
                        wrong = seed == 1 and i.path.name.endswith("_0.wav")
                        writer.writerow([str(i.path), i.label, LABELS[(LABELS.index(i.label) + wrong) % 3]])
            runs.append({"fold": k, "seed": seed, "run": str(run), "macro_f1": 1.0 if seed == 0 else 0.8})
        per_fold[str(k)] = {"macro_f1": 0.9}
    cv = {"manifest": "m.csv", "folds": folds, "seeds": [0, 1], "runs": runs, "config": {},
          "summary": {"folds_done": n_folds, "per_fold": per_fold}}
    (tmp_path / "cv" / "cv.json").write_text(json.dumps(cv))
    y = np.array([i.label for i in items])
    return tmp_path / "cv", y


def test_compare_runs_peers_on_the_cv_folds(tmp_path: Path) -> None:
    cv_dir, y = _fake_cv(tmp_path)
    cv = bench.read_cv_dir(cv_dir)
    items, splits = bench.fold_splits(cv_dir, cv)
    assert [len(s["test"]) for s in splits] == [6] * 4 and all(len(s["train"]) == 12 for s in splits)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 4
    informative = (centres[[LABELS.index(v) for v in y]] + rng.normal(size=(len(y), 5))).astype(np.float32)
    layered = np.stack([rng.normal(size=(len(y), 5)), informative], axis=1).astype(np.float32)
    result = bench.compare(cv, items, splits, {"a": informative, "b": layered}, draws=100)
    assert result["dmha"]["mean"] == pytest.approx(0.9)
    for tag in ("a", "b"):
        peer = result["peers"][tag]
        assert len(peer["per_fold"]) == 4 and peer["mean"] > 0.8
        assert peer["difference"]["per_fold"] == pytest.approx([0.9 - r["macro_f1"] for r in peer["per_fold"]])
        assert {"sign_p", "wilcoxon_p", "bootstrap"} <= set(peer["difference"])
    assert all(r["chosen"]["layer"] == 1 for r in result["peers"]["b"]["per_fold"])
    table = bench.format_table(result)
    assert result["dmha_seed_vote"]["per_fold"] == [1.0] * 4  # seed 1's one miss loses the tie to seed 0
    assert "dmha-a" in table and "Wilcoxon" in table and "hard vote" in table and len(table.splitlines()) == 1 + 4 + 4


def test_unfinished_cv_is_refused(tmp_path: Path) -> None:
    cv_dir, _ = _fake_cv(tmp_path)
    cv = json.loads((cv_dir / "cv.json").read_text())
    cv["summary"]["folds_done"] = 2
    (cv_dir / "cv.json").write_text(json.dumps(cv))
    with pytest.raises(SystemExit, match="only 2 of 4 folds"):
        bench.read_cv_dir(cv_dir)
    with pytest.raises(SystemExit, match="not found"):
        bench.read_cv_dir(tmp_path / "nowhere")


def test_speaker_normalised_probe_removes_each_speakers_offset(tmp_path: Path) -> None:
    """Peer (c): with no prior, each speaker's pooled means are z-scored by that speaker's own frame
    statistics (so a speaker offset is gone); with a prior they move toward the fold's training ones;
    and compare() takes per-fold features."""
    cv_dir, y = _fake_cv(tmp_path)
    cv = bench.read_cv_dir(cv_dir)
    items, splits = bench.fold_splits(cv_dir, cv)
    rng = np.random.default_rng(1)
    speakers = [i.speaker for i in items]
    offset = {s: rng.normal(size=(2, 5)) * 10 for s in sorted(set(speakers))}
    rows = []
    for i, s in enumerate(speakers):
        frames = rng.normal(size=(2, 8 + i % 3, 5)) + offset[s][:, None, :]
        rows.append(np.concatenate([frames.sum(1), (frames ** 2).sum(1), np.full((1, 5), frames.shape[1])]))
    moments = np.stack(rows)
    normed = bench.speaker_normalised_means(moments, speakers, splits[0], prior_frames=0)
    for s in set(speakers):
        group = [i for i, t in enumerate(speakers) if t == s]
        frames = moments[group, -1, 0]
        weighted = (normed[group] * frames[:, None, None]).sum(0) / frames.sum()
        assert np.allclose(weighted, 0, atol=1e-5)  # the speaker's frame mean is the reference
    shrunk = bench.speaker_normalised_means(moments, speakers, splits[0], prior_frames=1e9)
    train = splits[0]["train"]
    n0 = moments[train, -1, 0].sum()
    mean0 = moments[train, :2].sum(0) / n0
    std0 = np.sqrt(moments[train, 2:4].sum(0) / n0 - mean0 ** 2)
    plain = (moments[:, :2] / moments[:, -1:, :1] - mean0) / std0
    assert np.allclose(shrunk, plain, atol=1e-3)  # a huge prior: plain standardisation by the training statistics
    informative = np.stack([rng.normal(size=(len(y), 5)), np.eye(3)[[LABELS.index(v) for v in y]].repeat(2, 1)[:, :5]
                            + rng.normal(size=(len(y), 5)) * 0.1], axis=1).astype(np.float32)
    calls = []
    result = bench.compare(cv, items, splits, {"c": lambda idx: calls.append(idx) or informative}, draws=50)
    assert len(calls) == 4 and result["peers"]["c"]["mean"] > 0.8


def test_train_runs_are_read_as_a_one_fold_cv(tmp_path: Path) -> None:
    """`dmha train` run folders of one manifest (seeds) are compared on that manifest's own split."""
    from dmha.data.manifest import Item, write_manifest

    items = [Item(tmp_path / f"{s}_{j}.wav", LABELS[j % 3], split, s)
             for s, split in (("a", "train"), ("b", "dev"), ("c", "test")) for j in range(6)]
    for item in items:
        item.path.write_bytes(b"")
    write_manifest(items, tmp_path / "m.csv")
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"run{seed}"
        (run / "eval_test").mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"train_manifest": str(tmp_path / "m.csv"),
                                                      "test": {"macro_f1": 0.5 + seed / 10}}))
        (run / "config.json").write_text(json.dumps({"seed": seed}))
        with open(run / "eval_test" / "predictions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "prediction"])
            writer.writerows([str(i.path), i.label, i.label] for i in items if i.split == "test")
        runs.append(run)
    cv = bench.read_train_runs(runs)
    items_read, splits = bench.fold_splits(None, cv)
    assert [len(splits[0][s]) for s in ("train", "dev", "test")] == [6, 6, 6]
    assert cv["summary"]["per_fold"]["0"]["macro_f1"] == pytest.approx(0.55)
    y = np.array([i.label for i in items_read])
    feats = np.eye(3)[[LABELS.index(v) for v in y]].astype(np.float32)
    result = bench.compare(cv, items_read, splits, {"a": feats}, draws=50)
    assert result["peers"]["a"]["per_fold"][0]["macro_f1"] == 1.0 and len(result["dmha"]["per_fold"]) == 1
    table = bench.format_table(result)
    assert "nan" not in table and "Wilcoxon" not in table and "bootstrap [" in table  # one split: no fold tests
    with pytest.raises(SystemExit, match="neither a cv folder"):
        bench.read_train_runs([tmp_path / "m.csv"])
