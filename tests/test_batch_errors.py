"""Batch jobs on a corpus of good files mixed with bad ones: every good item gets its result, every bad one
is listed with its reason on stderr and in the errors file, and the exit code is 3 (dmha.cli.EXIT_SKIPPED; 0 when
nothing was bad; predict --strict stops at the first bad file)."""
from __future__ import annotations

import csv
import dataclasses
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import write_tone_corpus
from dmha.cli import main
from dmha.config import load
from dmha.experiment import train

SR = 16000


def tone(seconds: float, rate: int = SR, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    wave = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)  # (n, channels)


def write_bad_files(folder: Path) -> dict[str, str]:
    """Bad files of several kinds (from the audio matrix): {file name: reason fragment}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.wav").touch()
    (folder / "notes.wav").write_text("not audio at all\n", encoding="utf-8")
    sf.write(folder / "good_source.wav", tone(1.0), SR)
    raw = (folder / "good_source.wav").read_bytes()
    (folder / "good_source.wav").unlink()
    (folder / "cut.wav").write_bytes(raw[:20])
    rate1 = bytearray(raw)
    rate1[24:32] = struct.pack("<II", 1, 2)
    (folder / "rate1.wav").write_bytes(bytes(rate1))
    nan = tone(0.5)
    nan[100] = np.nan
    sf.write(folder / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(folder / "one_44k.wav", np.array([0.1], np.float32), 44100)
    (folder / "junk.mp3").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return {
        "zero.wav": "empty file (0 bytes)",
        "notes.wav": "cannot decode audio (Format not recognised)",
        "cut.wav": "cannot decode audio (",
        "rate1.wav": "sample rate 1 Hz is outside 1000-1000000 Hz",
        "nan.wav": "contains NaN/Inf samples",
        "one_44k.wav": "too short",
        "junk.mp3": "cannot decode audio (Format not recognised)",
    }


def write_odd_good_files(folder: Path) -> list[str]:
    """Unusual but valid audio: each must get its result like any other."""
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "stereo 44k.wav", tone(0.8, 44100, channels=2), 44100)
    sf.write(folder / "six_channels.wav", tone(0.7, 48000, channels=6), 48000, subtype="FLOAT")
    sf.write(folder / "tenth.flac", tone(0.1), SR)
    sf.write(folder / "one_sample.wav", np.array([0.2], np.float32), SR)
    sf.write(folder / "silence.wav", np.zeros(SR, np.float32), SR)
    return ["stereo 44k.wav", "six_channels.wav", "tenth.flac", "one_sample.wav", "silence.wav"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """The tone corpus plus odd good files and bad files; the extra rows are in the test split."""
    root = tmp_path_factory.mktemp("mixed")
    manifest = write_tone_corpus(root / "corpus")
    bad = write_bad_files(root / "corpus" / "bad")
    odd = write_odd_good_files(root / "corpus" / "odd")
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    tones = [root / "corpus" / row["path"] for row in rows]
    extra = [(f"bad/{name}", k) for k, name in enumerate(bad)] + [(f"odd/{name}", k) for k, name in enumerate(odd)]
    rows += [{"path": path, "label": ("low", "high")[k % 2], "split": "test", "speaker": "s9",
              "transcript": "this is great today"} for path, k in extra]
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {"root": root, "manifest": manifest, "tones": tones,
            "bad": {(root / "corpus" / "bad" / name).resolve(): reason for name, reason in bad.items()},
            "odd": [(root / "corpus" / "odd" / name).resolve() for name in odd],
            "test_tones": [root / "corpus" / r["path"] for r in rows[:12] if r["split"] == "test"]}


def encoder_overrides(tiny_encoders, cache: Path) -> list[str]:
    return [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={cache}"]


@pytest.fixture(scope="module")
def model_dir(tiny_encoders, tmp_path_factory) -> Path:
    """A tiny model trained for one epoch on a clean tone corpus."""
    root = tmp_path_factory.mktemp("batch_model")
    config = load(None, [*encoder_overrides(tiny_encoders, root / "cache"), "train.max_epochs=1",
                         "train.batch_size=4", "model.hidden_layers=1"])
    train(write_tone_corpus(root / "clean"), root / "run", config, progress=False)
    return root / "run" / "model"


def read_errors(path: Path) -> dict[Path, str]:
    """The errors file: one `path<TAB>reason` line per skipped item."""
    lines = path.read_text(encoding="utf-8").splitlines()
    entries = [line.split("\t") for line in lines]
    assert all(len(entry) == 2 for entry in entries), lines
    result = {Path(p).resolve(): reason for p, reason in entries}
    assert len(result) == len(lines), "an item is listed twice"
    return result


def assert_bad_reported(expected: dict[Path, str], errors_file: Path, stderr: str) -> None:
    """Each bad item: in the errors file with its reason, and on stderr as `path: reason`."""
    listed = read_errors(errors_file)
    assert set(listed) == set(expected), (sorted(map(str, listed)), sorted(map(str, expected)))
    for path, fragment in expected.items():
        assert fragment in listed[path], (path, listed[path])
        assert f"  {path}: {listed[path]}" in stderr
    assert f"skipped {len(expected)} bad file(s):" in stderr


def test_extract_keeps_every_good_item_and_lists_the_bad(corpus, tiny_encoders, tmp_path, capsys) -> None:
    errors = tmp_path / "out" / "extract_errors.tsv"
    args = ["extract", "--manifest", str(corpus["manifest"]), "--set",
            *encoder_overrides(tiny_encoders, tmp_path / "cache")]
    assert main([*args, "--errors", str(errors)]) == 3
    out, err = capsys.readouterr()
    good = len(corpus["tones"]) + len(corpus["odd"])
    assert f"features ready for {good} items ({good} speech entries computed here)" in out
    assert_bad_reported(corpus["bad"], errors, err)
    # the features of every good item are in the store: a second run computes nothing
    assert main([*args, "--errors", str(errors)]) == 3
    assert f"features ready for {good} items (0 speech entries computed here)" in capsys.readouterr().out


def test_evaluate_scores_the_good_and_writes_errors_tsv(corpus, model_dir, tiny_encoders, tmp_path, capsys) -> None:
    out_dir = tmp_path / "eval"
    code = main(["evaluate", str(model_dir), "--manifest", str(corpus["manifest"]), "--split", "test",
                 "--out", str(out_dir), "--no-report"])
    out, err = capsys.readouterr()
    assert code == 3, err
    good = [p.resolve() for p in corpus["test_tones"]] + corpus["odd"]
    assert f"n={len(good)}" in out
    with open(out_dir / "predictions.csv", newline="", encoding="utf-8") as f:
        scored = [Path(row["path"]).resolve() for row in csv.DictReader(f)]
    assert sorted(scored) == sorted(good)
    assert_bad_reported(corpus["bad"], out_dir / "errors.tsv", err)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["n"] == len(good)
    assert {Path(s["path"]).resolve() for s in metrics["skipped"]} == set(corpus["bad"])


def predict_args(model_dir: Path, files: list[Path]) -> list[str]:
    return ["predict", str(model_dir), *map(str, files), "--format", "jsonl", "--batch-size", "3",
            *[arg for _ in files for arg in ("--transcript", "this is great today")]]


def test_predict_keeps_every_good_file_and_lists_the_bad(corpus, model_dir, tmp_path, capsys) -> None:
    missing, folder = tmp_path / "gone.wav", tmp_path / "a folder.wav"
    folder.mkdir()
    dangling = tmp_path / "dangling.wav"
    dangling.symlink_to(tmp_path / "deleted.wav")
    expected = {**corpus["bad"], missing.resolve(): "file not found", folder.resolve(): "no audio files in this folder",
                (tmp_path / "deleted.wav").resolve(): "file not found"}
    good = corpus["odd"] + [p.resolve() for p in corpus["tones"][:4]]
    files = [*corpus["bad"], missing, *good, folder, dangling]
    errors = tmp_path / "predict_errors.tsv"
    assert main([*predict_args(model_dir, files), "--errors", str(errors)]) == 3
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted(Path(r["path"]).resolve() for r in records) == sorted(good)
    assert all(r["label"] in ("low", "high") and abs(sum(r["probs"].values()) - 1) < 1e-4 for r in records)
    listed = read_errors(errors)
    assert set(listed) == set(expected)
    for path, fragment in expected.items():
        assert fragment in listed[path]
    assert f"skipped {len(files) - len(good)} bad file(s):" in err
    lines = err.splitlines()
    for given in [*corpus["bad"], missing, folder, dangling]:  # one stderr line per bad file, with its reason
        (line,) = [line for line in lines if line.startswith(f"  {given}: ")]
        assert expected[Path(given).resolve()] in line

    strict = tmp_path / "strict_errors.tsv"  # --strict: the first bad file ends the run
    assert main([*predict_args(model_dir, files), "--strict", "--errors", str(strict)]) == 3
    assert capsys.readouterr().out == ""
    assert read_errors(strict) == {Path(files[0]).resolve(): listed[Path(files[0]).resolve()]}


def test_errors_file_is_fresh_and_empty_when_nothing_is_skipped(corpus, model_dir, tmp_path, capsys) -> None:
    errors = tmp_path / "errors.tsv"
    errors.write_text("stale.wav\tfrom an earlier run\n", encoding="utf-8")
    assert main([*predict_args(model_dir, corpus["tones"][:2]), "--errors", str(errors), "--strict"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert errors.read_text(encoding="utf-8") == ""


@pytest.mark.slow
def test_transcribe_fills_the_good_and_lists_the_bad(tmp_path, monkeypatch, capsys) -> None:
    from dmha.data.demo_corpus import synthesize_demo_corpus

    monkeypatch.setenv("DMHA_HOME", str(tmp_path / "home"))  # the ASR cache goes there
    demo = synthesize_demo_corpus(tmp_path / "speech", seed=0, n_speakers=3, sentences_per_emotion=1,
                                  progress=False)
    with open(demo, newline="", encoding="utf-8") as f:
        speech = [(tmp_path / "speech" / row["path"]).resolve() for row in list(csv.DictReader(f))[:2]]
    bad = {(tmp_path / "bad" / name).resolve(): reason for name, reason in write_bad_files(tmp_path / "bad").items()}
    odd = write_odd_good_files(tmp_path / "odd")
    rows = [*speech, *bad, *[(tmp_path / "odd" / name).resolve() for name in odd[:2]]]
    manifest = tmp_path / "to_transcribe.csv"
    manifest.write_text("path,split\n" + "".join(f'"{p}",test\n' for p in rows), encoding="utf-8")
    out_manifest, errors = tmp_path / "transcribed.csv", tmp_path / "asr_errors.tsv"
    code = main(["transcribe", str(manifest), "--out", str(out_manifest), "--errors", str(errors)])
    out, err = capsys.readouterr()
    assert code == 3, err
    with open(out_manifest, newline="", encoding="utf-8") as f:
        written = {(tmp_path / row["path"]).resolve(): row["transcript"] for row in csv.DictReader(f)}
    assert set(written) == set(rows)  # every row is kept, bad ones with an empty transcript
    for path in speech:
        assert "printer" in written[path].lower() or len(written[path].split()) >= 3, written[path]
    assert all(written[path] == "" for path in bad)
    assert_bad_reported(bad, errors, err)


def test_identical_bad_files_are_each_reported(tiny_encoders, model_dir, tmp_path, capsys) -> None:
    manifest = write_tone_corpus(tmp_path / "corpus")
    nan = tone(0.5)
    nan[100] = np.nan
    sf.write(tmp_path / "corpus" / "nan.wav", nan, SR, subtype="FLOAT")
    (tmp_path / "corpus" / "nan copy.wav").write_bytes((tmp_path / "corpus" / "nan.wav").read_bytes())
    with open(manifest, "a", newline="", encoding="utf-8") as f:
        f.write("nan.wav,low,test,s9,this is great today\n\"nan copy.wav\",high,test,s9,this is great today\n")
    expected = {(tmp_path / "corpus" / name).resolve(): "contains NaN/Inf samples" for name in ("nan.wav", "nan copy.wav")}
    code = main(["evaluate", str(model_dir), "--manifest", str(manifest), "--split", "test", "--out",
                 str(tmp_path / "eval"), "--no-report"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert_bad_reported(expected, tmp_path / "eval" / "errors.tsv", err)
    errors = tmp_path / "extract_errors.tsv"
    assert main(["extract", "--manifest", str(manifest), "--errors", str(errors), "--set",
                 *encoder_overrides(tiny_encoders, tmp_path / "cache")]) == 3
    assert_bad_reported(expected, errors, capsys.readouterr().err)


def test_errors_file_keeps_one_record_per_line(tmp_path) -> None:
    from dmha.outputs import write_errors

    out = tmp_path / "errors.tsv"
    write_errors([("a\tb\nc\\d.wav", "cannot decode audio"), ("plain.wav", "empty file")], out)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines == ["a\\tb\\nc\\\\d.wav\tcannot decode audio", "plain.wav\tempty file"]


_SLOW_PREDICT = """
import sys, time
from dmha.inference import EmotionRecognizer
real = EmotionRecognizer.predict_waves
def slow(self, *args, **kwargs):  # about a file every 0.3 s: the kill lands mid-batch, every time
    time.sleep(0.3)
    return real(self, *args, **kwargs)
