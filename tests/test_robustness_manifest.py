"""The manifest and transcript matrix: messy CSVs, labels that do not fit the model or the splits,
and transcripts from empty to 10,000 words.

Each case ends in the right items (checked) or a one-line error naming the manifest (and the row).
docs/reference/robustness.md ("Manifests and transcripts") lists the rows with these test names.
"""
from __future__ import annotations

import codecs
import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import WORDS, write_tone_corpus
from dmha.cli import main
from dmha.config import load
from dmha.data.manifest import ManifestError, read_manifest
from dmha.experiment import extract, train

TEN_K_WORDS = " ".join(WORDS[i % len(WORDS)] for i in range(10_000))


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    """A folder with a.wav, b.wav and a unicode-named file, tiny and silent."""
    for name in ("a.wav", "b.wav", "sub/ünï cödé.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / name, np.zeros(160, np.float32), 16000)
    return tmp_path


def write_manifest_bytes(folder: Path, data: bytes | str, name: str = "m.csv") -> Path:
    path = folder / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def one_line_error(manifest: Path, **kwargs) -> str:
    with pytest.raises(ManifestError) as err:
        read_manifest(manifest, **kwargs)
    message = str(err.value)
    assert "\n" not in message and "\r" not in message, message
    assert str(manifest) in message
    return message


AB = [("a.wav", "x", "train"), ("b.wav", "y", "test")]
MATRIX_OK = [
    pytest.param("path,label,split\na.wav,x,train\nb.wav,y,test\n", AB, id="plain"),
    pytest.param(codecs.BOM_UTF8 + b"path,label,split\na.wav,x,train\nb.wav,y,test\n", AB, id="utf8-bom"),
    pytest.param(codecs.BOM_UTF8 + b"path;label;split\na.wav;x;train\nb.wav;y;test\n", AB, id="bom-semicolon"),
    pytest.param("path;label;split\na.wav;x;train\nb.wav;y;test\n", AB, id="semicolon"),
    pytest.param("path\tlabel\tsplit\na.wav\tx\ttrain\nb.wav\ty\ttest\n", AB, id="tab"),
    pytest.param("path\tlabel\tsplit\na.wav\tx\ttrain\nb.wav\ty\ttest\n".encode("utf-16"), AB,
                 id="utf16-excel-unicode-text"),
    pytest.param("path,label,split\na.wav,x,train\nb.wav,y,test\n".encode("utf-16-be").join(
        [codecs.BOM_UTF16_BE, b""]), AB, id="utf16-be-bom"),
    pytest.param("path,label,split\r\na.wav,x,train\r\nb.wav,y,test\r\n", AB, id="crlf"),
    pytest.param("path,label,split\ra.wav,x,train\rb.wav,y,test\r", AB, id="cr-only"),
    pytest.param("path,label,split\n\n,,\n  ,  ,  \na.wav,x,train\n\n\nb.wav,y,test\n\n", AB, id="empty-rows"),
    pytest.param(" path , label , split \n a.wav , x , train \nb.wav,y,test\n", AB, id="padded-cells"),
    pytest.param('"path","label","split"\n"a.wav","x","train"\n"b.wav","y","test"\n', AB, id="all-quoted"),
    pytest.param("path,label,split,transcript\na.wav,x,train,\"yes, no; maybe\"\nb.wav,y,test,\"two\nlines\"\n",
                 AB, id="delimiters-and-newlines-in-quotes"),
    pytest.param("split,label,path,gender\ntrain,x,a.wav,f\ntest,y,b.wav,m\n", AB, id="columns-reordered"),
    pytest.param("path,label,split\na.wav,x,train\nb.wav,y,test", AB, id="no-final-newline"),
    pytest.param("path,label,split\nsub/ünï cödé.wav,ñ,train\n", [("ünï cödé.wav", "ñ", "train")], id="unicode"),
    pytest.param("path,label,split\na.wav,x,train\n./b.wav,y,dev-2\n", [("a.wav", "x", "train"),
                                                                      ("b.wav", "y", "dev-2")], id="other-split"),
]


@pytest.mark.parametrize("data, expected", MATRIX_OK)
def test_manifest_variants_read_the_same_items(audio: Path, data, expected) -> None:
    items = read_manifest(write_manifest_bytes(audio, data))
    assert [(i.path.name, i.label, i.split) for i in items] == expected
    assert all(i.path.is_absolute() and i.path.is_file() for i in items)


MATRIX_ERRORS = [
    pytest.param("", "is empty", id="empty-file"),
    pytest.param(codecs.BOM_UTF8, "is empty", id="only-a-bom"),
    pytest.param("path,label,split\n", "has no data rows", id="header-only"),
    pytest.param("path,label,split\n\n ,, \n", "has no data rows", id="only-empty-rows"),
    pytest.param("file,label,split\na.wav,x,train\n", "header has no 'path' column (header: 'file,label,split')",
                 id="no-path-column"),
    pytest.param("Path,Label,Split\na.wav,x,train\n", "header has no 'path' column", id="capitalised-header"),
    pytest.param("path,split\na.wav,train\n", "missing column(s) label (found: path, split)", id="no-label-column"),
    pytest.param("path,label\na.wav,x\n", "missing column(s) split", id="no-split-column"),
    pytest.param("path\na.wav\n", "missing column(s) label, split", id="path-only"),
    pytest.param("path,label,split,label\na.wav,x,train,y\n", "column(s) named twice: label", id="repeated-column"),
    pytest.param("path|label|split\na.wav|x|train\n", "header has no 'path' column (header: 'path|label|split')",
                 id="pipe-delimiter"),
    pytest.param("path,label,split\na.wav;x;train\n", "row 2 has 1 field, header has 3 (row separated by ';', "
                 "header by ','?)", id="semicolon-rows-comma-header"),
    pytest.param("path;label;split\na.wav\tx\ttrain\n", "row 2 has 1 field, header has 3 (row separated by '\\t'",
                 id="tab-rows-semicolon-header"),
    pytest.param("path,label,split\na.wav,x,train,extra\n", "row 2 has 4 fields, header has 3", id="extra-field"),
    pytest.param("path,label,split\na.wav,,train\n", "row 2 has an empty label", id="empty-label"),
    pytest.param("path,label,split\n,x,train\n", "row 2 has an empty path", id="empty-path"),
    pytest.param("path,label,split\na.wav,x\n", "row 2 has an empty split", id="short-row"),
    pytest.param("path,label,split\na.wav,x,my split\n", "row 2 has split 'my split'", id="bad-split-name"),
    pytest.param(b"path,label,split\na.wav,x,tr\x00ain\n", "line 2 holds a NUL byte", id="nul-byte"),
    pytest.param("path,label,split\na.wav,caf\xe9,train\n".encode("latin-1"), "not UTF-8 text (byte 26)",
                 id="latin-1"),
    pytest.param(codecs.BOM_UTF16_LE + b"p\x00a\x00t\x00h\x00\x00\xd8", "not UTF-16 text", id="broken-utf16"),
    pytest.param("path,label,split,transcript\na.wav,x,train," + "w" * 140_000 + "\n",
                 "malformed CSV near line 2 (field larger than field limit", id="field-over-csv-limit"),
    pytest.param("path,label,split\na.wav,x,train\n./a.wav,y,dev\n", "rows 2 and 3 both name", id="duplicate-path"),
    pytest.param("path,label,split\na.wav,x,train\nsub/../a.wav,y,dev\n", "rows 2 and 3 both name",
                 id="duplicate-after-resolving"),
    pytest.param("path,label,split\na.wav,x,train\ngone.wav,x,train\n", "1 of 2 audio files not found",
                 id="missing-file"),
    pytest.param("path,label,split\n" + "".join(f"gone{i}.wav,x,train\n" for i in range(7)),
                 "7 of 7 audio files not found", id="all-missing"),
    pytest.param("path,label,split\n" + "n" * 300 + ".wav,x,train\n", "1 of 1 audio files not found",
                 id="name-too-long-for-the-file-system"),
    pytest.param("path,label,split\n~nosuchuser/a.wav,x,train\n", "/~nosuchuser/a.wav", id="tilde-unknown-user"),
    pytest.param("path,label,split,transcript\na.wav,x,train,\"two\nlines\"\nb.wav,,test,\n",
                 "row 4 has an empty label", id="row-number-after-a-multiline-cell"),
    pytest.param('path,label,split\n"two\nlines.wav",x,train\n', "audio files not found: ", id="newline-in-path"),
    pytest.param('path,label,split\n"a.wav",x,"split\nname"\n', r"row 2 has split 'split\nname'",
                 id="newline-in-split"),
]


@pytest.mark.parametrize("data, fragment", MATRIX_ERRORS)
def test_bad_manifests_are_one_line_errors(audio: Path, data, fragment: str) -> None:
    assert fragment in one_line_error(write_manifest_bytes(audio, data))


def test_duplicate_through_a_symlink_and_an_absolute_path(audio: Path) -> None:
    (audio / "link.wav").symlink_to(audio / "a.wav")
    for second in ("link.wav", str(audio / "a.wav")):
        manifest = write_manifest_bytes(audio, f"path,label,split\na.wav,x,train\n{second},y,dev\n")
        assert f"both name {(audio / 'a.wav').resolve()}" in one_line_error(manifest)


def test_file_names_with_surrounding_spaces_round_trip(audio: Path) -> None:
    from dmha.data.manifest import Item, write_manifest

    names = [" leading.wav", "trailing.wav ", "  both  .wav  ", "~$draft.wav", "~"]
    for name in names:
        sf.write(audio / name, np.zeros(160, np.float32), 16000, format="WAV")
    items = [Item((audio / name).resolve(), "x", "train") for name in names]
    items.append(Item((audio / "a.wav").resolve(), "y", "dev"))
    manifest = write_manifest(items, audio / "spaces.csv")
    assert [i.path for i in read_manifest(manifest)] == [i.path for i in items]
    padded = write_manifest_bytes(audio, "path,label,split\n  a.wav  ,x,train\n")  # padding, not a name
    assert read_manifest(padded)[0].path == (audio / "a.wav").resolve()


def test_missing_files_are_found_before_any_work_and_named(audio: Path) -> None:
    manifest = write_manifest_bytes(audio, "path,label,split\na.wav,x,train\n" + "".join(
        f"lost {i}.wav,x,train\n" for i in range(8)))
    message = one_line_error(manifest)
    assert "8 of 9 audio files not found" in message and "lost 0.wav" in message and "and 3 more" in message
    assert len(read_manifest(manifest, check_files=False)) == 9  # predict/transcribe-style readers can opt out


# ---- labels that do not fit: only in one split, unknown to the model ----

def tiny_overrides(tiny_encoders, cache: Path) -> list[str]:
    return [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={cache}", "train.max_epochs=1", "train.batch_size=4", "model.hidden_layers=1"]


@pytest.fixture(scope="module")
def model_dir(tiny_encoders, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("manifest_model")
    train(write_tone_corpus(root / "corpus"), root / "run", load(None, tiny_overrides(tiny_encoders, root / "cache")),
          progress=False)
    return root / "run" / "model"


def relabel(manifest: Path, changes: dict[str, tuple[str, str]], out: Path) -> Path:
    """A copy of the tone-corpus manifest with some files' (label, split) changed."""
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["path"] in changes:
            row["label"], row["split"] = changes[row["path"]]
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


@pytest.mark.parametrize("changes, fragment", [
    pytest.param({"low_5.wav": ("surprise", "test")}, "label(s) surprise appear in other splits but not in train",
                 id="label-only-in-test"),
    pytest.param({"high_4.wav": ("fear", "dev")}, "label(s) fear appear in other splits but not in train",
                 id="label-only-in-dev"),
    pytest.param({f"high_{j}.wav": ("low", split) for j, split in enumerate(["train"] * 4 + ["dev", "test"])},
                 "need at least 2 labels in train",
                 id="one-label-in-train"),
])
def test_train_refuses_labels_outside_train_before_any_work(tiny_encoders, tmp_path, capsys, changes,
                                                            fragment) -> None:
    manifest = relabel(write_tone_corpus(tmp_path / "corpus"), changes, tmp_path / "corpus" / "relabelled.csv")
    code = main(["train", "--manifest", str(manifest), "--out", str(tmp_path / "run"), "--set",
                 *tiny_overrides(tiny_encoders, tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"dmha train: error: {manifest}: ") and fragment in err[0]
    assert not (tmp_path / "cache").exists()  # refused before transcripts, statistics or features


def test_label_only_in_train_is_learnt_and_scored_as_absent(tiny_encoders, tmp_path) -> None:
    # "mid" has train rows only: the model keeps it; dev/test macro-F1 average over the classes they hold
    manifest = write_tone_corpus(tmp_path / "corpus", labels=("low", "high", "mid"))
    manifest = relabel(manifest, {"mid_4.wav": ("mid", "train"), "mid_5.wav": ("mid", "train")},
                       tmp_path / "corpus" / "mid_in_train_only.csv")
    metrics = train(manifest, tmp_path / "run", load(None, tiny_overrides(tiny_encoders, tmp_path / "cache")),
                    progress=False)
    assert json.loads((tmp_path / "run" / "model" / "labels.json").read_text()) == ["high", "low", "mid"]
    assert metrics["dev"]["per_class"]["mid"]["support"] == 0 and metrics["dev"]["n"] == 2
    present = [c["f1"] for label, c in metrics["dev"]["per_class"].items() if c["support"]]
    assert metrics["dev"]["macro_f1"] == pytest.approx(np.mean(present))


def test_evaluate_names_labels_the_model_does_not_know(model_dir, tmp_path, capsys) -> None:
    """evaluate scores what it can: a label the model does not know (another corpus's, or a typo) is left
    out with a note naming it, and names are matched by canonical form (`Low` is `low`); tune-thresholds,
    which tunes the model's own labels, refuses them."""
    manifest = relabel(write_tone_corpus(tmp_path / "corpus"), {"low_5.wav": ("surprise", "test"),
                                                                "high_5.wav": ("Low", "test")},
                       tmp_path / "corpus" / "unknown.csv")
    assert main(["evaluate", str(model_dir), "--manifest", str(manifest), "--out", str(tmp_path / "eval")]) == 0
    err = capsys.readouterr().err
    assert "note: items labelled surprise are left out: the model does not know these labels" in err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 1 and metrics["per_class"]["low"]["support"] == 1  # the `Low` clip, as low
    code = main(["tune-thresholds", str(model_dir), "--manifest", str(manifest), "--split", "test"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert f"{manifest}: label(s) Low, surprise are not known to the model (model labels: high, low)" in err[0]


def test_predict_challenge_format_refuses_labels_outside_the_challenge(model_dir, tmp_path, capsys) -> None:
    wave = tmp_path / "a.wav"
    sf.write(wave, np.zeros(8000, np.float32), 16000)
    code = main(["predict", str(model_dir), str(wave), "--transcript", "hello", "--format", "challenge"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("dmha predict: error: "), err
    assert "low" in err[0] or "high" in err[0]


# ---- transcripts: empty, whitespace, 10,000 words ----

@pytest.fixture(scope="module")
def text_encoders(tiny_encoders) -> dict:
    from dmha.encoders import load_text_encoder

    return {"tiny-bert": load_text_encoder(tiny_encoders["text"]), "minilm": load_text_encoder("minilm")}


@pytest.mark.parametrize("name, max_length", [("tiny-bert", 64), ("minilm", 512)])
def test_text_encoders_truncate_10k_words_and_take_empty_text(text_encoders, caplog, name, max_length) -> None:
    encoder = text_encoders[name]
    assert encoder.max_length == max_length
    with caplog.at_level(logging.WARNING, logger="dmha.encoders.hf"):
        empty, short, long, longer = encoder.encode(["", "kids are talking", TEN_K_WORDS, TEN_K_WORDS + " again"],
                                                    batch_size=4)
    dim = encoder.info.dim
    assert empty.shape == (2, dim)  # [CLS] [SEP]
    assert long.shape == longer.shape == (max_length, dim)
    assert all(bool(t.isfinite().all()) for t in (empty, short, long, longer))
    assert sum("truncated to" in r.message for r in caplog.records) == 2
    # padding to the long texts in one batch changes nothing for the short ones
    alone_empty, alone_short = encoder.encode(["", "kids are talking"])
    assert (alone_empty - empty).abs().max() < 1e-4 and (alone_short - short).abs().max() < 1e-4


def test_whitespace_transcripts_count_as_missing_and_long_ones_survive_the_csv(audio: Path) -> None:
    manifest = write_manifest_bytes(audio, "path,label,split,transcript\n"
                                    f"a.wav,x,train,\"   \"\nb.wav,y,train,\"{TEN_K_WORDS}\"\n")
    first, second = read_manifest(manifest)
    assert first.transcript is None  # ASR fills it
    assert second.transcript == TEN_K_WORDS


def test_extract_and_predict_with_empty_and_10k_word_transcripts(tiny_encoders, model_dir, tmp_path, capsys) -> None:
    manifest = write_tone_corpus(tmp_path / "corpus")
    text = manifest.read_text(encoding="utf-8").splitlines()
    text[1] = text[1].rsplit(",", 1)[0] + f",\"{TEN_K_WORDS}\""  # one train item speaks 10,000 words
    manifest.write_text("\n".join(text) + "\n", encoding="utf-8")
    data = extract(manifest, load(None, tiny_overrides(tiny_encoders, tmp_path / "cache")), progress=False)
    assert not data.errors and len(data.items) == 12
    long_ref = next(r for i, r in zip(data.items, data.refs) if i.transcript == TEN_K_WORDS)
    assert tuple(long_ref.text().shape) == (64, 24)  # the tiny BERT's 64 positions

    wave = tmp_path / "a.wav"
    sf.write(wave, np.zeros(8000, np.float32), 16000)
    code = main(["predict", str(model_dir), str(wave), str(wave), "--transcript", "", "--transcript", TEN_K_WORDS,
                 "--format", "jsonl"])
    out, err = capsys.readouterr()
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["transcript"] for r in records] == ["", TEN_K_WORDS]
    assert all(np.isfinite(list(r["probs"].values())).all() for r in records)
