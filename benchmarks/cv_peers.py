#!/usr/bin/env python
"""dmha against three peers on exactly the speaker folds of a `dmha cv` run.

(a) openSMILE eGeMAPSv02 functionals + RBF-SVM, C chosen on each fold's dev speakers.
(b) linear probe: logistic regression on time-averaged hidden states of the cv's own frozen speech
    features (read from dmha's feature store: same encoder, same waveform normalisation), layer and C
    chosen on each fold's dev speakers.
(c) the same probe on speaker-normalised features: each speaker's (within its split) frame statistics,
    shrunk toward the fold's training statistics exactly as dmha's `model.feature_norm=speaker` does
    (dmha.speaker_norm, the cv's `model.speaker_prior_frames`), so dmha's default is compared with a
    probe that gets the same normalisation.

Each fold's train/dev/test speakers come from the cv folder's `fold{k}/manifest.csv`, so every system
sees the same people in the same roles. dmha is scored from its runs' own test predictions, each test
clip alone (`eval_test_alone/`, the headline; `eval_test/` for a model without speaker statistics)
and grouped with its speaker's other test recordings (`eval_test/`, transductive); a fold's figure is
the mean over its seeds, as in `cv.json` (checked). Peers (a) and (b) see each clip alone; (c) uses the
test speaker's statistics, so it is compared with dmha grouped.

Statistics treat speakers, not utterances, as the unit: a fold's test clips come from a few speakers.
Per comparison: the mean ± Student-t 95% interval of the per-fold differences, wins, a sign test and
a Wilcoxon signed-rank test over folds; a cluster bootstrap (test speakers resampled with replacement
within each fold, the same draw for both systems) for the interval of the mean difference; and a
paired permutation test whose null is that the two systems are exchangeable on every speaker (each
test speaker's predictions swapped between them at random), for a two-sided p.

    python benchmarks/cv_peers.py CV_DIR                 # all three peers; writes CV_DIR/peers.json
    python benchmarks/cv_peers.py CV_DIR --only b,c      # the probes only (seconds: features are cached)
"""
from __future__ import annotations

import argparse
import dataclasses
import csv
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ravdess_peers as peers  # noqa: E402  (shared peer recipes: features, model selection, scores)
from dmha.config import ModelConfig  # noqa: E402
from dmha.corpora import corpus_of  # noqa: E402
from dmha.figures import predictions_file, split_reports  # noqa: E402
from dmha.metrics import confusion_matrix, macro_f1, macro_f1_score  # noqa: E402

SYSTEMS = {"a": "eGeMAPS + RBF-SVM", "b": "linear probe (pooled layers)",
           "c": "linear probe, speaker-normalised"}
# which dmha figure a peer is compared with: the peers that see each clip alone against dmha alone,
# the probe given the test speaker's statistics against dmha grouped
PAIRED_WITH = {"a": "alone", "b": "alone", "c": "grouped"}
VARIANTS = {"alone": "each test clip alone", "grouped": "grouped by test speaker (transductive)"}
BOOTSTRAP = 2000
PERMUTATIONS = 10000


# ---------------------------------------------------------------- the cv's folds and dmha's results


def read_cv_dir(cv_dir: Path) -> dict:
    """cv.json, with an error that says what is missing."""
    path = cv_dir / "cv.json"
    if not path.is_file():
        raise SystemExit(f"cv_peers: {path}: not found (run `dmha cv --out {cv_dir}` first)")
    cv = json.loads(path.read_text(encoding="utf-8"))
    done = cv["summary"].get("folds_done", 0)
    if done < len(cv["folds"]):
        raise SystemExit(f"cv_peers: {cv_dir}: only {done} of {len(cv['folds'])} folds are finished; "
                         "rerun the same `dmha cv` command to complete it")
    cv["dir"] = str(cv_dir)  # runs live in CV_DIR/fold{k}/seed{s}, wherever the cv was started from
    return cv