EmotionRecognizer.predict_waves = slow
from dmha.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("fmt", ["csv"])  # jsonl goes through the same writer and flush
def test_a_killed_predict_keeps_every_result_written_before(serve_model_dir, tmp_path, fmt):
    """SIGKILL in the middle of a batch: the results of the files before are on disk, whole and valid."""
    import signal
    import subprocess
    import sys
    import time

    files = []
    for i in range(40):
        files.append(tmp_path / f"clip{i:02d}.wav")
        sf.write(files[-1], tone(0.5 + 0.01 * i), SR)
    (tmp_path / "clip03.wav").write_text("not audio\n")  # a bad one early: its line is flushed too
    out, errors = tmp_path / f"out.{fmt}", tmp_path / "errors.tsv"
    cmd = [sys.executable, "-c", _SLOW_PREDICT, "predict", str(serve_model_dir), *map(str, files), "--no-asr",
           "--format", fmt, "--out", str(out), "--errors", str(errors)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wanted = 6 + (fmt == "csv")  # header + 6 results
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < wanted):
        assert proc.poll() is None, "predict ended before it was killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = out.read_text().splitlines()
    assert wanted <= len(lines) < 40  # killed mid-batch, the earlier results kept
    if fmt == "jsonl":
        paths = [json.loads(line)["path"] for line in lines]  # every line whole
    else:
        rows = list(csv.DictReader(lines))
        assert all(abs(sum(float(r[k]) for k in r if k.startswith("p_")) - 1) < 1e-3 for r in rows)
        paths = [r["path"] for r in rows]
    assert paths == [str(f) for f in files if f.name != "clip03.wav"][:len(paths)]  # in input order, none missing
    assert errors.read_text().startswith(f"{tmp_path / 'clip03.wav'}\t")  # the skipped file, flushed at once


