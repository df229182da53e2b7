"""The command line contract (DESIGN.md §4): names, exit codes, one-line errors."""
import shutil

import pytest

from conftest import require_ravdess, write_tone_corpus
from dmha.cli import main
from dmha.data.manifest import read_manifest


def test_help_lists_the_contract_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "prepare", "transcribe", "train", "evaluate", "predict"):
        assert command in out


def test_bad_config_override_is_one_line_error(tmp_path, capsys):
    manifest = write_tone_corpus(tmp_path / "c", n_per_class=3)
    code = main(["train", "--manifest", str(manifest), "--out", str(tmp_path / "r"), "--set", "model.atention=x"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "unknown config key model.atention" in err


def test_evaluate_missing_model_dir_is_one_line_error(tmp_path, capsys):
    manifest = write_tone_corpus(tmp_path / "c", n_per_class=3)
    code = main(["evaluate", str(tmp_path / "nope"), "--manifest", str(manifest), "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert code == 1 and "not a dmha model directory" in err and err.count("\n") == 1


def test_prepare_ravdess_cli(tmp_path, capsys):
    data = require_ravdess()
    assert main(["prepare", "ravdess", str(data), "--out", str(tmp_path / "m.csv")]) == 0
    assert "1440 items (dev 240, test 240, train 960)" in capsys.readouterr().out


@pytest.mark.slow
def test_transcribe_fills_missing_keeps_given_and_skips_bad(tmp_path, capsys):
    data = require_ravdess()
    for name in ("03-01-05-02-01-01-01.flac", "03-01-04-01-02-01-01.flac"):
        shutil.copy(data / "audio" / "Actor_01" / name, tmp_path / name)
    (tmp_path / "bad.wav").write_text("not audio")
    (tmp_path / "m.csv").write_text(
        "path,label,split,transcript\n"
        "03-01-05-02-01-01-01.flac,angry,train,\"   \"\n"  # whitespace only: missing, so ASR fills it
        "03-01-04-01-02-01-01.flac,sad,train,my own words\n"
        "bad.wav,sad,train,\n")
    assert main(["transcribe", str(tmp_path / "m.csv"), "--out", str(tmp_path / "t.csv")]) == 3  # bad.wav
    out, err = capsys.readouterr()
    items = read_manifest(tmp_path / "t.csv")
    assert "door" in items[0].transcript.lower() and "kids" in items[0].transcript.lower()
    assert items[1].transcript == "my own words"
    assert items[2].transcript is None
    assert "skipped 1 bad file" in err and "bad.wav" in err


# --- exit codes (dmha.cli.EXIT_CODES): 0 all good, 1 error, 2 usage, 3 some inputs bad ------------------


def _inputs_for(case: str, folder) -> tuple[list, dict]:
    """The files of one `predict` case: ([paths], {bad path: reason fragment})."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    good = []
    for k in range(2):
        good.append(folder / f"good{k}.wav")
        sf.write(good[-1], (0.3 * np.sin(np.arange(8000) * (0.1 + 0.05 * k))).astype(np.float32), 16000)
    bad = {"missing": (folder / "nosuch.wav", "file not found"),
           "corrupt": (folder / "cut.wav", "cannot decode audio ("),
           "text": (folder / "notes.wav", "cannot decode audio (Format not recognised)"),
           "empty": (folder / "zero.wav", "empty file (0 bytes)"),
           "empty-folder": (folder / "nothing here", "no audio files in this folder"),
           "folder-without-audio": (folder / "just text", "no audio files in this folder")}
    (folder / "cut.wav").write_bytes(good[0].read_bytes()[:20])  # a RIFF header cut short
    (folder / "notes.wav").write_text("not audio at all\n", encoding="utf-8")
    (folder / "zero.wav").touch()
    (folder / "nothing here").mkdir()
    (folder / "just text").mkdir()
    (folder / "just text" / "readme.txt").write_text("no audio\n", encoding="utf-8")
    if case == "all-good":
        return good, {}
    if case == "mixed":
        return [good[0], *(p for p, _ in bad.values()), good[1]], {p: r for p, r in bad.values()}
    path, reason = bad[case]
    return [path], {path: reason}


@pytest.mark.parametrize("case", ["all-good", "missing", "corrupt", "text", "empty", "empty-folder",
                                  "folder-without-audio", "mixed"])
def test_predict_exit_code_says_whether_any_input_was_bad(case, serve_model_dir, tmp_path, capsys):
    import json

    files, bad = _inputs_for(case, tmp_path / "in")
    errors = tmp_path / "errors.tsv"
    code = main(["predict", str(serve_model_dir), *map(str, files), "--no-asr", "--format", "jsonl",
                 "--errors", str(errors)])
    out, err = capsys.readouterr()
    assert code == (3 if bad else 0), err
    written = [json.loads(line)["path"] for line in out.splitlines()]
    assert written == [str(f) for f in files if f not in bad]  # every good result, in input order
    listed = dict(line.split("\t") for line in errors.read_text(encoding="utf-8").splitlines())
    assert set(listed) == {str(p) for p in bad}
    for path, fragment in bad.items():
        assert fragment in listed[str(path)]
        assert f"  {path}: {listed[str(path)]}" in err.splitlines()  # one stderr line per bad input
    assert ("skipped" in err) == bool(bad) and "not a regular file" not in err


def test_predict_strict_stops_at_the_first_bad_file(serve_model_dir, tmp_path, capsys):
    import json

    files, bad = _inputs_for("mixed", tmp_path / "in")
    code = main(["predict", str(serve_model_dir), *map(str, files), "--no-asr", "--format", "jsonl", "--strict"])
    out, err = capsys.readouterr()
    assert code == 3
    assert [json.loads(line)["path"] for line in out.splitlines()] == [str(files[0])]  # before the first bad
    assert f"stopped at the first bad file (--strict): {files[1]}" in err and "skipped 1 bad file(s):" in err


def test_fatal_and_usage_errors_keep_their_codes(serve_model_dir, tmp_path, capsys):
    assert main(["predict", str(serve_model_dir), "--no-asr"]) == 1  # no input at all: nothing to do
    assert "error: no input" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["predict", str(serve_model_dir), "a.wav", "--format", "nope"])
    assert usage.value.code == 2


def test_transcribe_and_extract_exit_3_when_an_item_was_bad(tiny_encoders, tmp_path, capsys):
    manifest = write_tone_corpus(tmp_path / "c", n_per_class=3)
    (tmp_path / "c" / "bad.wav").write_text("not audio")
    good = manifest.read_text(encoding="utf-8")
    sets = ["--set", f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={tmp_path / 'cache'}"]
    assert main(["transcribe", str(manifest), "--out", str(tmp_path / "t.csv"), *sets]) == 0  # the fake ASR
    assert main(["extract", "--manifest", str(manifest), *sets]) == 0
    manifest.write_text(good + "bad.wav,low,train,s9,\n", encoding="utf-8")
    assert main(["transcribe", str(manifest), "--out", str(tmp_path / "t.csv"), *sets]) == 3
    assert "bad.wav: cannot decode audio" in capsys.readouterr().err
    assert len(read_manifest(tmp_path / "t.csv")) == 7  # the good rows still written, the bad one kept
    assert main(["extract", "--manifest", str(manifest), *sets]) == 3
    assert "bad.wav: cannot decode audio" in capsys.readouterr().err


def test_every_exit_code_is_documented(capsys):
    from pathlib import Path

    from dmha.cli import EXIT_CODES

    assert sorted(EXIT_CODES) == [0, 1, 2, 3, 130]
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    page = (Path(__file__).resolve().parents[1] / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    for code in EXIT_CODES:
        assert f"\n  {code:<4d}" in help_text and f"| {code} |" in page
