"""benchmarks/cv_peers.py on a synthetic cv folder: folds read back, peers per fold, paired statistics."""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cv_peers.py"
spec = importlib.util.spec_from_file_location("cv_peers", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules["cv_peers"] = bench  # its dataclasses look their module up by name
spec.loader.exec_module(bench)
LABELS = ["angry", "calm", "happy"]


def test_dmha_metrics_match_sklearn_on_the_peers_codes() -> None:
    """The peers are scored by dmha.metrics, whose macro-F1 is scikit-learn's (classes in the reference
    or the predictions), including classes that are predicted but never true and the reverse."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    from dmha.metrics import macro_f1_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        t, p = rng.integers(0, 4, 30), rng.integers(1, 5, 30)
        assert macro_f1_score(t, p, 5) == pytest.approx(f1_score(t, p, average="macro"))
        words = np.array(LABELS + ["sad", "fear"])
        scored = bench.peers.scores(words[t], words[p])
        assert scored["macro_f1"] == pytest.approx(f1_score(words[t], words[p], average="macro"))
        assert scored["accuracy"] == pytest.approx(accuracy_score(t, p))
        assert scored["uar"] == pytest.approx(balanced_accuracy_score(t, p))


def test_fold_tests_and_interval() -> None:
    tests = bench.fold_tests([0.05, 0.02, 0.04, 0.01, 0.03, 0.06])
    assert tests["wins"] == 6 and tests["losses"] == 0
    assert tests["sign_p"] == pytest.approx(2 / 64) and tests["wilcoxon_p"] == pytest.approx(2 / 64)
    span = bench.interval([0.5, 0.7])
    assert span["mean"] == pytest.approx(0.6) and span["ci95"][0] < 0.5 < 0.7 < span["ci95"][1]


def _folds(rng, n_folds=3, speakers=3, per_speaker=12, k=3, seeds=2, skill=(0.8, 0.5)):
    """FoldTests where A is right with probability skill[0] and B with skill[1], per clip."""
    folds = []
    for f in range(n_folds):
        truth = rng.integers(0, k, speakers * per_speaker)
        names = np.repeat([f"f{f}s{s}" for s in range(speakers)], per_speaker)

        def guess(p):
            return np.where(rng.random(len(truth)) < p, truth, rng.integers(0, k, len(truth)))

        folds.append(bench.FoldTest(truth, names, [guess(skill[0]) for _ in range(seeds)], guess(skill[1])))
    return folds


def test_speaker_bootstrap_resamples_speakers_not_clips() -> None:
    """The cluster bootstrap equals a slow one that rebuilds each draw's clips from the drawn speakers."""
    from sklearn.metrics import f1_score

    folds = _folds(np.random.default_rng(3))
    fast = bench.speaker_bootstrap(folds, 3, draws=40, seed=7)
    rng, diffs = np.random.default_rng(7), np.zeros(40)
    for fold in folds:
        names = sorted(set(fold.speakers.tolist()))
        weights = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=40)
        for d, w in enumerate(weights):
            rows = np.concatenate([np.flatnonzero(fold.speakers == s) for s, n in zip(names, w) for _ in range(n)])
            a = np.mean([f1_score(fold.truth[rows], seed[rows], average="macro") for seed in fold.a])
            diffs[d] += (a - f1_score(fold.truth[rows], fold.b[rows], average="macro")) / len(folds)
    assert fast["ci95"] == pytest.approx([np.percentile(diffs, 2.5), np.percentile(diffs, 97.5)])
    assert fast["unit"] == "speaker" and 0 < fast["ci95"][0] < fast["ci95"][1]


def test_speaker_permutation_p_matches_exact_enumeration() -> None:
    """Monte-Carlo p of the speaker permutation test against every one of the 2^6 swaps, computed the
    slow way (clips of swapped speakers exchanged, macro-F1 by scikit-learn)."""
    import itertools

    from sklearn.metrics import f1_score

    folds = _folds(np.random.default_rng(5), n_folds=2, speakers=3, per_speaker=10, skill=(0.7, 0.55))

    def statistic(swaps):
        total = 0.0
        for fold, swap in zip(folds, swaps):
            moved = np.isin(fold.speakers, [s for s, on in zip(sorted(set(fold.speakers.tolist())), swap) if on])
            diffs = [f1_score(fold.truth, np.where(moved, fold.b, seed), average="macro")
                     - f1_score(fold.truth, np.where(moved, seed, fold.b), average="macro") for seed in fold.a]
            total += np.mean(diffs) / len(folds)
        return total

    observed = statistic([(0, 0, 0), (0, 0, 0)])
    every = [statistic([bits[:3], bits[3:]]) for bits in itertools.product((0, 1), repeat=6)]
    exact = np.mean([abs(t) >= abs(observed) - 1e-12 for t in every])
    assert 0.05 < exact < 0.95  # a fixture where the p-value is not at either end
    test = bench.speaker_permutation_test(folds, 3, draws=20000, seed=1)
    assert test["speakers"] == 6 and "exchangeable" in test["null"]
    assert test["p_value"] == pytest.approx(exact, abs=0.02)
    same = bench.speaker_permutation_test([bench.FoldTest(f.truth, f.speakers, [f.b], f.b) for f in folds], 3, draws=99)
    assert same["p_value"] == 1.0  # identical systems: every swap is as extreme as the observed 0


