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

    p = sub.add_parser("evaluate", help="score a model directory on a manifest split")
    p.add_argument("model_dir")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_evaluate)

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
    p.set_defaults(func=_predict)
    return parser


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
    print(f"model: {Path(args.out) / 'model'}")
    print(f"{metrics['split']} macro-F1 {metrics['macro_f1']:.4f}  accuracy {metrics['accuracy']:.4f}  "
          f"UAR {metrics['uar']:.4f}  (dev macro-F1 {metrics['dev_macro_f1']:.4f}, best epoch {metrics['best_epoch']})")
    print(f"metrics: {Path(args.out) / 'metrics.json'}")
    return 0


def _evaluate(args) -> int:
    from .evaluation import evaluate

    report = evaluate(args.model_dir, args.manifest, args.split, args.out)
    print(f"{args.split}: macro-F1 {report['macro_f1']:.4f}  accuracy {report['accuracy']:.4f}  "
          f"UAR {report['uar']:.4f}  n={report['n']}")
    print(f"wrote {Path(args.out) / 'metrics.json'}, confusion.csv, confusion.png, predictions.csv")
    return _report_skipped([(s["path"], s["reason"]) for s in report["skipped"]])


def _predict(args) -> int:
    from tqdm.auto import tqdm

    from .inference import EmotionRecognizer

    if args.transcript is not None and len(args.transcript) != len(args.files):
        raise CommandError(f"got {len(args.transcript)} --transcript for {len(args.files)} files")
    rec = EmotionRecognizer.load(args.model_dir)
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
