#!/usr/bin/env python
"""dmha against two peers on the speaker-independent RAVDESS split (train 1-16, dev 17-20, test 21-24).

(a) openSMILE eGeMAPSv02 functionals + RBF-SVM, C chosen on dev macro-F1.
(b) linear probe: logistic regression on mean-pooled hidden states of dmha's frozen speech encoder,
    layer and C chosen on dev macro-F1.
(c) dmha itself, through its CLI (`dmha prepare ravdess` then `dmha train`).

Every system trains on train, selects on dev and reports test macro-F1, accuracy and UAR, plus its
wall time. Results go to benchmarks/results/ravdess_split/peers.json (merged with earlier runs on the same
data, so `--only c` later completes the table). Peer features are cached as .npy under --cache.

    python benchmarks/ravdess_peers.py                  # all three
    python benchmarks/ravdess_peers.py --only a,b       # peers only
    python benchmarks/ravdess_peers.py --only c --set train.max_epochs=5
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ravdess"
RESULTS = REPO / "benchmarks" / "results"
SYSTEMS = {"a": "eGeMAPS + RBF-SVM", "b": "Whisper-base linear probe", "c": "dmha"}
SPLITS = ("train", "dev", "test")
SVM_C = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
PROBE_C = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
ENCODER = "whisper-base"
ENCODE_CHUNK = 16  # waves per encode() call: bounds memory and drives the progress bar


# ---------------------------------------------------------------- data


def read_split_manifest(data: Path) -> list[dict[str, str]]:
    """Rows of the corpus manifest with absolute paths, so features line up with labels by index."""
    with open(data / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    bad = {r["split"] for r in rows} - set(SPLITS)
    if not rows or bad:
        raise SystemExit(f"ravdess_peers: {data / 'manifest.csv'}: no rows or unknown splits {sorted(bad)}")
    for row in rows:
        row["path"] = str((data / row["path"]).resolve())
    return rows


def split_indices(rows: Sequence[dict[str, str]]) -> dict[str, np.ndarray]:
    """Row indices of each split, so one feature matrix serves all three."""
    return {s: np.array([i for i, r in enumerate(rows) if r["split"] == s]) for s in SPLITS}


def data_key(rows: Sequence[dict[str, str]]) -> str:
    """Fingerprint of files, labels and splits (names, sizes, mtimes) so caches notice edited data."""
    digest = hashlib.sha1()
    for row in rows:
        stat = Path(row["path"]).stat()
        digest.update(f"{row['path']}|{row['emotion']}|{row['split']}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def cached(path: Path, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """Load a feature matrix from .npy, or compute and save it, so reruns skip extraction."""
    if path.is_file():
        return np.load(path), True
    array = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)  # atomic: an interrupted run leaves no half-written cache
    return array, False


# ---------------------------------------------------------------- metrics and model selection


def scores(y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    """Macro-F1, accuracy and UAR (macro recall), by dmha's own definitions (dmha.metrics), so a peer
    and dmha are never scored by two rules."""
    from dmha.metrics import classification_report

    labels = sorted(set(map(str, y_true)) | set(map(str, y_pred)))
    code = {label: k for k, label in enumerate(labels)}
    report = classification_report([code[str(v)] for v in y_true], [code[str(v)] for v in y_pred], labels)
    return {key: float(report[key]) for key in ("macro_f1", "accuracy", "uar")}


def fit_svm(x: np.ndarray, y: Sequence, c: float):
    """RBF-SVM on standardised features; the scaler is fit on the training rows only."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC(C=c, kernel="rbf", gamma="scale", class_weight="balanced")).fit(x, y)


def fit_logreg(x: np.ndarray, y: Sequence, c: float):
    """Balanced logistic regression on standardised features: the usual linear probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=3000)).fit(x, y)


def select_c(fit: Callable, x_tr, y_tr, x_dev, y_dev, grid: Sequence[float]) -> tuple[float, float, object]:
    """Best C by dev macro-F1 (first, i.e. smallest, on ties) so test is never looked at."""
    from threadpoolctl import threadpool_limits

    best = (float("nan"), -1.0, None)
    with threadpool_limits(1):  # these fits are small: multi-threaded BLAS only thrashes on a busy CPU (~30x)
        for c in grid:
            model = fit(x_tr, y_tr, c)
            f1 = scores(y_dev, model.predict(x_dev))["macro_f1"]
            if f1 > best[1]:
                best = (c, f1, model)
    return best


def select_svm(x_tr, y_tr, x_dev, y_dev, grid: Sequence[float] = SVM_C) -> tuple[float, float, object]:
    """Peer (a)'s model selection: RBF-SVM C on dev macro-F1."""
    return select_c(fit_svm, x_tr, y_tr, x_dev, y_dev, grid)


