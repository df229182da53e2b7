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
    assert main(["transcribe", str(tmp_path / "m.csv"), "--out", str(tmp_path / "t.csv")]) == 0
    out, err = capsys.readouterr()
    items = read_manifest(tmp_path / "t.csv")
    assert "door" in items[0].transcript.lower() and "kids" in items[0].transcript.lower()
    assert items[1].transcript == "my own words"
    assert items[2].transcript is None
    assert "skipped 1 bad file" in err and "bad.wav" in err
