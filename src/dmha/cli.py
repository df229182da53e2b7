"""The `dmha` command line: each subcommand parses its options and calls one library function."""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class CommandError(Exception):
    """A failure to report as one line and exit code 1."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers", "faster_whisper"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    if args.allow_pickle:
        from .trust import allow_pickle

        allow_pickle()
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("dmha: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # library errors become one line; -v shows the traceback
        if args.verbose:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"dmha {args.command}: error: {message}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dmha", description="Double Multi-Head Attention speech emotion recognition")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details and show tracebacks")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="let encoders load pickle weights (pytorch_model.bin): only for models you trust")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="offline end-to-end run on a synthesised corpus")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_demo)

    p = sub.add_parser("prepare", help="turn a known corpus layout into a manifest CSV")
    p.add_argument("corpus", choices=["ravdess", "msp-podcast", "folders"])
    p.add_argument("src", help="corpus root folder")
    p.add_argument("--out", required=True, help="manifest CSV to write")
    p.add_argument("--no-transcripts", action="store_true", help="RAVDESS: leave transcripts empty (use ASR)")
    p.add_argument("--include-unlabelled", action="store_true",
                   help="MSP-Podcast: keep rows without a consensus label (label 'unknown'; for transcribe/predict)")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("transcribe", help="fill the manifest's transcript column with ASR (given ones kept)")
    p.add_argument("manifest")
    p.add_argument("--out", help="manifest to write (default: overwrite the input)")
    p.add_argument("--asr", default=None, help="ASR model: tiny.en (default), base, or a CTranslate2 Whisper dir")
    p.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(func=_transcribe)

    p = sub.add_parser("train", help="train a DMHA model")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="run folder (model/ and metrics.json go here)")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. --set model.attention=subvector train.devices=2")
    p.set_defaults(func=_train)

    p = sub.add_parser("extract", help="fill the feature store for a manifest, as train would (resumable)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--config", help="TOML config file (the one you will train with)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--processes", type=int, default=1,
                   help="split the work over N processes (one per GPU with encoders.device=cuda)")
    p.set_defaults(func=_extract)

    p = sub.add_parser("evaluate", help="score a model or ensemble directory on a manifest split")
    p.add_argument("model_dir")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    _decision_options(p)
    p.add_argument("--no-report", action="store_true", help="skip report.html (figures take a few seconds)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("tune-thresholds", help="search per-class decision thresholds; writes thresholds.json")
    p.add_argument("model_dir", help="model directory (or ensemble: every member is tuned)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="train", help="split to tune on (default: train, as in the paper)")
    p.add_argument("--objective", choices=["ovr", "multiclass"], default="ovr",
                   help="ovr: each class against the rest (the paper); multiclass: macro-F1 of the final rule")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="decision.prior=uniform: tune on prior-corrected probabilities")
    p.set_defaults(func=_tune_thresholds)

    p = sub.add_parser("ensemble", help="combine model directories into a hard-voting ensemble directory")
    p.add_argument("model_dirs", nargs="+")
    p.add_argument("--out", required=True, help="ensemble directory to create")
    p.set_defaults(func=_ensemble)

    p = sub.add_parser("cache", help="inspect, verify or prune the feature cache")
    p.add_argument("action", choices=["info", "verify", "prune"])
    p.add_argument("--cache-dir", help="cache root (default: features.cache_dir default, $DMHA_HOME/features)")
    p.add_argument("--deep", action="store_true", help="verify: read every stored value, not just headers")
    p.add_argument("--fix", action="store_true", help="verify: delete corrupt entries and stale temp files")
    p.add_argument("--older-than", type=float, metavar="DAYS", help="prune: shards unused for DAYS days")
    p.add_argument("--encoder", metavar="TEXT", help="prune: entries of encoders whose identity contains TEXT")
    p.add_argument("--legacy", action="store_true", help="prune: per-utterance files of the old cache layout")
    p.add_argument("--dry-run", action="store_true", help="prune: only report what would be deleted")
    p.set_defaults(func=_cache)

    p = sub.add_parser("compare", help="table of metrics across run and evaluation folders")
    p.add_argument("runs", nargs="+", help="folders holding a metrics.json (from train or evaluate)")
    p.add_argument("--out", default="compare.csv", help="table file: .csv, .md or .json (default: compare.csv)")
    p.set_defaults(func=_compare)

    p = sub.add_parser("predict", help="predict the emotion of audio files")
    p.add_argument("model_dir")
    p.add_argument("files", nargs="+")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--format", choices=["jsonl", "csv", "table", "challenge"], default="table",
                   help="challenge: the Odyssey 2024 submission CSV (FileName,EmoClass)")
    p.add_argument("--out", help="write the predictions to this file instead of stdout")
    p.add_argument("--transcript", action="append", default=None,
                   help="transcript for the files, in order (repeat once per file); default: ASR")
    p.add_argument("--strict", action="store_true", help="exit with code 3 when any file was skipped")
    _decision_options(p)
    p.set_defaults(func=_predict)
    return parser


def _decision_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-thresholds", action="store_true", help="ignore the model's thresholds.json")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="decision.prior=uniform (or none, or 'label:weight,...'): prior correction")


def _decision_prior(overrides: list[str]) -> str | None:
    """The decision.prior override, if any; only decision.* keys may change after training."""
    from .config import load

    keys = [item.partition("=")[0].strip() for item in overrides]
    extra = [key for key in keys if not key.startswith("decision.")]
    if extra:
        raise CommandError(f"--set {extra[0]}: only decision.* keys can be set here (the rest is fixed by training)")
    return load(None, overrides).decision.prior if "decision.prior" in keys else None


def _demo(args) -> int:
    from .demo import run_demo

    summary = run_demo(Path(args.out), overrides=args.overrides)
    print(json.dumps(summary, indent=2))
    return 0


def _prepare(args) -> int:
    from .data.folders import prepare_folders
    from .data.msp_podcast import prepare_msp_podcast
    from .data.ravdess import prepare_ravdess

    if args.corpus == "ravdess":
        items = prepare_ravdess(Path(args.src), Path(args.out), transcripts=not args.no_transcripts)
    elif args.corpus == "msp-podcast":
        items = prepare_msp_podcast(Path(args.src), Path(args.out), include_unlabelled=args.include_unlabelled)
    else:
        items = prepare_folders(Path(args.src), Path(args.out))
    counts = {}
    for item in items:
        counts[item.split] = counts.get(item.split, 0) + 1
    print(f"wrote {args.out}: {len(items)} items ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    return 0


def _transcribe(args) -> int:
    from .config import EncodersConfig, FeaturesConfig
    from .data.manifest import read_manifest, write_manifest
    from .pipeline import feature_cache, fill_transcripts

    items = read_manifest(args.manifest, require_label=False)
    enc = EncodersConfig(asr=args.asr) if args.asr else EncodersConfig()
    filled, errors = fill_transcripts(items, enc, feature_cache(FeaturesConfig()), args.batch_size)
    out = args.out or args.manifest
    write_manifest(filled, Path(out))
    print(f"wrote {out}: {sum(1 for i in filled if i.transcript)} of {len(filled)} items transcribed")
    return _report_skipped(errors)


def _train(args) -> int:
    from .config import load
    from .experiment import train

    metrics = train(args.manifest, args.out, load(args.config, args.overrides))
    if metrics is None:  # a secondary DDP rank
        return 0
    print(f"model: {Path(args.out) / 'model'}")
    print(f"{metrics['split']} macro-F1 {metrics['macro_f1']:.4f}  accuracy {metrics['accuracy']:.4f}  "
          f"UAR {metrics['uar']:.4f}  (dev macro-F1 {metrics['dev_macro_f1']:.4f}, best epoch {metrics['best_epoch']})")
    print(f"metrics: {Path(args.out) / 'metrics.json'}")
    return 0


def _extract(args) -> int:
    from . import config as cfg
    from .experiment import extract

    if args.processes < 1:
        raise CommandError(f"--processes must be >= 1, got {args.processes}")
    data = extract(args.manifest, cfg.load(args.config, args.overrides), progress=True, processes=args.processes)
    print(f"features ready for {len(data.items)} items ({data.speech_computed} speech entries computed here)")
    return _report_skipped(data.errors)


def _evaluate(args) -> int:
    from .evaluation import evaluate

    report = evaluate(args.model_dir, args.manifest, args.split, args.out, use_thresholds=not args.no_thresholds,
                      prior=_decision_prior(args.overrides), report=not args.no_report)
    print(f"{args.split}: macro-F1 {report['macro_f1']:.4f}  accuracy {report['accuracy']:.4f}  "
          f"UAR {report['uar']:.4f}  n={report['n']}")
    print("macro-F1 by decision: " + "  ".join(f"{k} {v:.4f}" for k, v in report["decisions_macro_f1"].items()))
    for name, member in report.get("members", {}).items():
        print(f"  member {name}: macro-F1 {member['macro_f1']:.4f}")
    print(f"wrote {Path(args.out) / 'metrics.json'}, confusion.csv, confusion.png, predictions.csv"
          + ("" if args.no_report else ", report.html"))
    return _report_skipped([(s["path"], s["reason"]) for s in report["skipped"]])


def _tune_thresholds(args) -> int:
    from .evaluation import tune_model_thresholds

    summary = tune_model_thresholds(args.model_dir, args.manifest, args.split, args.objective,
                                    _decision_prior(args.overrides))
    for name, tuned in summary.items():
        values = "  ".join(f"{label} {t:.2f}" for label, t in tuned["thresholds"].items())
        print(f"{name}: {args.split} macro-F1 {tuned['macro_f1_before']:.4f} -> {tuned['macro_f1_after']:.4f}  "
              f"thresholds: {values}")
    print(f"wrote thresholds.json into {args.model_dir}" + (" (every member)" if len(summary) > 1 else ""))
    return 0


def _ensemble(args) -> int:
    from .ensemble import make_ensemble

    payload = make_ensemble(args.model_dirs, args.out)
    for rank, member in enumerate(payload["members"]):
        dev = member["dev_macro_f1"]
        print(f"{rank}: {member['name']}  dev macro-F1 {dev:.4f}" if dev is not None else f"{rank}: {member['name']}")
    print(f"wrote {Path(args.out) / 'ensemble.json'} ({len(payload['members'])} members; ties go to member 0)")
    return 0


def _cache(args) -> int:
    from . import cache_admin, paths

    root = Path(args.cache_dir) if args.cache_dir else paths.features_dir()
    if not root.is_dir():
        raise CommandError(f"{root}: no feature cache there")
    if args.action == "info":
        total = 0
        print(f"cache: {root}")
        for d in cache_admin.info(root):
            total += d.bytes
            files = "files " if d.kind == "asr" else "shards"
            legacy = f"  (+{d.legacy} old-layout files: cache prune --legacy)" if d.legacy else ""
            print(f"  {d.kind:6s} {d.folder.name}  {d.entries:7d} entries  {d.files:5d} {files}  "
                  f"{d.bytes / 2**20:10.1f} MiB  {d.identity}{legacy}")
        print(f"  total {total / 2**30:.2f} GiB")
        return 0
    if args.action == "verify":
        report = cache_admin.verify(root, deep=args.deep, fix=args.fix)
        for path, reason in report.corrupt:
            print(f"corrupt: {path}: {reason}", file=sys.stderr)
        for path in report.stale_tmp:
            print(f"stale temp file: {path}", file=sys.stderr)
        print(f"checked {report.checked} files ({report.entries} entries): {len(report.corrupt)} corrupt, "
              f"{len(report.stale_tmp)} stale temp file(s), {report.failed_markers} failure marker(s)"
              + (f"; removed {report.removed}" if args.fix else ""))
        return 0 if report.ok or args.fix else 2
    try:
        files, size = cache_admin.prune(root, args.older_than, args.encoder, args.legacy, args.dry_run)
    except ValueError as err:
        raise CommandError(str(err)) from None
    print(f"{'would remove' if args.dry_run else 'removed'} {files} files ({size / 2**20:.1f} MiB)")
    return 0


def _compare(args) -> int:
    from .compare import collect, format_table, write_table

    rows = collect(args.runs)
    print(format_table(rows))
    write_table(rows, args.out)
    print(f"wrote {args.out}")
    return 0


def _predict(args) -> int:
    from tqdm.auto import tqdm

    from .inference import EmotionRecognizer

    if args.transcript is not None and len(args.transcript) != len(args.files):
        raise CommandError(f"got {len(args.transcript)} --transcript for {len(args.files)} files")
    rec = EmotionRecognizer.load(args.model_dir, use_thresholds=not args.no_thresholds,
                                 prior=_decision_prior(args.overrides))
    with tqdm(total=len(args.files), desc="predicting", disable=len(args.files) < 2, file=sys.stderr) as bar:
        preds, errors = rec.predict_files(args.files, args.transcript, args.batch_size, progress=bar.update)
    kept = [p for p in preds if p is not None]
    if args.out:
        from .fileio import atomic_path

        with atomic_path(args.out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            _print_predictions(kept, rec.labels, args.format, f)
        print(f"wrote {args.out}: {len(kept)} predictions")
    else:
        _print_predictions(kept, rec.labels, args.format, sys.stdout)
    code = _report_skipped(errors)
    return 3 if errors and args.strict else code


def _print_predictions(preds, labels, fmt: str, out) -> None:
    if fmt == "jsonl":
        for p in preds:
            print(json.dumps(p.to_dict()), file=out)
    elif fmt == "challenge":
        from .data.msp_podcast import challenge_rows

        writer = csv.writer(out)
        writer.writerow(["FileName", "EmoClass"])
        writer.writerows(challenge_rows([p.path for p in preds], [p.label for p in preds]))
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(["path", "label", *[f"p_{l}" for l in labels], "transcript"])
        for p in preds:
            writer.writerow([p.path, p.label, *[f"{p.probs[l]:.6f}" for l in labels], p.transcript])
    else:
        for p in preds:
            top = sorted(p.probs.items(), key=lambda kv: -kv[1])[:3]
            print(f"{p.path}\t{p.label}\t" + "  ".join(f"{k} {v:.2f}" for k, v in top) + f"\t{p.transcript!r}",
                  file=out)


def _report_skipped(errors) -> int:
    """List skipped items on stderr; skipping is not a failure (use --strict where offered)."""
    if errors:
        print(f"skipped {len(errors)} bad file(s):", file=sys.stderr)
        for path, reason in errors:
            print(f"  {path}: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