def select_probe(f_tr, y_tr, f_dev, y_dev, grid: Sequence[float] = PROBE_C) -> tuple[int, float, float, object]:
    """Peer (b)'s model selection over (layer, C) on dev; features are (N, L, D) mean-pooled states."""
    best = (-1, float("nan"), -1.0, None)
    for layer in tqdm(range(f_tr.shape[1]), desc="probe layers", leave=False):
        c, f1, model = select_c(fit_logreg, f_tr[:, layer], y_tr, f_dev[:, layer], y_dev, grid)
        if f1 > best[2]:
            best = (layer, c, f1, model)
    return best


# ---------------------------------------------------------------- features


def egemaps_features(paths: Sequence[str]) -> np.ndarray:
    """(N, 88) eGeMAPSv02 functionals, one row per file, audio read through dmha.audio like dmha does."""
    import opensmile

    from dmha.audio import SAMPLE_RATE, load_audio

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    rows = [smile.process_signal(load_audio(p), SAMPLE_RATE).to_numpy()[0] for p in tqdm(paths, desc="eGeMAPS")]
    return np.stack(rows).astype(np.float32)


def pooled_states(encoder, paths: Sequence[str], chunk: int = ENCODE_CHUNK) -> np.ndarray:
    """(N, L, D) time-averaged hidden states of every layer: the probe's input."""
    from dmha.audio import load_audio

    out = []
    for start in tqdm(range(0, len(paths), chunk), desc="encoder", unit="batch"):
        waves = [load_audio(p) for p in paths[start:start + chunk]]
        out.extend(h.mean(dim=1).numpy() for h in encoder.encode(waves))  # (L, T, D) → (L, D)
    return np.stack(out).astype(np.float32)


# ---------------------------------------------------------------- systems


def labelled(rows) -> tuple[list[str], np.ndarray]:
    """Audio paths and emotion labels in manifest order, aligned with the feature rows."""
    return [r["path"] for r in rows], np.array([r["emotion"] for r in rows])


def run_egemaps(rows, idx, cache: Path, key: str) -> dict:
    """Peer (a): eGeMAPS functionals + RBF-SVM, C picked on dev."""
    import opensmile

    paths, y = labelled(rows)
    feats, hit = cached(cache / f"egemaps_v{opensmile.__version__}_{key}.npy", lambda: egemaps_features(paths))
    tr, dev, te = (idx[s] for s in SPLITS)
    c, dev_f1, model = select_svm(feats[tr], y[tr], feats[dev], y[dev])
    return {"system": SYSTEMS["a"], **scores(y[te], model.predict(feats[te])), "dev_macro_f1": dev_f1,
            "chosen": {"C": c}, "features_cached": hit}


def run_probe(rows, idx, cache: Path, key: str, encoder_name: str = ENCODER) -> dict:
    """Peer (b): linear probe on mean-pooled frozen-encoder states, layer and C picked on dev."""
    from dmha.encoders import load_speech_encoder

    encoder = load_speech_encoder(encoder_name)
    enc_key = hashlib.sha1(encoder.info.identity.encode()).hexdigest()[:12]
    paths, y = labelled(rows)
    feats, hit = cached(cache / f"probe_{enc_key}_{key}.npy", lambda: pooled_states(encoder, paths))
    tr, dev, te = (idx[s] for s in SPLITS)
    layer, c, dev_f1, model = select_probe(feats[tr], y[tr], feats[dev], y[dev])
    chosen = {"layer": layer, "C": c, "num_layers": encoder.info.num_layers, "encoder": encoder_name}
    return {"system": SYSTEMS["b"], **scores(y[te], model.predict(feats[te, layer])), "dev_macro_f1": dev_f1,
            "chosen": chosen, "features_cached": hit}


def dmha_command() -> list[str]:
    """The dmha entry point next to this interpreter, else `python -m dmha.cli`."""
    script = Path(sys.executable).parent / "dmha"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dmha.cli"]