def read_train_runs(run_dirs: Sequence[Path], manifest: Path | None = None) -> dict:
    """`dmha train` run folders on one manifest (its own train/dev/test split; several folders are
    seeds), read as a cv of one fold, so the peers run on exactly that split."""
    runs, manifests, configs = [], set(), []
    for seed, run in enumerate(run_dirs):
        metrics_path = run / "metrics.json"
        if not metrics_path.is_file() or not (run / "eval_test" / "predictions.csv").is_file():
            raise SystemExit(f"cv_peers: {run}: neither a cv folder (cv.json) nor a finished `dmha train` run "
                             "with a test split (metrics.json, eval_test/predictions.csv)")
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        manifests.add(str(manifest or metrics["train_manifest"]))
        configs.append(json.loads((run / "config.json").read_text(encoding="utf-8")))
        alone, grouped = split_reports(metrics, "test")
        runs.append({"fold": 0, "seed": seed, "run": str(run), "macro_f1": alone["macro_f1"],
                     **({"macro_f1_grouped": grouped["macro_f1"]} if grouped else {})})
    if len(manifests) > 1:
        raise SystemExit(f"cv_peers: the runs were trained on different manifests: {', '.join(sorted(manifests))}")
    (path,) = manifests
    if not Path(path).is_file():
        raise SystemExit(f"cv_peers: {path}: the runs' manifest is not found from here (pass --manifest)")
    return {"manifest": path, "folds": [{"fold": 0, "name": "split"}], "seeds": [r["seed"] for r in runs],
            "runs": runs, "config": configs[0], "fold_manifests": [path],
            "summary": {"folds_done": 1, "per_fold": {"0": {key: float(np.mean([r[key] for r in runs]))
                                                            for key in ("macro_f1", "macro_f1_grouped")
                                                            if all(key in r for r in runs)}}}}


def run_folder(cv: dict, run: dict) -> Path:
    """Where one run's files are: CV_DIR/fold{k}/seed{s} in a cv, the run folder itself otherwise."""
    return Path(run["run"]) if "fold_manifests" in cv else Path(cv["dir"]) / f"fold{run['fold']}" / f"seed{run['seed']}"


def fold_splits(cv_dir: Path | None, cv: dict) -> tuple[list, list[dict[str, np.ndarray]]]:
    """The manifest's items (in the order of fold 0's manifest) and, per fold, the row indices of its
    train/dev/test speakers, read from the fold manifests `dmha cv` trained on (or the train runs' manifest)."""
    from dmha.data.manifest import read_manifest

    items, per_fold = None, []
    for fold in cv["folds"]:
        path = (Path(cv["fold_manifests"][fold["fold"]]) if "fold_manifests" in cv
                else cv_dir / f"fold{fold['fold']}" / "manifest.csv")
        rows = read_manifest(path)
        if items is None:
            items = rows
        elif [str(i.path) for i in rows] != [str(i.path) for i in items]:
            raise SystemExit(f"cv_peers: {cv_dir}: fold {fold['fold']}'s manifest lists other files than fold 0's")
        per_fold.append({s: np.array([k for k, i in enumerate(rows) if i.split == s]) for s in peers.SPLITS})
    return items, per_fold


def dmha_predictions(cv: dict, fold: int, paths: Sequence[str], variant: str = "alone",
                     labels: Sequence[str] | None = None) -> list[np.ndarray]:
    """Each seed's test predictions for one fold (`alone` or `grouped`), aligned with `paths`: the label
    dmha chose, or with `labels`, each clip's probabilities (N, K) of those labels (0 for one it lacks)."""
    out = []
    for run in (r for r in cv["runs"] if r["fold"] == fold):
        with open(predictions_file(run_folder(cv, run), variant), newline="", encoding="utf-8") as f:
            rows = {row["path"]: row for row in csv.DictReader(f)}
        missing = [p for p in paths if p not in rows]
        if missing:
            raise SystemExit(f"cv_peers: {run['run']}: no test prediction for {missing[0]} "
                             f"({len(missing)} missing); was the cv trained on this manifest?")
        if labels is None:
            out.append(np.array([rows[p]["prediction"] for p in paths]))
        else:
            out.append(np.array([[float(rows[p].get(f"p_{label}") or 0.0) for label in labels] for p in paths]))
    return out


