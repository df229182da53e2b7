"""The `dmha` command line: each subcommand parses its options, calls one library function and prints.

One parser builder and one handler per subcommand, grouped by what they work on: dmha.cli.data
(demo, prepare, transcribe, extract, cache), dmha.cli.training (train, cv, evaluate, tune-thresholds,
calibrate, ensemble, compare), dmha.cli.predicting (predict, export, serve). Library errors become one
line on stderr and exit code 1 (`-v` shows the traceback); EXIT_CODES lists every code.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger(__name__)


class CommandError(Exception):
    """A failure to report as one line and exit code 1."""


EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SKIPPED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# What a script can rely on (`dmha --help` and docs/reference/cli.md show this table).
EXIT_CODES = {
    EXIT_OK: "success (a batch command: every input was processed)",
    EXIT_ERROR: "error: the command could not do its work (model, config, manifest, no input, full disk, ...); "
                "one line `dmha COMMAND: error: ...` on stderr",
    EXIT_USAGE: "bad command line (unknown option, bad value; argparse prints the usage); `cache verify`: damage "
                "found (and not --fix'ed)",
    EXIT_SKIPPED: "some inputs were bad (predict, evaluate, extract, transcribe): the command ran over the "
                  "others and wrote their results; each bad one is listed on stderr (`  PATH: reason`) and in "
                  "--errors FILE / OUT/errors.tsv. predict --strict: stops at the first bad input (the results "
                  "before it are written)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); results written so far are kept",
}


MODEL_HELP = "model or ensemble directory, or a Hugging Face Hub repository id (owner/name) holding one"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling positionals at the first option: `predict MODEL --set k=v a.wav b.wav` leaves the
    # files after the option unparsed; a command that takes files gathers them wherever they stand
    if extra and hasattr(args, "files") and not any(e.startswith("-") for e in extra):
        args.files = [*args.files, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers", "faster_whisper"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    if args.allow_pickle:
        from ..trust import allow_pickle

        allow_pickle()
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("dmha: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # library errors become one line; -v shows the traceback
        if args.verbose:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"dmha {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    """The parser: global flags, then one small builder per subcommand, each beside its handler."""
    parser = argparse.ArgumentParser(prog="dmha", description="Double Multi-Head Attention speech emotion recognition",
                                     epilog=exit_codes_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dmha {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details and show tracebacks")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="let encoders load pickle weights (pytorch_model.bin): only for models you trust")
    sub = parser.add_subparsers(dest="command", required=True)
    from . import data, predicting, training

    for add in (data.add_demo, data.add_prepare, data.add_transcribe, training.add_train, training.add_cv,
                data.add_extract, training.add_evaluate, training.add_tune_thresholds, training.add_calibrate,
                training.add_ensemble, data.add_cache, training.add_compare, predicting.add_predict,
                predicting.add_export, predicting.add_serve, predicting.add_models,
                predicting.add_examples):
        add(sub)
    return parser


def exit_codes_text() -> str:
    """EXIT_CODES as the `dmha --help` epilog: one wrapped entry per code."""
    import textwrap

    entries = (textwrap.fill(text, 100, initial_indent=f"  {code:<4d}", subsequent_indent=" " * 6)
               for code, text in EXIT_CODES.items())
    return "exit codes:\n" + "\n".join(entries)


def config_options(p: argparse.ArgumentParser, config_help: str | None = "TOML config file",
                    set_help: str | None = None) -> None:
    """--config FILE.toml (unless config_help is None) and --set KEY=VALUE ..., as every config-driven command."""
    if config_help is not None:
        p.add_argument("--config", help=config_help)
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help=set_help or "override config keys: KEY=VALUE ... (TOML values, e.g. model.attention=subvector "
                                     "'aug.speeds=[0.9,1.1]'; later wins)")


def errors_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--errors", metavar="FILE",
                   help="write one 'path<TAB>reason' line per skipped item to FILE (empty when none)")


def decision_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-thresholds", action="store_true", help="ignore the model's thresholds.json")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="decision.prior=uniform (or none, or 'label:weight,...'): prior correction (one per --set, "
                        "so the files after it stay files)")


def model_location(name_or_dir: str) -> str:
    """A model argument of a command that only reads the model (evaluate, export): a directory as given, a
    bundled model's name or a Hub id resolved to its directory."""
    from ..hub import resolve_model

    return str(resolve_model(name_or_dir))


def decision_prior(overrides: list[str]) -> str | None:
    """The decision.prior override, if any; only decision.* keys may change after training."""
    from ..config import load

    keys = [item.partition("=")[0].strip() for item in overrides]
    extra = [key for key in keys if not key.startswith("decision.")]
    if extra:
        raise CommandError(f"--set {extra[0]}: only decision.* keys can be set here (the rest is fixed by training)")
    return load(None, overrides).decision.prior if "decision.prior" in keys else None


def report_skipped(errors, errors_file: str | None = None) -> int:
    """For commands that learn their skipped items all at once: the same file and stderr lines as
    SkippedItems; the exit code, EXIT_SKIPPED when any item was skipped."""
    from ..outputs import SkippedItems

    with SkippedItems(errors_file) as skipped:
        for path, reason in errors:
            skipped.add(path, reason)
    return exit_code(skipped)


def exit_code(skipped) -> int:
    """EXIT_SKIPPED when a batch skipped any item (a SkippedItems), else EXIT_OK."""
    return EXIT_SKIPPED if skipped.items else EXIT_OK

