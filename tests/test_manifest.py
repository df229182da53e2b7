"""Manifest reading, checking and writing."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dmha.data.manifest import (
    Item,
    ManifestError,
    labels_of,
    read_manifest,
    require_splits,
    write_manifest,
)


def make_audio(folder: Path, *names: str) -> list[Path]:
    """Tiny silent WAVs at folder/name."""
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.zeros(160, np.float32), 16000)
        paths.append(path)
    return paths


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def error_of(path: Path, **kwargs: bool) -> str:
    with pytest.raises(ManifestError) as err:
        read_manifest(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_reads_relative_and_absolute_paths(tmp_path: Path) -> None:
    a, b = make_audio(tmp_path, "audio/a.wav", "elsewhere/b.wav")
    manifest = write_csv(
        tmp_path / "m.csv",
        f"path,label,split,speaker,transcript,duration_s,gender\n"
        f"audio/a.wav,happy,train,s1,hello there,0.010,f\n"
        f"{b},sad,dev,,,0.010,m\n",
    )
    items = read_manifest(manifest)
    assert items == [
        Item(a.resolve(), "happy", "train", "s1", "hello there", {"duration_s": "0.010", "gender": "f"}),
        Item(b.resolve(), "sad", "dev", None, None, {"duration_s": "0.010", "gender": "m"}),
    ]


def test_relative_paths_are_against_the_manifest_folder_not_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_audio(tmp_path / "data", "x.wav")
    write_csv(tmp_path / "data" / "m.csv", "path,label,split\nx.wav,a,train\n")
    monkeypatch.chdir(tmp_path)
    assert read_manifest(Path("data/m.csv"))[0].path == (tmp_path / "data" / "x.wav").resolve()


def test_bom_semicolon_and_tab(tmp_path: Path) -> None:
    make_audio(tmp_path, "a.wav")
    for name, text in [("bom.csv", "path,label,split\na.wav,x,train\n"),
                       ("semi.csv", "path;label;split\na.wav;x;train\n"),
                       ("tab.tsv", "path\tlabel\tsplit\na.wav\tx\ttrain\n")]:
        items = read_manifest(write_csv(tmp_path / name, text, encoding="utf-8-sig"))
        assert [(i.label, i.split) for i in items] == [("x", "train")], name


def test_semicolon_with_commas_inside_cells(tmp_path: Path) -> None:
    make_audio(tmp_path, "a.wav")
    manifest = write_csv(tmp_path / "m.csv", "path;label;split;transcript\na.wav;x;train;yes, well, no\n")
    assert read_manifest(manifest)[0].transcript == "yes, well, no"


def test_blank_rows_are_skipped_and_transcript_column_optional(tmp_path: Path) -> None:
    make_audio(tmp_path, "a.wav", "b.wav")
    manifest = write_csv(tmp_path / "m.csv", "path,label,split\n\na.wav,x,train\n,,\n  , ,\nb.wav,y,test\n\n")
    items = read_manifest(manifest)
    assert [i.path.name for i in items] == ["a.wav", "b.wav"]
    assert all(i.transcript is None and i.speaker is None for i in items)


def test_no_path_column(tmp_path: Path) -> None:
    message = error_of(write_csv(tmp_path / "m.csv", "file,label,split\na.wav,x,train\n"))
    assert "no 'path' column" in message and "file,label,split" in message


def test_missing_required_columns(tmp_path: Path) -> None:
    message = error_of(write_csv(tmp_path / "m.csv", "path,speaker\na.wav,s1\n"))
    assert "missing column(s) label, split" in message and "found: path, speaker" in message


def test_label_optional_when_not_required(tmp_path: Path) -> None:
    make_audio(tmp_path, "a.wav", "b.wav")
    manifest = write_csv(tmp_path / "m.csv", "path,split\na.wav,test\n")
    assert read_manifest(manifest, require_label=False)[0].label is None
    error_of(manifest)  # but required by default
    manifest = write_csv(tmp_path / "n.csv", "path,label,split\na.wav,,test\nb.wav,x,test\n")
    assert [i.label for i in read_manifest(manifest, require_label=False)] == [None, "x"]


@pytest.mark.parametrize("row, column", [(",x,train", "path"), ("a.wav,,train", "label"), ("a.wav,x,", "split")])
def test_empty_required_cell_names_the_row(tmp_path: Path, row: str, column: str) -> None:
    make_audio(tmp_path, "a.wav", "b.wav")
    message = error_of(write_csv(tmp_path / "m.csv", f"path,label,split\nb.wav,y,dev\n{row}\n"))
    assert f"row 3 has an empty {column}" in message


def test_short_row_is_an_empty_cell(tmp_path: Path) -> None:
    message = error_of(write_csv(tmp_path / "m.csv", "path,label,split\na.wav,x\n"))
    assert "row 2 has an empty split" in message


def test_too_many_fields(tmp_path: Path) -> None:
    message = error_of(write_csv(tmp_path / "m.csv", "path,label,split\na.wav,x,train,oops\n"))
    assert "row 2 has 4 fields, header has 3" in message


def test_bad_split_name(tmp_path: Path) -> None:
    message = error_of(write_csv(tmp_path / "m.csv", "path,label,split\na.wav,x,train set\n"))
    assert "row 2 has split 'train set'" in message


def test_duplicate_paths_after_resolving(tmp_path: Path) -> None:
    a, = make_audio(tmp_path, "a.wav")
    manifest = write_csv(tmp_path / "m.csv", f"path,label,split\na.wav,x,train\nsub/../a.wav,y,dev\n{a},z,test\n")
    message = error_of(manifest)
    assert "rows 2 and 3 both name" in message and str(a.resolve()) in message


def test_missing_files_one_error_with_count(tmp_path: Path) -> None:
    make_audio(tmp_path, "ok.wav")
    rows = "".join(f"gone{i}.wav,x,train\n" for i in range(8))
    manifest = write_csv(tmp_path / "m.csv", "path,label,split\nok.wav,x,train\n" + rows)
    message = error_of(manifest)
    assert "8 of 9 audio files not found" in message
    assert "gone0.wav" in message and "gone4.wav" in message and "gone5.wav" not in message
    assert "and 3 more" in message
    assert len(read_manifest(manifest, check_files=False)) == 9


def test_duplicate_column(tmp_path: Path) -> None:
    assert "named twice: label" in error_of(write_csv(tmp_path / "m.csv", "path,label,split,label\na,x,t,y\n"))


@pytest.mark.parametrize("text, fragment", [("", "is empty"), ("path,label,split\n", "no data rows"),
                                            ("path,label,split\n\n\n", "no data rows")])
def test_empty_manifests(tmp_path: Path, text: str, fragment: str) -> None:
    assert fragment in error_of(write_csv(tmp_path / "m.csv", text))


def test_unreadable_manifests(tmp_path: Path) -> None:
    assert "file not found" in error_of(tmp_path / "missing.csv")
    (tmp_path / "bin.csv").write_bytes(b"path,label,split\n\xff\xfe,x,train\n")
    assert "not UTF-8" in error_of(tmp_path / "bin.csv")


def test_require_splits(tmp_path: Path) -> None:
    items = [Item(tmp_path / "a.wav", "x", "train"), Item(tmp_path / "b.wav", "x", "test")]
    require_splits(items, ["train", "test"], "m.csv")
    with pytest.raises(ManifestError) as err:
        require_splits(items, ["train", "dev"], "m.csv")
    assert str(err.value) == "manifest m.csv has no rows in split(s) 'dev' (found: test, train)"
    with pytest.raises(ManifestError, match=r"split\(s\) 'dev', 'eval'"):
        require_splits(items, ["dev", "eval"], "m.csv")


def test_labels_of() -> None:
    items = [Item(Path(f"/{n}"), label, "train") for n, label in enumerate(["sad", "angry", "sad", None])]
    assert labels_of(items) == ["angry", "sad"]


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    inside, = make_audio(tmp_path / "corpus", "spk 1/ünï code.wav")
    outside, = make_audio(tmp_path / "other", "b.wav")
    items = [
        Item(inside.resolve(), "happy", "train", "spk 1", "says, \"hi\"\nthen leaves", {"gender": "f"}),
        Item(outside.resolve(), None, "dev", None, None, {"duration_s": "0.010"}),
    ]
    out = tmp_path / "corpus" / "new" / "manifest.csv"
    assert write_manifest(items, out) == out
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "path,label,split,speaker,transcript,gender,duration_s"
    assert lines[1].startswith("../spk 1/ünï code.wav,happy,train")
    assert lines[-1].startswith("../../other/b.wav,,dev,,,,0.010")
    back = read_manifest(out, require_label=False)
    assert [i.path for i in back] == [i.path for i in items]
    assert back[0].transcript == items[0].transcript and back[0].extra == {"gender": "f", "duration_s": ""}
    assert back[1].label is None and back[1].extra == {"gender": "", "duration_s": "0.010"}
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind


def test_write_keeps_absolute_path_when_only_root_is_shared(tmp_path: Path) -> None:
    item = Item(Path("/definitely/elsewhere/a.wav"), "x", "train")
    out = write_manifest([item], tmp_path / "m.csv")
    assert out.read_text().splitlines()[1].startswith("/definitely/elsewhere/a.wav,")
    assert read_manifest(out, check_files=False)[0].path == item.path


def test_write_rejects_extra_columns_named_like_core_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="clashes"):
        write_manifest([Item(tmp_path / "a.wav", "x", "train", extra={"label": "clash"})], tmp_path / "m.csv")


def test_write_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "m.csv"
    out.write_text("old\n")

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_manifest([Item(tmp_path / "a.wav", "x", "train")], out)
    assert out.read_text() == "old\n" and os.listdir(tmp_path) == ["m.csv"]