def test_transcribe_takes_config_and_set_like_other_commands(tmp_path, monkeypatch, capsys) -> None:
    import dmha.transcription

    seen = {}

    def fake_fill(items, enc, cache, batch_size, progress=True):
        seen.update(enc=enc, root=cache.root, batch_size=batch_size)
        return [dataclasses.replace(i, transcript="hello") for i in items], []

    monkeypatch.setattr(dmha.transcription, "fill_transcripts", fake_fill)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,split\na.wav,test\n", encoding="utf-8")
    sf.write(tmp_path / "a.wav", tone(0.5), SR)
    config = tmp_path / "c.toml"
    config.write_text('[encoders]\nasr = "base"\n')
    assert main(["transcribe", str(manifest), "--out", str(tmp_path / "o.csv"), "--config", str(config),
                 "--set", "encoders.asr_window_s=10", f"features.cache_dir={tmp_path / 'store'}"]) == 0
    assert (seen["enc"].asr, seen["enc"].asr_window_s, seen["root"]) == ("base", 10, tmp_path / "store")
    assert main(["transcribe", str(manifest), "--out", str(tmp_path / "o.csv"), "--config", str(config),
                 "--asr", "tiny.en"]) == 0
    assert seen["enc"].asr == "tiny.en"  # --asr wins over the config
    assert "1 of 1 items transcribed" in capsys.readouterr().out
