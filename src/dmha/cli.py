"""The `dmha` command line: each subcommand parses its options and calls one library function."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from .outputs import PREDICTION_FORMATS, PredictionWriter, SegmentWriter, SkippedItems

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger(__name__)


class CommandError(Exception):
    """A failure to report as one line and exit code 1."""


_MODEL_HELP = "model or ensemble directory, or a Hugging Face Hub repository id (owner/name) holding one"


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
    """The parser: global flags, then one small builder per subcommand, each beside its handler."""
    parser = argparse.ArgumentParser(prog="dmha", description="Double Multi-Head Attention speech emotion recognition")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details and show tracebacks")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="let encoders load pickle weights (pytorch_model.bin): only for models you trust")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_prepare, _add_transcribe, _add_train, _add_cv, _add_extract, _add_evaluate, _add_tune_thresholds, _add_calibrate, _add_ensemble, _add_cache, _add_compare, _add_predict, _add_export, _add_serve):
        add(sub)
    return parser


def _config_options(p: argparse.ArgumentParser, config_help: str | None = "TOML config file",
                    set_help: str | None = None) -> None:
    """--config FILE.toml (unless config_help is None) and --set KEY=VALUE ..., as every config-driven command."""
    if config_help is not None:
        p.add_argument("--config", help=config_help)
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help=set_help)


def _errors_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--errors", metavar="FILE",
                   help="write one 'path<TAB>reason' line per skipped item to FILE (empty when none)")


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


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="offline end-to-end run on a synthesised corpus")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    _config_options(p, config_help=None)
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from .demo import run_demo

    summary = run_demo(Path(args.out), overrides=args.overrides)
    print(json.dumps(summary, indent=2))
    return 0


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="turn a known corpus layout into a manifest CSV")
    p.add_argument("corpus", choices=["ravdess", "crema-d", "msp-podcast", "folders"])
    p.add_argument("src", help="corpus root folder")
    p.add_argument("--out", required=True, help="manifest CSV to write")
    p.add_argument("--no-transcripts", action="store_true", help="RAVDESS, CREMA-D: leave transcripts empty (use ASR)")
    p.add_argument("--include-unlabelled", action="store_true",
                   help="MSP-Podcast: keep rows without a consensus label (label 'unknown'; for transcribe/predict)")
    p.set_defaults(func=_prepare)


def _prepare(args) -> int:
    from .data.crema_d import prepare_crema_d
    from .data.folders import prepare_folders
    from .data.msp_podcast import prepare_msp_podcast
    from .data.ravdess import prepare_ravdess

    if args.corpus == "ravdess":
        items = prepare_ravdess(Path(args.src), Path(args.out), transcripts=not args.no_transcripts)
    elif args.corpus == "crema-d":
        items = prepare_crema_d(Path(args.src), Path(args.out), transcripts=not args.no_transcripts)
    elif args.corpus == "msp-podcast":
        items = prepare_msp_podcast(Path(args.src), Path(args.out), include_unlabelled=args.include_unlabelled)
    else:
        items = prepare_folders(Path(args.src), Path(args.out))
    counts = {}
    for item in items:
        counts[item.split] = counts.get(item.split, 0) + 1
    print(f"wrote {args.out}: {len(items)} items ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    return 0


def _add_transcribe(sub) -> None:
    p = sub.add_parser("transcribe", help="fill the manifest's transcript column with ASR (given ones kept)")
    p.add_argument("manifest")
    p.add_argument("--out", help="manifest to write (default: overwrite the input)")
    p.add_argument("--asr", default=None, help="ASR model: tiny.en (default), base, or a CTranslate2 Whisper dir")
    p.add_argument("--batch-size", type=int, default=8)
    _config_options(p, config_help="TOML config file (its encoders.asr*, features.cache_dir apply)",
                    set_help="config keys, e.g. encoders.asr_window_s=10 features.cache_dir=DIR")
    _errors_option(p)
    p.set_defaults(func=_transcribe)


def _transcribe(args) -> int:
    from .config import load
    from .data.manifest import read_manifest, write_manifest
    from .layout import StoreRoot
    from .transcription import fill_transcripts

    config = load(args.config, [*args.overrides, *([f"encoders.asr={args.asr}"] if args.asr else [])])
    items = read_manifest(args.manifest, require_label=False)
    filled, errors = fill_transcripts(items, config.encoders, StoreRoot.from_config(config.features),
                                     args.batch_size)
    out = args.out or args.manifest
    write_manifest(filled, Path(out))
    print(f"wrote {out}: {sum(1 for i in filled if i.transcript)} of {len(filled)} items transcribed")
    return _report_skipped(errors, args.errors)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a DMHA model")
    p.add_argument("--manifest", action="append", required=True, metavar="MANIFEST",
                   help="manifest CSV; repeat it to train one model on several corpora (one label vocabulary, "
                        "each clip's loss over its own corpus's labels)")
    p.add_argument("--out", required=True, help="run folder (model/ and metrics.json go here)")
    _config_options(p, set_help="override config keys, e.g. --set model.attention=subvector train.devices=2")
    p.set_defaults(func=_train)


def _train(args) -> int:
    from .config import load
    from .experiment import train

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


def _add_cv(sub) -> None:
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
    _config_options(p)
    p.set_defaults(func=_cv)


def _cv(args) -> int:
    from .config import load
    from .cv import cross_validate
    from .cv_report import format_summary

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise CommandError(f"--seeds takes comma-separated integers, got {args.seeds!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise CommandError(f"--seeds needs distinct integers, got {args.seeds!r}")
    if args.jobs < 1:
        raise CommandError(f"--jobs must be >= 1, got {args.jobs}")
    folds = args.folds if args.folds is not None or args.fold_column else 5
    result = cross_validate(args.manifest, args.out, load(args.config, args.overrides), folds, args.fold_column,
                            seeds, echo=lambda line: print(line, file=sys.stderr), jobs=args.jobs)
    print(format_summary(result))
    print(f"cv: {Path(args.out) / 'cv.json'}, report: {Path(args.out) / 'report.html'}")
    return 0


def _add_extract(sub) -> None:
    p = sub.add_parser("extract", help="fill the feature store for a manifest, as train would (resumable)")
    p.add_argument("--manifest", required=True)
    _config_options(p, config_help="TOML config file (the one you will train with)")
    p.add_argument("--processes", type=int, default=1,
                   help="split the work over N processes (one per GPU with encoders.device=cuda)")
    _errors_option(p)
    p.set_defaults(func=_extract)


def _extract(args) -> int:
    from . import config as cfg
    from .experiment import extract

    if args.processes < 1:
        raise CommandError(f"--processes must be >= 1, got {args.processes}")
    data = extract(args.manifest, cfg.load(args.config, args.overrides), progress=True, processes=args.processes)
    print(f"features ready for {len(data.items)} items ({data.speech_computed} speech entries computed here)")
    return _report_skipped(data.errors, args.errors)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model or ensemble directory on a manifest split")
    p.add_argument("model_dir")
    p.add_argument("--manifest", action="append", required=True, metavar="MANIFEST",
                   help="manifest CSV; repeat it for several corpora (figures per corpus)")
    p.add_argument("--labels", default=None, metavar="A,B,...",
                   help="score on these of the model's labels only (the prediction is the most probable of them); "
                        "default: the labels the model and the manifest share, with a note naming what is left out")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    _decision_options(p)
    p.add_argument("--no-report", action="store_true", help="skip report.html (figures take a few seconds)")
    p.set_defaults(func=_evaluate)


def _evaluate(args) -> int:
    from .evaluation import evaluate

    labels = [label.strip() for label in args.labels.split(",") if label.strip()] if args.labels else None
    report = evaluate(args.model_dir, args.manifest, args.split, args.out, use_thresholds=not args.no_thresholds,
                      prior=_decision_prior(args.overrides), report=not args.no_report, labels=labels)
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
    return _report_skipped([(s["path"], s["reason"]) for s in report["skipped"]])


def _add_tune_thresholds(sub) -> None:
    p = sub.add_parser("tune-thresholds", help="search per-class decision thresholds; writes thresholds.json")
    p.add_argument("model_dir", help="model directory (or ensemble: every member is tuned)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="train", help="split to tune on (default: train, as in the paper)")
    p.add_argument("--objective", choices=["ovr", "multiclass"], default="ovr",
                   help="ovr: each class against the rest (the paper); multiclass: macro-F1 of the final rule")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="decision.prior=uniform: tune on prior-corrected probabilities")
    p.set_defaults(func=_tune_thresholds)


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


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="fit the temperature of a model's probabilities on held-out speakers; "
                                         "writes calibration.json")
    p.add_argument("model_dir", help="model directory (or ensemble: every member is calibrated)")
    p.add_argument("--manifest", action="append", required=True, metavar="MANIFEST")
    p.add_argument("--split", default="dev", help="labelled split of speakers the model did not train on (default: dev)")
    p.set_defaults(func=_calibrate)


def _calibrate(args) -> int:
    from .calibration import calibrate

    summary = calibrate(args.model_dir, args.manifest, args.split)
    for name, fitted in summary.items():
        print(f"{name}: temperature {fitted['temperature']:.3f}; on {fitted['fitted_on']}: ECE "
              f"{fitted['ece_before']:.4f} -> {fitted['ece_after']:.4f}, Brier {fitted['brier_before']:.4f} -> "
              f"{fitted['brier_after']:.4f}")
    print(f"wrote calibration.json into {args.model_dir}" + (" (every member)" if len(summary) > 1 else ""))
    return 0


def _add_ensemble(sub) -> None:
    p = sub.add_parser("ensemble", help="combine model directories into a hard-voting ensemble directory")
    p.add_argument("model_dirs", nargs="+")
    p.add_argument("--out", required=True, help="ensemble directory to create")
    p.set_defaults(func=_ensemble)


def _ensemble(args) -> int:
    from .ensemble import make_ensemble

    payload = make_ensemble(args.model_dirs, args.out)
    for rank, member in enumerate(payload["members"]):
        dev = member["dev_macro_f1"]
        print(f"{rank}: {member['name']}  dev macro-F1 {dev:.4f}" if dev is not None else f"{rank}: {member['name']}")
    print(f"wrote {Path(args.out) / 'ensemble.json'} ({len(payload['members'])} members; ties go to member 0)")
    return 0


def _add_cache(sub) -> None:
    p = sub.add_parser("cache", help="inspect, verify or prune the feature cache")
    p.add_argument("action", choices=["info", "verify", "prune"])
    p.add_argument("--cache-dir", help="cache root (default: features.cache_dir default, $DMHA_HOME/features)")
    p.add_argument("--deep", action="store_true", help="verify: read every stored value, not just headers")
    p.add_argument("--fix", action="store_true", help="verify: delete corrupt entries and stale temp files")
    p.add_argument("--older-than", type=float, metavar="DAYS", help="prune: shards unused for DAYS days")
    p.add_argument("--encoder", metavar="TEXT", help="prune: entries of encoders whose identity contains TEXT")
    p.add_argument("--legacy", action="store_true", help="prune: per-utterance files of the old cache layout")
    p.add_argument("--dry-run", action="store_true", help="prune: only report what would be deleted")
    _config_options(p, config_help="TOML config file (its features.cache_dir is the cache root)",
                    set_help="e.g. features.cache_dir=DIR (as --cache-dir)")
    p.set_defaults(func=_cache)


def _cache(args) -> int:
    from . import cache_admin, paths
    from .config import load

    configured = load(args.config, args.overrides).features.cache_dir if args.config or args.overrides else ""
    root = Path(args.cache_dir or configured or paths.features_dir())
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


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="table of metrics across run and evaluation folders")
    p.add_argument("runs", nargs="+", help="run or evaluation folders (metrics.json) and cv folders (cv.json)")
    p.add_argument("--out", default="compare.csv", help="table file: .csv, .md or .json (default: compare.csv)")
    p.set_defaults(func=_compare)


def _compare(args) -> int:
    from .compare import collect, format_table, write_table

    rows = collect(args.runs)
    print(format_table(rows))
    write_table(rows, args.out)
    print(f"wrote {args.out}")
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="predict the emotion of audio files")
    p.add_argument("model_dir", help=_MODEL_HELP)
    p.add_argument("files", nargs="+")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--format", choices=list(PREDICTION_FORMATS), default="table",
                   help="challenge: the Odyssey 2024 Task 1 submission CSV (FileName,EmoClass); challenge-task2: "
                        "Task 2's (FileName,EmoAct,EmoVal,EmoDom, 1-7, from a model with arousal, valence, dominance)")
    p.add_argument("--out", help="write the predictions to this file instead of stdout")
    p.add_argument("--transcript", action="append", default=None,
                   help="transcript for the files, in order (repeat once per file); default: ASR")
    p.add_argument("--strict", action="store_true", help="exit with code 3 when any file was skipped")
    _errors_option(p)
    p.add_argument("--no-asr", action="store_true", help="empty transcripts instead of ASR (speech evidence only)")
    p.add_argument("--labels", default=None, metavar="A,B,...",
                   help="choose among these of the model's labels only (probabilities renormalised over them)")
    speaker = p.add_mutually_exclusive_group()
    speaker.add_argument("--same-speaker", action="store_true",
                         help="all FILES are one speaker: normalise each by their joint statistics "
                              "(models with model.feature_norm=speaker; default: each file alone)")
    speaker.add_argument("--enrol", action="append", metavar="FILE",
                         help="a recording of the files' speaker whose statistics normalise them (repeat per file; "
                              "e.g. the speaker's neutral speech)")
    p.add_argument("--segment", action="store_true",
                   help="long recordings: one prediction per speech segment (silero-vad) and a timeline per file")
    p.add_argument("--max-duration-s", type=float, default=600.0,
                   help="longest file predicted whole (default 600 s; its memory grows with length); longer "
                        "files are skipped with a message naming --segment, whose memory is flat")
    p.add_argument("--min-segment-s", type=float, default=2.0, help="--segment: shortest segment, s (default 2)")
    p.add_argument("--max-segment-s", type=float, default=15.0, help="--segment: longest segment, s (default 15)")
    p.add_argument("--timeline-dir", default="timelines",
                   help="--segment: folder for each file's STEM.csv, .json and .png (default: timelines)")
    _decision_options(p)
    p.set_defaults(func=_predict)


def _predict(args) -> int:
    if args.segment:
        from .segment import SegmentPlanner

        try:  # bad bounds fail before the model loads
            SegmentPlanner(args.min_segment_s, args.max_segment_s)
        except ValueError as err:
            raise CommandError(f"--min-segment-s/--max-segment-s: {err}") from None
        _large_tensors_off_the_heap()  # before torch allocates anything
    from tqdm.auto import tqdm

    from .inference import EmotionRecognizer

    if args.transcript is not None and len(args.transcript) != len(args.files):
        raise CommandError(f"got {len(args.transcript)} --transcript for {len(args.files)} files")
    if args.segment and (args.transcript is not None or args.format.startswith("challenge")):
        raise CommandError("--segment: each segment is transcribed by ASR (--no-asr skips it), so --transcript "
                           f"and --format {args.format if args.format.startswith('challenge') else 'challenge'} do not apply")
    if args.segment and (args.same_speaker or args.enrol):
        raise CommandError("--segment predicts each segment alone; --same-speaker and --enrol do not apply")
    labels = [label.strip() for label in args.labels.split(",") if label.strip()] if args.labels else None
    rec = EmotionRecognizer.from_pretrained(args.model_dir, use_thresholds=not args.no_thresholds,
                                            prior=_decision_prior(args.overrides), max_duration_s=args.max_duration_s,
                                            labels=labels)
    if args.segment:
        if not rec.predicts_category:
            raise CommandError(f"{args.model_dir}: --segment needs a model that predicts categories (this one predicts "
                               f"only {', '.join(rec.attribute_names)})")
        return _predict_segments(args, rec)
    transcripts = [""] * len(args.files) if args.no_asr and args.transcript is None else args.transcript
    try:
        speaker = rec.speaker_profile(args.files if args.same_speaker else args.enrol or [],
                                      strict=bool(args.enrol))
    except ValueError as err:
        raise CommandError(f"{'--same-speaker:' if args.same_speaker else '--enrol'} {err}") from None
    kept = 0
    # Each result is written (and flushed) as soon as it is known, so a crash or kill keeps every
    # earlier one; the errors file likewise.
    with contextlib.ExitStack() as stack:
        skipped = stack.enter_context(SkippedItems(args.errors))  # closed last: listed after "wrote"
        out = stack.enter_context(open(args.out, "w", encoding="utf-8", newline="")) if args.out else sys.stdout
        try:
            writer = PredictionWriter(out, rec.labels, args.format, rec.attribute_names, rec.predicts_category)
        except ValueError as err:
            raise CommandError(f"{args.model_dir}: {err}") from None
        bar = stack.enter_context(tqdm(total=len(args.files), desc="predicting", disable=len(args.files) < 2,
                                       file=sys.stderr))
        for i, pred, reason in rec.iter_predict_files(args.files, transcripts, args.batch_size, progress=bar.update,
                                                      speaker=speaker):
            if pred is not None:
                writer.write(pred)
                kept += 1
            else:
                skipped.add(args.files[i], reason)
        bar.close()
        if args.out:
            print(f"wrote {args.out}: {kept} predictions")
    return 3 if skipped.items and args.strict else 0


def _large_tensors_off_the_heap() -> None:
    """glibc: allocations of 1 MiB and more come from mmap, so freed tensors go back to the OS.

    Call before torch starts. By default glibc keeps what torch frees in its heap, and on segments
    of ever-different lengths that heap fragments: an hour of audio peaked 0.7 GB above five
    minutes while holding nothing. Mapped, the hour peaks 30 MB above; huge pages for torch's large
    tensors (THP_MEM_ALLOC_ENABLE) keep the fresh mappings' page faults cheap (7% more CPU time
    than the default instead of 60%; tiny test encoders, tests/test_long.py).
    """
    import ctypes

    if "torch" in sys.modules:  # dmha called from a running program: its allocator is not ours to tune
        return
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD, fixed at 1 MiB
    except (OSError, AttributeError):  # not glibc
        pass


def _predict_segments(args, rec) -> int:
    """--segment: a timeline per file (CSV, JSON, PNG in --timeline-dir); segment records on stdout or --out."""
    from tqdm.auto import tqdm

    from .audio import AudioError, audio_duration
    from .fileio import atomic_path

    with contextlib.ExitStack() as stack:
        skipped = stack.enter_context(SkippedItems(args.errors))
        out = sys.stdout
        if args.out:
            out = stack.enter_context(open(stack.enter_context(atomic_path(args.out)), "w", encoding="utf-8",
                                           newline=""))
        writer = SegmentWriter(out, rec.labels, args.format, args.timeline_dir)
        for path in args.files:
            try:
                with tqdm(total=round(audio_duration(path), 1), desc=Path(path).name, unit="s", file=sys.stderr,
                          bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]") as bar:
                    timeline = rec.predict_long(path, min_s=args.min_segment_s, max_s=args.max_segment_s,
                                                batch_size=args.batch_size, progress=bar.update,
                                                transcribe=not args.no_asr)
            except AudioError as err:
                skipped.add(path, err.reason)
                continue
            written = writer.write(timeline, source=path)
            print(f"{path}: {len(timeline.segments)} segments in {timeline.duration:.1f} s; wrote "
                  + ", ".join(str(p) for p in written), file=sys.stderr)
    if args.out:
        print(f"wrote {args.out}: {writer.segments} segments")
    return 3 if skipped.items and args.strict else 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export the fusion + classifier head to ONNX (the encoders stay outside)")
    p.add_argument("model_dir", help="model directory (ensembles: export each member)")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", required=True, help="the .onnx file; a .json sidecar (labels, input shapes) goes beside it")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset version (default 18)")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from .export import export_onnx

    sidecar = export_onnx(args.model_dir, args.out, opset=args.opset)
    print(f"wrote {args.out} and {sidecar}")
    return 0


def _add_serve(sub) -> None:
    from .serve.settings import cli_flags

    p = sub.add_parser("serve", help="web service and page: POST /v1/predict, /v1/predict-long; GET / (FastAPI)")
    p.add_argument("model_dir", help=_MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    for flag, keywords, _ in cli_flags():  # one per ServeSettings field that has a help text
        p.add_argument(flag, **keywords)
    _decision_options(p)
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    _large_tensors_off_the_heap()  # /v1/predict-long runs hours of ever-different segment lengths
    from .serve.settings import from_cli
    from .serve.server import serve  # ImportError names the missing [serve] extra

    from .inference import EmotionRecognizer

    settings = from_cli(args)
    rec = EmotionRecognizer.from_pretrained(args.model_dir, use_thresholds=not args.no_thresholds,
                                            prior=_decision_prior(args.overrides))
    print(f"dmha serve: {args.model_dir} ({', '.join(rec.labels)}) on http://{args.host}:{args.port}/ "
          f"(API docs at /docs); Ctrl-C stops", file=sys.stderr)
    serve(rec, settings, args.host, args.port, log_level="info" if args.verbose else "warning")
    return 0


def _report_skipped(errors, errors_file: str | None = None) -> int:
    """For commands that learn their skipped items all at once: the same file and stderr lines as
    SkippedItems; skipping is not a failure (use --strict where offered)."""
    with SkippedItems(errors_file) as skipped:
        for path, reason in errors:
            skipped.add(path, reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
