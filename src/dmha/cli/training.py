"""`dmha train`, `cv`, `evaluate`, `tune-thresholds`, `calibrate`, `ensemble` and `compare`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import CommandError, MODEL_HELP, config_options, decision_options, decision_prior, model_location, report_skipped



def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a DMHA model")
    p.add_argument("--manifest", action="append", required=True, metavar="MANIFEST",
                   help="manifest CSV; repeat it to train one model on several corpora (one label vocabulary, "
                        "each clip's loss over its own corpus's labels)")
    p.add_argument("--out", required=True, help="run folder (model/ and metrics.json go here)")
    config_options(p, set_help="override config keys, e.g. --set model.attention=subvector train.devices=2")
    p.set_defaults(func=_train)


def _train(args) -> int:
    from ..config import load
    from ..experiment import train

    metrics = train(args.manifest, args.out, load(args.config, args.overrides))
    if metrics is None:  # a secondary DDP rank
        return 0
    print(f"model: {Path(args.out) / 'model'}")
    criterion = metrics["dev_criterion"]
    dev = f"(dev {criterion} {metrics[f'dev_{criterion}']:.4f}, best epoch {metrics['best_epoch']})"
    grouped = metrics.get(f"{metrics['split']}_grouped")
    if "macro_f1" in metrics:
        alone = ", each clip alone" if grouped else ""
        print(f"{metrics['split']} macro-F1{alone} {metrics['macro_f1']:.4f}  accuracy {metrics['accuracy']:.4f}  "
              f"UAR {metrics['uar']:.4f}  {dev}")
        if grouped:
            print(f"{metrics['split']} macro-F1 grouped by speaker {grouped['macro_f1']:.4f} (transductive: uses each "
                  "speaker's other unlabelled recordings)")
        for corpus, figures in metrics.get("per_corpus", {}).items():
            print(f"  {corpus} (on its own labels): macro-F1 {figures['macro_f1']:.4f}  n={figures['n']}")
    if "attributes" in metrics:
        scores = "  ".join(f"{name} {r['ccc']:.4f}" for name, r in metrics["attributes"].items())
        print(f"{metrics['split']} CCC {scores}  (mean {metrics['mean_ccc']:.4f})" + ("" if "macro_f1" in metrics else f"  {dev}"))
    print(f"metrics: {Path(args.out) / 'metrics.json'}")
    return 0


def add_cv(sub) -> None:
    p = sub.add_parser("cv", help="speaker-independent K-fold cross-validation (several seeds) of a config")
    p.add_argument("--manifest", action="append", required=True, metavar="MANIFEST",
                   help="manifest with a speaker column (its split column is ignored); repeat it for several "
                        "corpora: folds are made within each corpus, so every fold tests every corpus")
    p.add_argument("--out", required=True, help="cv folder: cv.json, report.html, one run folder per fold and seed")
    p.add_argument("--folds", type=int, default=None, help="number of speaker folds (default: 5)")
    p.add_argument("--fold-column", default=None, metavar="NAME",
                   help="manifest column that gives each speaker's fold (a published protocol)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds per fold (default: 0,1,2); "
                   "a finished cv can be rerun with more seeds")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, in processes that share the CPU "
                   "threads (default: 1; 2 on 2 cores is about 1.3x faster for small heads)")
    p.add_argument("--dev-only", action="store_true",
                   help="for choosing a recipe: the same folds and dev speakers, but each fold's test speakers are "
                        "left out of its runs (never trained, scored or written); cv.json holds dev figures only")
    p.add_argument("--leave-corpus-out", action="store_true",
                   help="the protocol of generalisation (two or more --manifest corpora): one fold per corpus, "
                        "trained on the others (model selection on their dev-split speakers) and scored on every "
                        "clip of the corpus left out, each alone; --folds and --fold-column do not apply")
    config_options(p)
    p.set_defaults(func=_cv)


def _cv(args) -> int:
    from ..config import load
    from ..cv import cross_validate
    from ..cv_report import format_summary

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise CommandError(f"--seeds takes comma-separated integers, got {args.seeds!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise CommandError(f"--seeds needs distinct integers, got {args.seeds!r}")
    if args.jobs < 1:
        raise CommandError(f"--jobs must be >= 1, got {args.jobs}")
    folds = args.folds if args.folds is not None or args.fold_column or args.leave_corpus_out else 5
    result = cross_validate(args.manifest, args.out, load(args.config, args.overrides), folds, args.fold_column,
                            seeds, echo=lambda line: print(line, file=sys.stderr), jobs=args.jobs,
                            dev_only=args.dev_only, leave_corpus_out=args.leave_corpus_out)
    print(format_summary(result))
    print(f"cv: {Path(args.out) / 'cv.json'}, report: {Path(args.out) / 'report.html'}")
    return 0


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model or ensemble directory on a manifest split")
    p.add_argument("model_dir", help=MODEL_HELP + "; or a bundled model's name")
    p.add_argument("--manifest", action="append", required=True, metavar="MANIFEST",
                   help="manifest CSV; repeat it for several corpora (figures per corpus)")
    p.add_argument("--labels", default=None, metavar="A,B,...",
                   help="score on these of the model's labels only (the prediction is the most probable of them); "
                        "default: the labels the model and the manifest share, with a note naming what is left out")
    p.add_argument("--split", default="test", help="the split to score")
    p.add_argument("--out", required=True, help="folder for metrics.json, predictions, confusion and report.html")
    decision_options(p)
    p.add_argument("--no-report", action="store_true", help="skip report.html (figures take a few seconds)")
    p.set_defaults(func=_evaluate)


def _evaluate(args) -> int:
    from ..evaluation import evaluate

    labels = [label.strip() for label in args.labels.split(",") if label.strip()] if args.labels else None
    report = evaluate(model_location(args.model_dir), args.manifest, args.split, args.out, use_thresholds=not args.no_thresholds,
                      prior=decision_prior(args.overrides), report=not args.no_report, labels=labels)
    written = ["predictions.csv"]
    for note in report.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    if "macro_f1" in report:
        alone = ", each clip alone" if "grouped" in report else ""
        print(f"{args.split}: macro-F1{alone} {report['macro_f1']:.4f}  accuracy {report['accuracy']:.4f}  "
              f"UAR {report['uar']:.4f}  n={report['n']}")
        if "grouped" in report:
            print(f"{args.split}: macro-F1 grouped by speaker {report['grouped']['macro_f1']:.4f} (transductive: "
                  "uses each speaker's other unlabelled recordings)")
        for corpus, figures in report.get("per_corpus", {}).items():
            print(f"  {corpus} (on its own labels): macro-F1 {figures['macro_f1']:.4f}  n={figures['n']}")
        print("macro-F1 by decision: " + "  ".join(f"{k} {v:.4f}" for k, v in report["decisions_macro_f1"].items()))
        for name, member in report.get("members", {}).items():
            print(f"  member {name}: macro-F1 {member['macro_f1']:.4f}")
        written = ["confusion.csv", "confusion.png", *written]
    if "attributes" in report:
        print(f"{args.split}: " + "  ".join(f"{name} CCC {r['ccc']:.4f} (r {r['pearson']:.4f}, RMSE {r['rmse']:.4f})"
                                            for name, r in report["attributes"].items())
              + f"  mean CCC {report['mean_ccc']:.4f}  n={report['n']}")
        written += [f"scatter_{name}.png" for name in report["attributes"]]
    print(f"wrote {Path(args.out) / 'metrics.json'}, {', '.join(written)}" + ("" if args.no_report else ", report.html"))
    return report_skipped([(s["path"], s["reason"]) for s in report["skipped"]])


def add_tune_thresholds(sub) -> None:
    p = sub.add_parser("tune-thresholds", help="search per-class decision thresholds; writes thresholds.json")
    p.add_argument("model_dir", help="model directory (or ensemble: every member is tuned)")
    p.add_argument("--manifest", required=True, help="manifest CSV holding the split")
    p.add_argument("--split", default="train", help="split to tune on (default: train, as in the paper)")
    p.add_argument("--objective", choices=["ovr", "multiclass"], default="ovr",
                   help="ovr: each class against the rest (the paper); multiclass: macro-F1 of the final rule")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="decision.prior=uniform: tune on prior-corrected probabilities")
    p.set_defaults(func=_tune_thresholds)


def _tune_thresholds(args) -> int:
    from ..evaluation import tune_model_thresholds

    summary = tune_model_thresholds(args.model_dir, args.manifest, args.split, args.objective,
                                    decision_prior(args.overrides))
    for name, tuned in summary.items():
        values = "  ".join(f"{label} {t:.2f}" for label, t in tuned["thresholds"].items())
        print(f"{name}: {args.split} macro-F1 {tuned['macro_f1_before']:.4f} -> {tuned['macro_f1_after']:.4f}  "
              f"thresholds: {values}")
    print(f"wrote thresholds.json into {args.model_dir}" + (" (every member)" if len(summary) > 1 else ""))
    return 0


def add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="fit the temperature of a model's probabilities on held-out speakers; "
                                         "writes calibration.json")
    p.add_argument("model_dir", help="model directory (or ensemble: every member is calibrated)")
    p.add_argument("--manifest", action="append", required=True, metavar="MANIFEST",
                   help="manifest CSV holding the split (repeat it for several corpora)")
    p.add_argument("--split", default="dev", help="labelled split of speakers the model did not train on (default: dev)")
    p.set_defaults(func=_calibrate)


def _calibrate(args) -> int:
    from ..calibration import calibrate

    summary = calibrate(args.model_dir, args.manifest, args.split)
    for name, fitted in summary.items():
        print(f"{name}: temperature {fitted['temperature']:.3f}; on {fitted['fitted_on']}: ECE "
              f"{fitted['ece_before']:.4f} -> {fitted['ece_after']:.4f}, Brier {fitted['brier_before']:.4f} -> "
              f"{fitted['brier_after']:.4f}")
    print(f"wrote calibration.json into {args.model_dir}" + (" (every member)" if len(summary) > 1 else ""))
    return 0


def add_ensemble(sub) -> None:
    p = sub.add_parser("ensemble", help="combine model directories into a hard-voting ensemble directory")
    p.add_argument("model_dirs", nargs="+", help="two or more model directories (tie-breaks follow dev macro-F1)")
    p.add_argument("--out", required=True, help="ensemble directory to create")
    p.set_defaults(func=_ensemble)


def _ensemble(args) -> int:
    from ..ensemble import make_ensemble

    payload = make_ensemble(args.model_dirs, args.out)
    for rank, member in enumerate(payload["members"]):
        dev = member["dev_macro_f1"]
        print(f"{rank}: {member['name']}  dev macro-F1 {dev:.4f}" if dev is not None else f"{rank}: {member['name']}")
    print(f"wrote {Path(args.out) / 'ensemble.json'} ({len(payload['members'])} members; ties go to member 0)")
    return 0


def add_compare(sub) -> None:
    p = sub.add_parser("compare", help="table of metrics across run and evaluation folders")
    p.add_argument("runs", nargs="+", help="run or evaluation folders (metrics.json) and cv folders (cv.json)")
    p.add_argument("--out", default="compare.csv", help="table file: .csv, .md or .json (default: compare.csv)")
    p.set_defaults(func=_compare)


def _compare(args) -> int:
    from ..compare import collect, format_table, write_table

    rows = collect(args.runs)
    print(format_table(rows))
    write_table(rows, args.out)
    print(f"wrote {args.out}")
    return 0
