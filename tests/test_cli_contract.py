"""The CLI contract: every command's arguments, defaults and choices, pinned against cli_contract.json.

Refactoring the parser must not change what users type; a deliberate change updates the JSON
(`python tests/test_cli_contract.py` rewrites it) and the README in the same commit.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CONTRACT = Path(__file__).with_name("cli_contract.json")


def cli_contract() -> dict:
    """{command: [{names, dest, default, choices, nargs, required, flag}]} of the live parser."""
    from dmha.cli import _parser

    parser = _parser()

    def args_of(p: argparse.ArgumentParser) -> list[dict]:
        return [{"names": a.option_strings or [a.dest], "dest": a.dest,
                 "default": a.default if isinstance(a.default, (str, int, float, bool, list, type(None))) else repr(a.default),
                 "choices": list(a.choices) if a.choices else None, "nargs": a.nargs, "required": a.required,
                 "flag": isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction))}
                for a in p._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": args_of(parser), **{name: args_of(p) for name, p in sorted(sub.choices.items())}}


def _by_kind(arguments: list[dict]) -> tuple[list[dict], dict]:
    """Positionals in order (their order is the contract), options by name (their order is not)."""
    positionals = [a for a in arguments if not a["names"][0].startswith("-")]
    options = {a["names"][0]: a for a in arguments if a["names"][0].startswith("-")}
    return positionals, options


def test_the_cli_contract_is_unchanged():
    expected = json.loads(CONTRACT.read_text(encoding="utf-8"))
    got = json.loads(json.dumps(cli_contract()))
    assert sorted(got) == sorted(expected), "commands added or removed"
    for command in expected:
        (got_pos, got_opt), (want_pos, want_opt) = _by_kind(got[command]), _by_kind(expected[command])
        assert got_pos == want_pos, f"dmha {command}: positional arguments changed"
        assert sorted(got_opt) == sorted(want_opt), f"dmha {command}: options added or removed"
        for name in want_opt:
            assert got_opt[name] == want_opt[name], f"dmha {command} {name} changed"


def test_serve_flags_are_the_settings_that_have_help():
    from dmha.cli import _parser
    from dmha.serve.settings import ServeSettings, cli_flags, from_cli

    args = _parser().parse_args(["serve", "m", "--max-batch", "3", "--allowed-hosts", "a.example, b", "--tmp-dir", "t"])
    assert from_cli(args) == ServeSettings(max_batch=3, allowed_hosts=("a.example", "b"), tmp_dir="t")
    assert from_cli(_parser().parse_args(["serve", "m"])) == ServeSettings()  # every flag's default is the setting's
    assert {flag for flag, _, _ in cli_flags()} >= {"--max-upload-mb", "--timeout-s", "--allowed-hosts"}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    CONTRACT.write_text(json.dumps(cli_contract(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {CONTRACT}")
