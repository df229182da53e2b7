"""`dmha demo`, `prepare`, `transcribe`, `extract` and `cache`: corpora, transcripts and the feature store."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import CommandError, config_options, errors_option, report_skipped



def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="offline end-to-end run on a synthesised corpus")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    config_options(p, config_help=None)
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from ..demo import run_demo

    summary = run_demo(Path(args.out), overrides=args.overrides)
    print(json.dumps(summary, indent=2))
    return 0


def add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="turn a known corpus layout into a manifest CSV")
    p.add_argument("corpus", choices=["ravdess", "crema-d", "emospeech", "msp-podcast", "folders"])
    p.add_argument("src", help="corpus root folder")
    p.add_argument("--out", required=True, help="manifest CSV to write")
    p.add_argument("--no-transcripts", action="store_true",
                   help="RAVDESS, CREMA-D, EmoSpeech: leave transcripts empty (use ASR)")
    p.add_argument("--calm-as", choices=["neutral", "calm"], default="neutral",
                   help="EmoSpeech: the label of its `calm` (default neutral: the corpus has no neutral and calm "
                        "is its no-emotion baseline; the corpus's name stays in source_label)")
    p.add_argument("--include-unlabelled", action="store_true",
                   help="MSP-Podcast: keep rows without a consensus label (label 'unknown'; for transcribe/predict)")
    p.set_defaults(func=_prepare)


def _prepare(args) -> int:
    from ..data.crema_d import prepare_crema_d
    from ..data.emospeech import prepare_emospeech
    from ..data.folders import prepare_folders
    from ..data.msp_podcast import prepare_msp_podcast
    from ..data.ravdess import prepare_ravdess

    if args.corpus == "ravdess":
        items = prepare_ravdess(Path(args.src), Path(args.out), transcripts=not args.no_transcripts)
    elif args.corpus == "crema-d":
        items = prepare_crema_d(Path(args.src), Path(args.out), transcripts=not args.no_transcripts)
    elif args.corpus == "emospeech":
        items = prepare_emospeech(Path(args.src), Path(args.out), transcripts=not args.no_transcripts,
                                  calm_as=args.calm_as)
    elif args.corpus == "msp-podcast":
        items = prepare_msp_podcast(Path(args.src), Path(args.out), include_unlabelled=args.include_unlabelled)
    else:
        items = prepare_folders(Path(args.src), Path(args.out))
    counts = {}
    for item in items:
        counts[item.split] = counts.get(item.split, 0) + 1
    print(f"wrote {args.out}: {len(items)} items ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    return 0


def add_transcribe(sub) -> None:
    p = sub.add_parser("transcribe", help="fill the manifest's transcript column with ASR (given ones kept)")
    p.add_argument("manifest", help="manifest CSV whose empty transcript cells ASR fills")
    p.add_argument("--out", help="manifest to write (default: overwrite the input)")
    p.add_argument("--asr", default=None, help="ASR model: tiny.en (default), base, or a CTranslate2 Whisper dir")
    p.add_argument("--batch-size", type=int, default=8, help="clips per ASR batch")
    config_options(p, config_help="TOML config file (its encoders.asr*, features.cache_dir apply)",
                    set_help="config keys, e.g. encoders.asr_window_s=10 features.cache_dir=DIR")
    errors_option(p)
    p.set_defaults(func=_transcribe)


def _transcribe(args) -> int:
    from ..config import load
    from ..data.manifest import read_manifest, write_manifest
    from ..layout import StoreRoot
    from ..transcription import fill_transcripts

    config = load(args.config, [*args.overrides, *([f"encoders.asr={args.asr}"] if args.asr else [])])
    items = read_manifest(args.manifest, require_label=False)
    filled, errors = fill_transcripts(items, config.encoders, StoreRoot.from_config(config.features),
                                     args.batch_size)
    out = args.out or args.manifest
    write_manifest(filled, Path(out))
    print(f"wrote {out}: {sum(1 for i in filled if i.transcript)} of {len(filled)} items transcribed")
    return report_skipped(errors, args.errors)


def add_extract(sub) -> None:
    p = sub.add_parser("extract", help="fill the feature store for a manifest, as train would (resumable)")
    p.add_argument("--manifest", required=True, help="manifest CSV whose items to extract features of")
    config_options(p, config_help="TOML config file (the one you will train with)")
    p.add_argument("--processes", type=int, default=1,
                   help="split the work over N processes (one per GPU with encoders.device=cuda)")
    errors_option(p)
    p.set_defaults(func=_extract)


def _extract(args) -> int:
    from .. import config as cfg
    from ..experiment import extract

    if args.processes < 1:
        raise CommandError(f"--processes must be >= 1, got {args.processes}")
    data = extract(args.manifest, cfg.load(args.config, args.overrides), progress=True, processes=args.processes)
    print(f"features ready for {len(data.items)} items ({data.speech_computed} speech entries computed here)")
    return report_skipped(data.errors, args.errors)


def add_cache(sub) -> None:
    p = sub.add_parser("cache", help="inspect, verify or prune the feature cache")
    p.add_argument("action", choices=["info", "verify", "prune"])
    p.add_argument("--cache-dir", help="cache root (default: features.cache_dir default, $DMHA_HOME/features)")
    p.add_argument("--deep", action="store_true", help="verify: read every stored value, not just headers")
    p.add_argument("--fix", action="store_true", help="verify: delete corrupt entries and stale temp files")
    p.add_argument("--older-than", type=float, metavar="DAYS", help="prune: shards unused for DAYS days")
    p.add_argument("--encoder", metavar="TEXT", help="prune: entries of encoders whose identity contains TEXT")
    p.add_argument("--legacy", action="store_true", help="prune: per-utterance files of the old cache layout")
    p.add_argument("--dry-run", action="store_true", help="prune: only report what would be deleted")
    config_options(p, config_help="TOML config file (its features.cache_dir is the cache root)",
                    set_help="e.g. features.cache_dir=DIR (as --cache-dir)")
    p.set_defaults(func=_cache)


def _cache(args) -> int:
    from .. import cache_admin, paths
    from ..config import load

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