def seed_vote(seeds: Sequence[np.ndarray], k: int) -> np.ndarray:
    """The hard vote of one fold's seeds per utterance (label codes); a tie goes to the earliest seed
    among the tied labels, as `dmha ensemble` gives ties to its first member."""
    stacked = np.stack(seeds)  # (S, N)
    counts = np.stack([(stacked == c).sum(0) for c in range(k)], axis=1)  # (N, k)
    best = counts.max(1)
    out = stacked[0].copy()
    for n in range(stacked.shape[1]):
        out[n] = next(v for v in stacked[:, n] if counts[n, v] == best[n])
    return out


# ---------------------------------------------------------------- peer features


def data_key(items) -> str:
    """Fingerprint of the files (paths, sizes, mtimes), so cached peer features notice edited data."""
    digest = hashlib.sha1()
    for item in items:
        stat = Path(item.path).stat()
        digest.update(f"{item.path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def store_pooled_states(items, config_dict: dict) -> np.ndarray:
    """(N, L, D) time-averaged hidden states from dmha's feature store, as the cv's head saw them
    (fills whatever is missing, which after a finished cv is nothing)."""
    from dmha.config import from_dict
    from dmha.extraction import features_for

    data = features_for(items, from_dict(config_dict), progress=True)
    if data.errors:
        raise SystemExit(f"cv_peers: {len(data.errors)} item(s) have no features: {data.errors[0][0]}: "
                         f"{data.errors[0][1]}")
    return np.stack([ref.speech().float().mean(dim=1).numpy() for ref in data.refs]).astype(np.float32)


def store_moments(items, config_dict: dict) -> np.ndarray:
    """(N, 2L+1, D) float64: each utterance's frame moments from dmha's feature store, stacked as
    [Σh (L rows), Σh² (L rows), frame count (one row, repeated over D)] so they cache as one array."""
    from dmha.config import from_dict
    from dmha.extraction import features_for
    from dmha.speaker_norm import Moments

    data = features_for(items, from_dict(config_dict), progress=True)
    if data.errors:
        raise SystemExit(f"cv_peers: {len(data.errors)} item(s) have no features: {data.errors[0][0]}")
    rows = []
    for ref in data.refs:
        m = Moments.of(ref.speech())
        rows.append(np.concatenate([m.total.numpy(), m.squares.numpy(), np.full((1, m.total.shape[1]), m.frames)]))
    return np.stack(rows)


def speaker_normalised_means(moments: np.ndarray, speakers: Sequence[str], idx: dict[str, np.ndarray],
                             prior_frames: float) -> np.ndarray:
    """(N, L, D) pooled means after dmha's speaker normalisation for one fold: each speaker's statistics
    within its split, shrunk toward the fold's training statistics (dmha.speaker_norm's own functions)."""
    import torch

    from dmha.speaker_norm import raw_to_z, shrunk_z_stats

    layers = (moments.shape[1] - 1) // 2
    total, squares, frames = moments[:, :layers], moments[:, layers:2 * layers], moments[:, -1, 0]
    train = idx["train"]
    mean0 = total[train].sum(0) / frames[train].sum()
    std0 = np.sqrt(np.maximum(squares[train].sum(0) / frames[train].sum() - mean0 ** 2, 0)).clip(min=1e-5)
    out = np.full(total.shape, np.nan)
    for split in peers.SPLITS:
        rows = idx[split]
        for speaker in sorted({speakers[i] for i in rows}):
            group = np.array([i for i in rows if speakers[i] == speaker])
            z_total, z_squares = raw_to_z(torch.tensor([frames[group].sum()]), torch.tensor(total[group].sum(0))[None],
                                          torch.tensor(squares[group].sum(0))[None], torch.tensor(mean0), torch.tensor(std0))
            mu, sd = (x[0].numpy() for x in shrunk_z_stats(torch.tensor([frames[group].sum()]), z_total, z_squares,
                                                             prior_frames))
            means = total[group] / frames[group][:, None, None]
            out[group] = ((means - mean0) / std0 - mu) / sd
    return out.astype(np.float32)


# ---------------------------------------------------------------- systems per fold


def run_peer(tag: str, feats: np.ndarray, y: np.ndarray, idx: dict[str, np.ndarray], labels: Sequence[str]) -> dict:
    """One peer on one fold: choose on dev, predict test; its decision scores (N, K) in `labels` order
    (−inf for a label it never saw) let a prediction be made among a corpus's own labels."""
    tr, dev, te = (idx[s] for s in peers.SPLITS)
    if tag == "a":
        c, dev_f1, model = peers.select_svm(feats[tr], y[tr], feats[dev], y[dev])
        x, chosen = feats[te], {"C": c}
    else:
        layer, c, dev_f1, model = peers.select_probe(feats[tr], y[tr], feats[dev], y[dev])
        x, chosen = feats[te, layer], {"layer": layer, "C": c}
    pred = model.predict(x)
    raw = model.decision_function(x)
    raw = raw[:, None] if raw.ndim == 1 else raw
    if raw.shape[1] == 1:  # two classes: one score for the second
        raw = np.hstack([-raw, raw])
    scores = np.full((len(te), len(labels)), -np.inf)
    for column, label in enumerate(model.classes_):
        scores[:, list(labels).index(label)] = raw[:, column]
    return {**peers.scores(y[te], pred), "dev_macro_f1": dev_f1, "chosen": chosen, "predictions": pred.tolist(),
            "scores": scores}


# ---------------------------------------------------------------- statistics


@dataclass
class FoldTest:
    """One fold's test clips as the statistics need them: true codes, the speaker of each clip, and the
    predictions of system A (one row per seed) and of system B."""

    truth: np.ndarray  # (N,)
    speakers: np.ndarray  # (N,) speaker ids
    a: list[np.ndarray]  # seeds × (N,)
    b: np.ndarray  # (N,)


def speaker_confusions(test: FoldTest, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, seeds, K, K) confusions of A and (S, K, K) of B, one per test speaker: the macro-F1 of any
    multiset of speakers is that of the sum of their confusions, so resampling speakers is cheap."""
    names = sorted(set(test.speakers.tolist()))
    cm_a = np.stack([np.stack([confusion_matrix(test.truth[test.speakers == s], seed[test.speakers == s], k)
                               for seed in test.a]) for s in names])
    cm_b = np.stack([confusion_matrix(test.truth[test.speakers == s], test.b[test.speakers == s], k) for s in names])
    return cm_a, cm_b


def speaker_bootstrap(folds: Sequence[FoldTest], k: int, draws: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Cluster bootstrap: each fold's test speakers resampled with replacement (the same draw for both
    systems); the statistic is the mean over folds of A's macro-F1 (mean over its seeds) minus B's.
    Returns the 95% percentile interval."""
    rng = np.random.default_rng(seed)
    diffs = np.zeros(draws)
    for fold in folds:
        cm_a, cm_b = speaker_confusions(fold, k)
        n = len(cm_b)
        weights = rng.multinomial(n, np.full(n, 1 / n), size=draws).astype(float)  # (draws, S)
        a = macro_f1(np.einsum("ds,sjkl->djkl", weights, cm_a)).mean(1)  # (draws,)
        b = macro_f1(np.einsum("ds,skl->dkl", weights, cm_b))
        diffs += (a - b) / len(folds)
    return {"ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))], "draws": draws,
            "unit": "speaker"}


def speaker_permutation_test(folds: Sequence[FoldTest], k: int, draws: int = PERMUTATIONS, seed: int = 0) -> dict:
    """Paired permutation test over speakers. Null: A and B are exchangeable on every test speaker, so
    swapping a speaker's predictions between them leaves the distribution of the statistic (mean over
    folds of A's macro-F1, mean over its seeds, minus B's; each seed of A swapped with B) unchanged.
    Two-sided Monte-Carlo p with the observed assignment counted: (1 + #{|T*| >= |T|}) / (1 + draws)."""
    rng = np.random.default_rng(seed)
    observed, permuted, speakers = 0.0, np.zeros(draws), 0
    for fold in folds:
        cm_a, cm_b = speaker_confusions(fold, k)  # (S, J, K, K), (S, K, K)
        speakers += len(cm_b)
        swap = (rng.random((draws, len(cm_b))) < 0.5).astype(float)  # (draws, S)
        moved = cm_b[:, None] - cm_a  # what A's side gains from taking B's predictions: (S, J, K, K)
        total_a, total_b = cm_a.sum(0), cm_b.sum(0)  # (J, K, K), (K, K)
        a = total_a[None] + np.einsum("ds,sjkl->djkl", swap, moved)
        b = total_b[None, None] - np.einsum("ds,sjkl->djkl", swap, moved)
        permuted += (macro_f1(a) - macro_f1(b)).mean(1) / len(folds)
        observed += float(np.mean(macro_f1(total_a) - macro_f1(np.broadcast_to(total_b, total_a.shape)))) / len(folds)
    extreme = int((np.abs(permuted) >= abs(observed) - 1e-12).sum())
    return {"p_value": float((1 + extreme) / (1 + draws)), "draws": draws, "speakers": speakers,
            "null": "the two systems are exchangeable on every test speaker (predictions swapped per speaker)"}


def fold_tests(diffs: Sequence[float]) -> dict:
    """Sign test and Wilcoxon signed-rank test (two-sided) on the per-fold differences."""
    from scipy.stats import binomtest, wilcoxon

    diffs = np.asarray(diffs, dtype=float)
    nonzero = diffs[diffs != 0]
    sign = binomtest(int((nonzero > 0).sum()), len(nonzero), 0.5).pvalue if len(nonzero) else 1.0
    wil = float(wilcoxon(diffs).pvalue) if len(nonzero) > 1 else 1.0 if len(diffs) > 1 else float("nan")
    return {"wins": int((diffs > 0).sum()), "losses": int((diffs < 0).sum()), "sign_p": float(sign),
            "wilcoxon_p": wil}


def interval(values: Sequence[float]) -> dict:
    """Mean, std and Student-t 95% interval over folds."""
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    half = float(t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            "ci95": [float(v.mean() - half), float(v.mean() + half)]}


def difference(folds: Sequence[FoldTest], k: int, draws: int, permutations: int) -> dict:
    """A − B per fold (A's mean over seeds), with the fold statistics, the speaker bootstrap and the
    speaker permutation test."""
    diffs = [float(np.mean([macro_f1_score(f.truth, s, k) for s in f.a]) - macro_f1_score(f.truth, f.b, k))
             for f in folds]
    return {"per_fold": diffs, **interval(diffs), **fold_tests(diffs),
            "bootstrap": speaker_bootstrap(folds, k, draws), "permutation": speaker_permutation_test(folds, k, permutations)}


def vote_difference(folds: dict[str, list[FoldTest]], k: int, draws: int, permutations: int) -> dict:
    """The hard vote of each fold's seed models (what `dmha ensemble` of them predicts) − the peer, with the
    same statistics; nothing for a cv of one seed."""
    if len(next(iter(folds.values()))[0].a) < 2:
        return {}
    return {"difference_seed_vote": {variant: difference(
        [dataclasses.replace(f, a=[seed_vote(f.a, k)]) for f in tests], k, draws, permutations)
        for variant, tests in folds.items()}}


# ---------------------------------------------------------------- the comparison


def compare(cv: dict, items, splits: list[dict[str, np.ndarray]], features: dict[str, np.ndarray],
            draws: int = BOOTSTRAP, permutations: int = PERMUTATIONS) -> dict:
    """Peers on every fold, dmha's per-fold figures (alone and grouped) from its predictions, paired
    differences and their statistics over speakers."""
    labels = sorted({i.label for i in items})
    k = len(labels)
    code = {label: n for n, label in enumerate(labels)}
    y = np.array([i.label for i in items])
    speakers = np.array([i.speaker or str(i.path) for i in items])
    paths = [str(i.path) for i in items]
    truth = [np.array([code[v] for v in y[idx["test"]]]) for idx in splits]

    def codes(values) -> np.ndarray:
        unknown = sorted(set(values) - set(code))
        if unknown:
            raise SystemExit(f"cv_peers: dmha predicted label(s) {', '.join(unknown)} that the manifest does not have")
        return np.array([code[v] for v in values])

    preds = {variant: [[codes(seed) for seed in dmha_predictions(cv, f["fold"], [paths[i] for i in idx["test"]], variant)]
                       for f, idx in zip(cv["folds"], splits)] for variant in VARIANTS}
    manifests = cv["manifest"] if isinstance(cv["manifest"], list) else [cv["manifest"]]
    result = {"cv": " + ".join(Path(m).name for m in manifests), "labels": labels, "folds": [f["name"] for f in cv["folds"]],
              "seeds": cv["seeds"], "metric": "macro-F1 (dmha.metrics)", "dmha": {}, "peers": {}}
    for variant in VARIANTS:
        per_fold = [float(np.mean([macro_f1_score(t, s, k) for s in seeds])) for t, seeds in zip(truth, preds[variant])]
        result["dmha"][variant] = {"per_fold": per_fold, **interval(per_fold)}
    for variant, key in (("alone", "macro_f1"), ("grouped", "macro_f1_grouped")):  # cv.json's headline is alone
        recorded = [cv["summary"]["per_fold"][str(f["fold"])].get(key) for f in cv["folds"]]
        if None not in recorded and not np.allclose(recorded, result["dmha"][variant]["per_fold"], atol=1e-6):
            raise SystemExit(f"cv_peers: dmha's per-fold {key} in cv.json {recorded} differs from its test "
                             f"predictions' {result['dmha'][variant]['per_fold']}: the run folders do not belong to it")
    if len(cv["seeds"]) > 1:  # what `dmha ensemble` of each fold's seed models would score (hard vote)
        result["dmha_seed_vote"] = {}
        for variant in VARIANTS:
            vote = [macro_f1_score(t, seed_vote(seeds, k), k) for t, seeds in zip(truth, preds[variant])]
            result["dmha_seed_vote"][variant] = {"per_fold": vote, **interval(vote)}
    corpora = sorted({corpus_of(i) for i in items} - {None})
    peer_scores = {}
    for tag, feats in features.items():
        start = time.perf_counter()
        # a peer's features are one array, or computed per fold from its splits (speaker normalisation)
        runs = [run_peer(tag, feats(idx) if callable(feats) else feats, y, idx, labels) for idx in splits]
        peer_codes = [codes(r.pop("predictions")) for r in runs]
        peer_scores[tag] = [r.pop("scores") for r in runs]
        folds = {variant: [FoldTest(t, speakers[idx["test"]], seeds, p)
                           for t, seeds, p, idx in zip(truth, preds[variant], peer_codes, splits)] for variant in VARIANTS}
        result["peers"][tag] = {
            "system": SYSTEMS[tag], "paired_with": PAIRED_WITH[tag], "per_fold": runs,
            **interval([r["macro_f1"] for r in runs]),
            "difference": {variant: difference(folds[variant], k, draws, permutations) for variant in VARIANTS},
            **vote_difference(folds, k, draws, permutations),
            "wall_s": round(time.perf_counter() - start, 1)}
    if len(corpora) > 1 and not cv.get("leave_corpus_out"):  # leave-one-corpus-out: each fold is one corpus
        result["per_corpus"] = {c: corpus_comparison(cv, items, splits, labels, c, peer_scores, draws, permutations)
                                for c in corpora}
    return result


def corpus_comparison(cv: dict, items, splits, labels: list[str], corpus: str, peer_scores: dict,
                      draws: int, permutations: int) -> dict:
    """One corpus of a cv over several: its test clips of every fold, each system's prediction the most
    probable of the labels that corpus offers (as `per_corpus` in dmha's reports), the same statistics."""
    own = sorted({i.label for i in items if corpus_of(i) == corpus})
    columns = [labels.index(label) for label in own]
    k = len(own)
    speakers = np.array([i.speaker or str(i.path) for i in items])
    paths = [str(i.path) for i in items]
    rows = [np.array([n for n, i in enumerate(idx["test"]) if corpus_of(items[i]) == corpus]) for idx in splits]
    truth = [np.array([own.index(items[idx["test"][n]].label) for n in r]) for idx, r in zip(splits, rows)]
    tested = [idx["test"][r] for idx, r in zip(splits, rows)]
    out: dict = {"labels": own, "dmha": {}, "peers": {}}
    preds = {}
    for variant in VARIANTS:
        preds[variant] = [[probs[:, columns].argmax(1) for probs in
                           dmha_predictions(cv, f["fold"], [paths[i] for i in t], variant, labels)]
                          for f, t in zip(cv["folds"], tested)]
        per_fold = [float(np.mean([macro_f1_score(y, p, k) for p in seeds])) for y, seeds in zip(truth, preds[variant])]
        out["dmha"][variant] = {"per_fold": per_fold, **interval(per_fold)}
    if len(cv["seeds"]) > 1:  # the hard vote of each fold's seed models, on this corpus's labels
        out["dmha_seed_vote"] = {}
        for variant in VARIANTS:
            vote = [macro_f1_score(y, seed_vote(seeds, k), k) for y, seeds in zip(truth, preds[variant])]
            out["dmha_seed_vote"][variant] = {"per_fold": vote, **interval(vote)}
    for tag, scores in peer_scores.items():
        peer = [s[r][:, columns].argmax(1) for s, r in zip(scores, rows)]
        per_fold = [macro_f1_score(y, p, k) for y, p in zip(truth, peer)]
        folds = {variant: [FoldTest(y, speakers[t], seeds, p) for y, seeds, p, t in zip(truth, preds[variant], peer, tested)]
                 for variant in VARIANTS}
        out["peers"][tag] = {"system": SYSTEMS[tag], "paired_with": PAIRED_WITH[tag], "per_fold": per_fold,
                             **interval(per_fold),
                             "difference": {v: difference(folds[v], k, draws, permutations) for v in VARIANTS},
                             **vote_difference(folds, k, draws, permutations)}
    return out


def format_table(result: dict) -> str:
    """Per fold: dmha alone and grouped, each peer and dmha's paired difference with the figure the peer
    is paired with; then mean ± interval and the tests over folds and speakers."""
    tags = sorted(result["peers"])
    head = f"{'fold':>6} {'alone':>7} {'grouped':>7}" + "".join(f" {SYSTEMS[t][:16]:>16} {'dmha-' + t:>7}" for t in tags)
    lines = [head]
    for n, name in enumerate(result["folds"]):
        row = f"{name:>6} {result['dmha']['alone']['per_fold'][n]:7.4f} {result['dmha']['grouped']['per_fold'][n]:7.4f}"
        for t in tags:
            peer = result["peers"][t]
            row += f" {peer['per_fold'][n]['macro_f1']:16.4f} {peer['difference'][PAIRED_WITH[t]]['per_fold'][n]:+7.4f}"
        lines.append(row)

    one_fold = len(result["folds"]) == 1  # a single split: no interval or test over folds, the speakers' only

    def span(s: dict) -> str:
        return f"{s['mean']:.4f}" if one_fold else f"{s['mean']:.4f} [{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}]"

    seeds = len(result["seeds"])
    for variant, words in VARIANTS.items():
        lines.append(f"dmha, {words} ({seeds} seeds per fold): {span(result['dmha'][variant])}")
        if "dmha_seed_vote" in result:
            lines.append(f"  hard vote of the {seeds} seeds per fold (an ensemble): {span(result['dmha_seed_vote'][variant])}")
    for t in tags:
        peer, variant = result["peers"][t], PAIRED_WITH[t]
        diff = peer["difference"][variant]
        boot, perm = diff["bootstrap"], diff["permutation"]
        folds = "" if one_fold else (f", wins {diff['wins']}/{len(result['folds'])}, sign p={diff['sign_p']:.3f}, "
                                     f"Wilcoxon p={diff['wilcoxon_p']:.3f}")
        lines.append(f"{SYSTEMS[t]}: {span(peer)}; dmha {variant} - it: {span(diff)}{folds}; over "
                     f"{perm['speakers']} speakers: bootstrap [{boot['ci95'][0]:+.4f}, {boot['ci95'][1]:+.4f}], "
                     f"permutation p={perm['p_value']:.4f}")
    for corpus, part in result.get("per_corpus", {}).items():
        line = (f"{corpus} (on its own {len(part['labels'])} labels): dmha alone {span(part['dmha']['alone'])}, "
                f"grouped {span(part['dmha']['grouped'])}")
        for t, peer in sorted(part["peers"].items()):
            diff = peer["difference"][PAIRED_WITH[t]]
            line += f"; {t} {span(peer)} (dmha {PAIRED_WITH[t]} - {t}: {diff['mean']:+.4f})"
        lines.append(line)
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cv_dir", type=Path, nargs="+",
                   help="a finished `dmha cv --out` folder, or `dmha train` run folders of one manifest (seeds)")
    p.add_argument("--manifest", type=Path, default=None,
                   help="train runs: their manifest, where the path they recorded does not resolve from here")
    p.add_argument("--only", default="a,b,c", help="peers to run, comma-separated from a,b,c (default: all)")
    p.add_argument("--cache", type=Path, default=peers.RESULTS / "cache", help="peer feature cache folder")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default: CV_DIR/peers.json)")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help=f"bootstrap draws (default {BOOTSTRAP})")
    p.add_argument("--permutations", type=int, default=PERMUTATIONS,
                   help=f"permutation-test draws (default {PERMUTATIONS})")
    args = p.parse_args(argv)
    args.only = sorted({s.strip() for s in args.only.split(",") if s.strip()})
    if not args.only or set(args.only) - set(SYSTEMS):
        p.error(f"--only takes a comma-separated subset of a,b,c, got {','.join(args.only) or 'nothing'}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if len(args.cv_dir) == 1 and (args.cv_dir[0] / "cv.json").is_file():
        cv_dir = args.cv_dir[0]
        cv = read_cv_dir(cv_dir)
    else:
        cv, cv_dir = read_train_runs(args.cv_dir, args.manifest), None
    items, splits = fold_splits(cv_dir, cv)
    key = data_key(items)
    features = {}
    if "a" in args.only:
        import opensmile

        features["a"] = peers.cached(args.cache / f"egemaps_v{opensmile.__version__}_{key}.npy",
                                     lambda: peers.egemaps_features([str(i.path) for i in items]))[0]
    if "b" in args.only:
        ident = hashlib.sha1(json.dumps([cv["config"]["encoders"], cv["config"]["features"]["normalize"],
                                         cv["config"]["features"]["layers"]], sort_keys=True).encode()).hexdigest()[:12]
        features["b"] = peers.cached(args.cache / f"store_pooled_{ident}_{key}.npy",
                                     lambda: store_pooled_states(items, cv["config"]))[0]
    if "c" in args.only:
        ident = hashlib.sha1(json.dumps([cv["config"]["encoders"], cv["config"]["features"]["normalize"],
                                         cv["config"]["features"]["layers"]], sort_keys=True).encode()).hexdigest()[:12]
        moments = peers.cached(args.cache / f"store_moments_{ident}_{key}.npy",
                               lambda: store_moments(items, cv["config"]))[0]
        prior = cv["config"]["model"].get("speaker_prior_frames", ModelConfig().speaker_prior_frames)
        speakers = [i.speaker for i in items]
        features["c"] = lambda idx: speaker_normalised_means(moments, speakers, idx, prior)
    result = compare(cv, items, splits, features, args.bootstrap, args.permutations)
    out = args.out or (cv_dir or args.cv_dir[0]) / "peers.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(format_table(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
