"""`dmha predict`, `export` and `serve`: a trained model (or ensemble) on new audio."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from . import CommandError, MODEL_HELP, decision_options, decision_prior, errors_option, exit_code, model_location
from ..outputs import PREDICTION_FORMATS, PredictionWriter, SegmentWriter, SkippedItems
from ..pretrained import DEFAULT



def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="predict the emotion of audio files (with the bundled model unless a model "
                                       "is named first)")
    p.add_argument("model_dir", nargs="?", help=MODEL_HELP + f"; a bundled model's name; default: {DEFAULT}")
    p.add_argument("files", nargs="*", help="audio files, or folders of them (searched recursively)")
    p.add_argument("--manifest", metavar="MANIFEST", help="predict every file a manifest lists (with its transcripts)")
    p.add_argument("--transcripts", metavar="TABLE.csv",
                   help="a CSV with path and transcript columns; the files it does not list are transcribed by ASR")
    p.add_argument("--batch-size", type=int, default=1, help="files per batch (length-sorted; the same results as 1)")
    p.add_argument("--format", choices=list(PREDICTION_FORMATS), default="table",
                   help="challenge: the Odyssey 2024 Task 1 submission CSV (FileName,EmoClass); challenge-task2: "
                        "Task 2's (FileName,EmoAct,EmoVal,EmoDom, 1-7, from a model with arousal, valence, dominance)")
    p.add_argument("--out", help="write the predictions to this file instead of stdout")
    p.add_argument("--transcript", action="append", default=None,
                   help="transcript for the files, in order (repeat once per file); default: ASR (see --transcripts)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first bad file (exit 3, the results before it written); without it every good "
                        "file is predicted and a bad one still makes the exit code 3")
    errors_option(p)
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
    p.add_argument("--no-speech-check", action="store_true",
                   help="give every file an emotion, even one the speech detectors hear no speech in (by default "
                        "such a file gets none and a reason; --format challenge implies this: a submission "
                        "scores every file)")
    p.add_argument("--max-duration-s", type=float, default=600.0,
                   help="longest file predicted whole (default 600 s; its memory grows with length); longer "
                        "files are skipped with a message naming --segment, whose memory is flat")
    p.add_argument("--min-segment-s", type=float, default=2.0, help="--segment: shortest segment, s (default 2)")
    p.add_argument("--max-segment-s", type=float, default=15.0, help="--segment: longest segment, s (default 15)")
    p.add_argument("--timeline-dir", default="timelines",
                   help="--segment: folder for each file's STEM.csv, .json and .png (default: timelines)")
    decision_options(p)
    p.set_defaults(func=_predict)


def _inputs(args) -> None:
    """The model and the files of a `predict` command line: the first positional is the model when it names
    one (a model or ensemble directory, a bundled name or a Hub id), else an input and the bundled default
    model predicts; folders are searched for audio; --manifest adds its files and transcripts."""
    from ..hub import looks_like_repo_id
    from ..inputs import audio_files, manifest_inputs, read_transcripts
    from ..pretrained import path_of

    first = args.model_dir
    if first is not None:
        path = Path(first)
        named = ((path.is_dir() and any((path / f).is_file() for f in ("config.json", "ensemble.json")))
                 or path_of(first) is not None or (not path.exists() and not is_audio_name(first)
                                                   and looks_like_repo_id(first)))
        if not named:
            args.files, args.model_dir = [first, *args.files], None
    args.model_dir = args.model_dir or DEFAULT
    files = audio_files(args.files)
    no_audio = {str(f) for f in files if f.is_dir()}  # folders given that hold no audio file
    transcripts = None
    if args.manifest:
        listed, given = manifest_inputs(args.manifest)
        files, transcripts = files + listed, [None] * len(files) + given
    if not files:
        raise CommandError("no input: give audio files or folders, or --manifest")
    if args.transcript is not None:
        if len(args.transcript) != len(files):
            raise CommandError(f"got {len(args.transcript)} --transcript for {len(files)} files")
        transcripts = list(args.transcript)
    if args.transcripts:
        table = read_transcripts(args.transcripts, files)
        transcripts = [t if t is not None else g for t, g in zip(table, transcripts or [None] * len(files))]
    args.files, args.transcript = [str(f) for f in files], transcripts
    args.no_audio = no_audio


def _bad_reason(args, path: str, reason: str) -> str:
    """Why `path` was skipped: a folder given as an input that holds no audio says so (the loader only
    sees a directory)."""
    from ..inputs import NO_AUDIO

    return NO_AUDIO if path in args.no_audio else reason


def is_audio_name(name: str) -> bool:
    from ..audio import is_audio_file

    return is_audio_file(Path(name))


def _predict(args) -> int:
    if args.segment:
        from ..segment import SegmentPlanner

        try:  # bad bounds fail before the model loads
            SegmentPlanner(args.min_segment_s, args.max_segment_s)
        except ValueError as err:
            raise CommandError(f"--min-segment-s/--max-segment-s: {err}") from None
        _large_tensors_off_the_heap()  # before torch allocates anything
    from ..inference import EmotionRecognizer

    if args.segment and (args.transcript is not None or args.transcripts or args.format.startswith("challenge")):
        raise CommandError("--segment: each segment is transcribed by ASR (--no-asr skips it), so --transcript "
                           f"and --format {args.format if args.format.startswith('challenge') else 'challenge'} do not apply")
    if args.segment and (args.same_speaker or args.enrol):
        raise CommandError("--segment predicts each segment alone; --same-speaker and --enrol do not apply")
    _inputs(args)
    labels = [label.strip() for label in args.labels.split(",") if label.strip()] if args.labels else None
    rec = EmotionRecognizer.from_pretrained(args.model_dir, use_thresholds=not args.no_thresholds,
                                            prior=decision_prior(args.overrides), max_duration_s=args.max_duration_s,
                                            labels=labels,
                                            speech_check=False if args.no_speech_check or args.format.startswith(
                                                "challenge") else None)
    if args.segment:
        if not rec.predicts_category:
            raise CommandError(f"{args.model_dir}: --segment needs a model that predicts categories (this one predicts "
                               f"only {', '.join(rec.attribute_names)})")
        return _predict_segments(args, rec)
    transcripts = [t or "" for t in args.transcript or [None] * len(args.files)] if args.no_asr else args.transcript
    try:
        speaker = rec.speaker_profile(args.files if args.same_speaker else args.enrol or [],
                                      strict=bool(args.enrol))
    except ValueError as err:
        raise CommandError(f"{'--same-speaker:' if args.same_speaker else '--enrol'} {err}") from None
    return _write_predictions(args, rec, transcripts, speaker)


def _write_predictions(args, rec, transcripts, speaker) -> int:
    """Predict args.files, each result written (and flushed) as soon as it is known, so a crash or kill
    keeps every earlier one; the errors file likewise. Returns the exit code."""
    from tqdm.auto import tqdm

    kept = 0
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
                continue
            skipped.add(args.files[i], _bad_reason(args, args.files[i], reason))
            if args.strict:
                print(f"stopped at the first bad file (--strict): {args.files[i]}", file=sys.stderr)
                break
        bar.close()
        if args.out:
            print(f"wrote {args.out}: {kept} predictions")
    return exit_code(skipped)


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


NO_SPEECH_SEGMENTS = "silero-vad found no speech segment: no emotion"


def _predict_segments(args, rec) -> int:
    """--segment: a timeline per file (CSV, JSON, PNG in --timeline-dir); segment records on stdout or --out."""
    from tqdm.auto import tqdm

    from ..audio import AudioError, audio_duration
    from ..fileio import atomic_path

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
                skipped.add(path, _bad_reason(args, path, err.reason))
                if args.strict:
                    print(f"stopped at the first bad file (--strict): {path}", file=sys.stderr)
                    break
                continue
            written = writer.write(timeline, source=path)
            found = f"{len(timeline.segments)} segments" if timeline.segments else f"no speech found ({NO_SPEECH_SEGMENTS})"
            print(f"{path}: {found} in {timeline.duration:.1f} s; wrote "
                  + ", ".join(str(p) for p in written), file=sys.stderr)
    if args.out:
        print(f"wrote {args.out}: {writer.segments} segments")
    return exit_code(skipped)


def add_export(sub) -> None:
    p = sub.add_parser("export", help="export the fusion + classifier head to ONNX (the encoders stay outside)")
    p.add_argument("model_dir", help="model directory, a bundled model's name or a Hub id (ensembles: export each "
                                     "member)")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", required=True, help="the .onnx file; a .json sidecar (labels, input shapes) goes beside it")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset version (default 18)")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from ..export import export_onnx

    sidecar = export_onnx(model_location(args.model_dir), args.out, opset=args.opset)
    print(f"wrote {args.out} and {sidecar}")
    return 0


def add_serve(sub) -> None:
    from ..serve.settings import cli_flags

    p = sub.add_parser("serve", help="web service and page: POST /v1/predict, /v1/predict-long; GET / (FastAPI)")
    p.add_argument("model_dir", nargs="?", default=DEFAULT, help=MODEL_HELP + f"; default: the bundled {DEFAULT}")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    for flag, keywords, _ in cli_flags():  # one per ServeSettings field that has a help text
        p.add_argument(flag, **keywords)
    decision_options(p)
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    _large_tensors_off_the_heap()  # /v1/predict-long runs hours of ever-different segment lengths
    from ..serve.settings import from_cli
    from ..serve.server import serve  # ImportError names the missing [serve] extra

    from ..inference import EmotionRecognizer

    settings = from_cli(args)
    rec = EmotionRecognizer.from_pretrained(args.model_dir, use_thresholds=not args.no_thresholds,
                                            prior=decision_prior(args.overrides))
    print(f"dmha serve: {args.model_dir} ({', '.join(rec.labels)}) on http://{args.host}:{args.port}/ "
          f"(API docs at /docs); Ctrl-C stops", file=sys.stderr)
    serve(rec, settings, args.host, args.port, log_level="info" if args.verbose else "warning")
    return 0


def add_models(sub) -> None:
    p = sub.add_parser("models", help="the models bundled with dmha: their classes, training data and licence")
    p.add_argument("name", nargs="?", help="show this model's card (MODEL_CARD.md)")
    p.set_defaults(func=_models)


def _models(args) -> int:
    from ..pretrained import bundled, describe

    if args.name:
        print(describe(args.name)["card"] or f"{args.name}: no model card")
        return 0
    names = bundled()
    if not names:
        print("no bundled model in this installation (`make ready-model` trains one in a checkout)")
    for name in names:
        info = describe(name)
        print(f"{name}{' (default)' if info['default'] else ''}: {', '.join(info['classes'])}")
        print(f"  trained on {info['training_data']}; licence: {info['licence']}")
        if info.get("summary"):
            print(f"  {info['summary']}")
    return 0


def add_examples(sub) -> None:
    p = sub.add_parser("examples", help="the bundled model (or MODEL) on the shipped CREMA-D example clips: one by one "
                                        "and joined into one recording (timeline); a table and OUT/report.html")
    p.add_argument("model_dir", nargs="?", help=MODEL_HELP + f"; a bundled model's name; default: {DEFAULT}")
    p.add_argument("--out", default="demo_out", help="folder for predictions.jsonl, the timeline and report.html "
                                                     "(default: demo_out)")
    p.set_defaults(func=_examples)


def _examples(args) -> int:
    from ..showcase import format_table, run

    show = run(args.model_dir, args.out)
    print(format_table(show))
    print(f"wrote {Path(args.out) / 'report.html'}, predictions.jsonl and timeline.csv/.json/.png there")
    return 0