def run_dmha(data: Path, run_dir: Path, overrides: Sequence[str], config: Path | None = None) -> dict:
    """System (c): dmha's own prepare + train (a fresh run, never resumed); figures from its metrics.json."""
    manifest, out = run_dir / "manifest.csv", run_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    sets = [arg for o in overrides for arg in ("--set", o)]
    if config is not None:
        sets = ["--config", str(config), *sets]
    for cmd in (["prepare", "ravdess", str(data), "--out", str(manifest)],
                ["train", "--manifest", str(manifest), "--out", str(out), *sets]):
        done = subprocess.run(dmha_command() + cmd)
        if done.returncode:
            raise SystemExit(f"ravdess_peers: `dmha {cmd[0]}` failed with exit code {done.returncode}")
    metrics = json.loads((out / "metrics.json").read_text())
    keep = {k: float(metrics[k]) for k in ("macro_f1", "accuracy", "uar", "dev_macro_f1")}
    chosen = {"config": portable(config) if config else None, "overrides": list(overrides)}
    return {"system": SYSTEMS["c"], **keep, "chosen": chosen, "run_dir": portable(out)}


# ---------------------------------------------------------------- output


def portable(path: Path) -> str:
    """A path as the results record it: relative to the repository, so no machine's folders are written."""
    return os.path.relpath(Path(path).resolve(), REPO)


def merge_results(path: Path, key: str, new: dict[str, dict]) -> dict:
    """Add this run's systems to earlier ones on the same data, so partial runs build one table."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    systems = old.get("systems", {}) if old.get("data_key") == key else {}
    return {"data_key": key, "systems": {**systems, **new}}


def format_table(systems: dict[str, dict]) -> str:
    """Plain-text table of test figures and wall time, one line per system."""
    lines = [f"{'':2} {'system':28} {'test F1':>8} {'acc':>6} {'UAR':>6} {'dev F1':>7} {'wall s':>8} {'cache':>5}  chosen"]
    for tag in sorted(systems):
        r = systems[tag]
        cache = {True: "yes", False: "no"}.get(r.get("features_cached"), "-")  # cached runs time no extraction
        lines.append(f"{tag:2} {r['system']:28} {r['macro_f1']:8.4f} {r['accuracy']:6.3f} {r['uar']:6.3f} "
                     f"{r['dev_macro_f1']:7.4f} {r['wall_s']:8.1f} {cache:>5}  {json.dumps(r['chosen'])}")
    return "\n".join(lines)


def timed(func: Callable[[], dict]) -> dict:
    """Run one system and record its wall time (feature extraction, or cache load, included)."""
    start = time.perf_counter()
    result = func()
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {**result, "wall_s": round(time.perf_counter() - start, 1), "finished": finished}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; defaults resolve from this file's location, not the working directory."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="a,b,c", help="systems to run, comma-separated from a,b,c (default: all)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"RAVDESS folder with manifest.csv (default: {DEFAULT_DATA})")
    p.add_argument("--cache", type=Path, default=RESULTS / "cache", help="peer feature cache folder")
    p.add_argument("--run-dir", type=Path, default=RESULTS / "ravdess_split" / "run", help="dmha's manifest and run folder")
    p.add_argument("--out", type=Path, default=RESULTS / "ravdess_split" / "peers.json", help="results JSON")
    p.add_argument("--config", type=Path, default=REPO / "configs" / "ravdess.toml",
                   help="dmha config for system c (default: configs/ravdess.toml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to `dmha train --set` (repeatable)")
    args = p.parse_args(argv)
    args.only = sorted({s.strip() for s in args.only.split(",") if s.strip()})
    if not args.only or set(args.only) - set(SYSTEMS):
        p.error(f"--only takes a comma-separated subset of a,b,c, got {','.join(args.only) or 'nothing'}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen systems in turn, saving results after each so a late failure keeps the rest."""
    args = parse_args(argv)
    data = args.data.resolve()
    if not (data / "manifest.csv").is_file():
        print(f"ravdess_peers: RAVDESS data not found: {data} (expected manifest.csv there; pass --data DIR)",
              file=sys.stderr)
        return 2
    rows = read_split_manifest(data)
    idx, key = split_indices(rows), data_key(rows)
    print(f"data: {data} ({', '.join(f'{s} {len(i)}' for s, i in idx.items())})")
    jobs = {"a": lambda: run_egemaps(rows, idx, args.cache, key),
            "b": lambda: run_probe(rows, idx, args.cache, key),
            "c": lambda: run_dmha(data, args.run_dir.resolve(), args.overrides, args.config)}
    for tag in args.only:
        print(f"== ({tag}) {SYSTEMS[tag]}", flush=True)
        result = timed(jobs[tag])
        merged = merge_results(args.out, key, {tag: result})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**merged, "data": portable(data)}, indent=2) + "\n")
        print(f"({tag}) test macro-F1 {result['macro_f1']:.4f}  ({result['wall_s']:.0f} s)", flush=True)
    print(format_table(merged["systems"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