def test_seed_vote_takes_the_majority_and_breaks_ties_by_seed_order() -> None:
    seeds = [np.array([0, 1, 2, 2]), np.array([0, 2, 1, 2]), np.array([1, 2, 0, 0])]
    assert bench.seed_vote(seeds, 3).tolist() == [0, 2, 2, 2]  # last: 2 twice; third: a three-way tie → seed 0
    assert bench.seed_vote(seeds[:2], 3).tolist() == [0, 1, 2, 2]  # two seeds that disagree: seed 0


def _fake_cv(tmp_path: Path, n_folds: int = 4, per_speaker: int = 6, old_layout: bool = False) -> tuple[Path, np.ndarray]:
    """A cv folder as `dmha cv` leaves it: fold manifests, each run's test predictions alone (eval_test/)
    and grouped (eval_test_grouped/), and a cv.json whose per-fold figures are those of the predictions
    (scikit-learn's macro-F1). Two test speakers per fold. Grouped, seed 0 is right everywhere and seed 1
    misses each speaker's first clip; alone, both seeds also miss each speaker's second clip.
    `old_layout`: the folders of a run from before the alone headline (eval_test/ grouped, eval_test_alone/)."""
    from sklearn.metrics import f1_score

    from dmha.data.manifest import Item, write_manifest

    speakers = [f"s{k}" for k in range(2 * n_folds)]
    items = [Item(tmp_path / f"{s}_{j}.wav", LABELS[j % 3], "train", s) for s in speakers for j in range(per_speaker)]
    for item in items:
        item.path.write_bytes(b"")  # the manifest reader checks that each file exists
    runs, folds, per_fold = [], [], {}
    for k in range(n_folds):
        test, dev = speakers[2 * k:2 * k + 2], speakers[2 * ((k + 1) % n_folds):2 * ((k + 1) % n_folds) + 2]
        role = {**{s: "test" for s in test}, **{s: "dev" for s in dev}}
        fold_items = [Item(i.path, i.label, role.get(i.speaker, "train"), i.speaker) for i in items]
        write_manifest(fold_items, tmp_path / "cv" / f"fold{k}" / "manifest.csv")
        folds.append({"fold": k, "name": str(k), "test": test, "dev": dev})
        tested = [i for i in fold_items if i.split == "test"]
        scores = {"alone": [], "grouped": []}
        folders = {"alone": "eval_test_alone", "grouped": "eval_test"} if old_layout else \
            {"alone": "eval_test", "grouped": "eval_test_grouped"}
        for seed in (0, 1):
            run = tmp_path / "cv" / f"fold{k}" / f"seed{seed}"
            for variant, misses in (("grouped", ("_0.wav",) if seed else ()),
                                    ("alone", ("_1.wav", "_0.wav") if seed else ("_1.wav",))):
                (run / folders[variant]).mkdir(parents=True)
                predicted = [LABELS[(LABELS.index(i.label) + i.path.name.endswith(misses)) % 3] for i in tested]
                with open(run / folders[variant] / "predictions.csv", "w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(["path", "label", "prediction"])
                    writer.writerows([str(i.path), i.label, p] for i, p in zip(tested, predicted))
                scores[variant].append(f1_score([i.label for i in tested], predicted, average="macro"))
            runs.append({"fold": k, "seed": seed, "run": f"fold{k}/seed{seed}", "macro_f1": scores["alone"][-1],
                         "macro_f1_grouped": scores["grouped"][-1]})
        per_fold[str(k)] = {"macro_f1": float(np.mean(scores["alone"])),
                            "macro_f1_grouped": float(np.mean(scores["grouped"]))}
    cv = {"manifest": "m.csv", "folds": folds, "seeds": [0, 1], "runs": runs, "config": {},
          "summary": {"folds_done": n_folds, "per_fold": per_fold}}
    (tmp_path / "cv" / "cv.json").write_text(json.dumps(cv))
    y = np.array([i.label for i in items])
    return tmp_path / "cv", y


def _expected_dmha(cv_dir: Path, folder: str) -> list[float]:
    """Per fold, the mean over seeds of scikit-learn's macro-F1 of the predictions in `folder`."""
    from sklearn.metrics import f1_score

    out = []
    for k in range(4):
        scores = []
        for seed in (0, 1):
            with open(cv_dir / f"fold{k}" / f"seed{seed}" / folder / "predictions.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            scores.append(f1_score([r["label"] for r in rows], [r["prediction"] for r in rows], average="macro"))
        out.append(float(np.mean(scores)))
    return out


@pytest.mark.parametrize("old_layout", [False, True])
def test_compare_runs_peers_on_the_cv_folds(tmp_path: Path, old_layout: bool) -> None:
    from sklearn.metrics import f1_score

    cv_dir, y = _fake_cv(tmp_path, old_layout=old_layout)
    cv = bench.read_cv_dir(cv_dir)
    items, splits = bench.fold_splits(cv_dir, cv)
    assert [len(s["test"]) for s in splits] == [12] * 4 and all(len(s["train"]) == 24 for s in splits)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 4
    informative = (centres[[LABELS.index(v) for v in y]] + rng.normal(size=(len(y), 5))).astype(np.float32)
    layered = np.stack([rng.normal(size=(len(y), 5)), informative], axis=1).astype(np.float32)
    result = bench.compare(cv, items, splits, {"a": informative, "b": layered}, draws=100, permutations=200)
    grouped = _expected_dmha(cv_dir, "eval_test" if old_layout else "eval_test_grouped")
    alone = _expected_dmha(cv_dir, "eval_test_alone" if old_layout else "eval_test")
    assert result["dmha"]["grouped"]["per_fold"] == pytest.approx(grouped)
    assert result["dmha"]["alone"]["per_fold"] == pytest.approx(alone)
    assert result["dmha"]["alone"]["mean"] == pytest.approx(np.mean(alone)) and np.mean(alone) < np.mean(grouped)
    for tag in ("a", "b"):
        peer = result["peers"][tag]
        assert len(peer["per_fold"]) == 4 and peer["mean"] > 0.8 and peer["paired_with"] == "alone"
        for variant, ours in (("alone", alone), ("grouped", grouped)):
            diff = peer["difference"][variant]
            assert diff["per_fold"] == pytest.approx([d - r["macro_f1"] for d, r in zip(ours, peer["per_fold"])])
            assert diff["mean"] == pytest.approx(np.mean(diff["per_fold"]))
            assert diff["wins"] == sum(d > 0 for d in diff["per_fold"])
            low, high = diff["bootstrap"]["ci95"]
            assert low <= high and diff["permutation"]["speakers"] == 8 and 0 < diff["permutation"]["p_value"] <= 1
    # each test fold's peer figure is the macro-F1 of the peer's own test predictions on its speakers
    truth = [y[s["test"]] for s in splits]
    assert all(0.8 < r["macro_f1"] <= 1 for r in result["peers"]["a"]["per_fold"]) and len(truth) == 4
    assert all(r["chosen"]["layer"] == 1 for r in result["peers"]["b"]["per_fold"])
    # the hard vote of the two seeds: a tie on every clip seed 1 misses goes to seed 0, so the vote is seed 0
    assert result["dmha_seed_vote"]["grouped"]["per_fold"] == [1.0] * 4
    seed0_alone = [f1_score(t, np.where(np.char.endswith(np.array([str(items[i].path) for i in s["test"]]), "_1.wav"),
                                        np.roll(np.array(LABELS), -1)[[LABELS.index(v) for v in t]], t), average="macro")
                   for t, s in zip(truth, splits)]
    assert result["dmha_seed_vote"]["alone"]["per_fold"] == pytest.approx(seed0_alone)
    for tag in ("a", "b"):  # the vote against each peer, fold by fold
        vote_diff = result["peers"][tag]["difference_seed_vote"]["alone"]
        assert vote_diff["per_fold"] == pytest.approx([v - r["macro_f1"] for v, r in
                                                       zip(seed0_alone, result["peers"][tag]["per_fold"])])
    table = bench.format_table(result)
    assert "dmha-a" in table and "Wilcoxon" in table and "permutation p=" in table and "hard vote" in table
    assert len(table.splitlines()) == 1 + 4 + 4 + 2


def test_a_cv_json_that_disagrees_with_its_predictions_is_refused(tmp_path: Path) -> None:
    cv_dir, y = _fake_cv(tmp_path)
    cv = json.loads((cv_dir / "cv.json").read_text())
    cv["summary"]["per_fold"]["2"]["macro_f1_grouped"] = 0.5
    (cv_dir / "cv.json").write_text(json.dumps(cv))
    cv = bench.read_cv_dir(cv_dir)
    items, splits = bench.fold_splits(cv_dir, cv)
    with pytest.raises(SystemExit, match="differs from its test predictions"):
        bench.compare(cv, items, splits, {}, draws=10, permutations=10)


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
    for fold in (0, 1):  # a huge prior: plain standardisation by *this fold's* training statistics
        shrunk = bench.speaker_normalised_means(moments, speakers, splits[fold], prior_frames=1e9)
        train = splits[fold]["train"]
        n0 = moments[train, -1, 0].sum()
        mean0 = moments[train, :2].sum(0) / n0
        std0 = np.sqrt(moments[train, 2:4].sum(0) / n0 - mean0 ** 2)
        plain = (moments[:, :2] / moments[:, -1:, :1] - mean0) / std0
        assert np.allclose(shrunk, plain, atol=1e-3)
        if fold == 1:
            assert not np.allclose(shrunk, previous, atol=1e-2)  # the folds' training speakers differ
        previous = shrunk
    # compare() computes each fold's features from that fold's own splits: features whose label is wrong
    # on the fold's dev rows (used only to choose C) still give a perfect probe on its test rows, while
    # a peer that ignored the fold index would test fold 1 on rows that fold 0's features garble
    codes = np.array([LABELS.index(v) for v in y])
    calls = []

    def features(idx):
        calls.append(idx)
        label = np.eye(3)[codes]
        label[idx["dev"]] = np.eye(3)[(codes[idx["dev"]] + 1) % 3]
        return (label + rng.normal(size=(len(y), 3)) * 0.05)[:, None, :].astype(np.float32)  # (N, 1 layer, 3)

    def stale(idx):  # a peer that ignored the fold index would see fold 0's features on every fold
        return features(splits[0])

    result = bench.compare(cv, items, splits, {"c": features}, draws=50, permutations=50)
    assert [c["test"].tolist() for c in calls] == [s["test"].tolist() for s in splits]
    assert [r["macro_f1"] for r in result["peers"]["c"]["per_fold"]] == [1.0] * 4
    assert result["peers"]["c"]["paired_with"] == "grouped"
    ignored = bench.compare(cv, items, splits, {"c": stale}, draws=50, permutations=50)
    assert min(r["macro_f1"] for r in ignored["peers"]["c"]["per_fold"]) < 0.5


def test_train_runs_are_read_as_a_one_fold_cv(tmp_path: Path) -> None:
    """`dmha train` run folders of one manifest (seeds) are compared on that manifest's own split."""
    from sklearn.metrics import f1_score

    from dmha.data.manifest import Item, write_manifest

    items = [Item(tmp_path / f"{s}_{j}.wav", LABELS[j % 3], split, s)
             for s, split in (("a", "train"), ("b", "dev"), ("c", "test")) for j in range(6)]
    for item in items:
        item.path.write_bytes(b"")
    write_manifest(items, tmp_path / "m.csv")
    runs, tested = [], [i for i in items if i.split == "test"]
    for seed in (0, 1):  # seed 0 right everywhere, seed 1 wrong on the first test clip
        predicted = [LABELS[(LABELS.index(i.label) + (seed == 1 and n == 0)) % 3] for n, i in enumerate(tested)]
        run = tmp_path / f"run{seed}"
        (run / "eval_test").mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"train_manifest": str(tmp_path / "m.csv"), "test": {
            "macro_f1": f1_score([i.label for i in tested], predicted, average="macro")}}))
        (run / "config.json").write_text(json.dumps({"seed": seed}))
        with open(run / "eval_test" / "predictions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "prediction"])
            writer.writerows([str(i.path), i.label, p] for i, p in zip(tested, predicted))
        runs.append(run)
    cv = bench.read_train_runs(runs)
    items_read, splits = bench.fold_splits(None, cv)
    assert [len(splits[0][s]) for s in ("train", "dev", "test")] == [6, 6, 6]
    one_miss = f1_score(["angry", "calm", "happy"] * 2, ["calm", "calm", "happy"] + ["angry", "calm", "happy"], average="macro")
    assert cv["summary"]["per_fold"]["0"]["macro_f1"] == pytest.approx((1 + one_miss) / 2)
    y = np.array([i.label for i in items_read])
    feats = np.eye(3)[[LABELS.index(v) for v in y]].astype(np.float32)
    result = bench.compare(cv, items_read, splits, {"a": feats}, draws=50, permutations=50)
    assert result["peers"]["a"]["per_fold"][0]["macro_f1"] == 1.0 and len(result["dmha"]["alone"]["per_fold"]) == 1
    assert result["peers"]["a"]["difference"]["alone"]["per_fold"] == pytest.approx([(1 + one_miss) / 2 - 1])
    table = bench.format_table(result)
    assert "nan" not in table and "Wilcoxon" not in table and "bootstrap [" in table  # one split: no fold tests
    with pytest.raises(SystemExit, match="neither a cv folder"):
        bench.read_train_runs([tmp_path / "m.csv"])
