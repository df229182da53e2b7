"""MSP-Podcast importer (Odyssey 2024 challenge layout) on a generated tree, and challenge rows."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import ROWS, make_tree, name
from dmha.data.manifest import CorpusError, read_manifest
from dmha.data.msp_podcast import CHALLENGE_CODES, EMO_CODES, challenge_rows, prepare_msp_podcast


def test_items_labels_splits_transcripts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = make_tree(tmp_path / "msp")
    out = tmp_path / "out" / "msp.csv"
    with caplog.at_level(logging.INFO, logger="dmha.data.msp_podcast"):
        items = prepare_msp_podcast(src, out)
    assert "dropped 3 rows with EmoClass X or O (dev 1, train 2)" in caplog.text
    assert "kept 2 test3 rows (labels hidden)" in caplog.text  # Test3: its own split, labels hidden
    assert [i.path.name for i in items] == [name(i) for i in (0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 13, 14, 15)]
    assert [i.label for i in items[:8]] == ["angry", "happy", "sad", "fear", "surprise", "contempt",
                                            "disgust", "neutral"]
    assert Counter(i.split for i in items) == {"train": 8, "dev": 2, "test1": 1, "test3": 2}
    assert {i.label for i in items if i.split == "test3"} == {"unknown"}
    first = items[0]
    assert first.path == (src / "Audios" / name(0)).resolve()
    assert first.speaker == "127" and items[2].speaker is None  # "Unknown" → empty
    assert first.transcript == "I am so angry today"
    assert items[1].transcript is None and items[2].transcript is None
    assert items[9].transcript == "fine thanks"
    assert first.extra == {"corpus": "msp-podcast", "FileName": name(0), "EmoAct": "1.0", "EmoVal": "4.2", "EmoDom": "3.8",
                           "Gender": "Male", "duration_s": "0.100"}
    assert read_manifest(out) == items


def test_include_unlabelled_writes_unknown(tmp_path: Path) -> None:
    items = prepare_msp_podcast(make_tree(tmp_path / "msp"), tmp_path / "m.csv", include_unlabelled=True)
    test = [i for i in items if i.split == "test3"]
    assert [(i.path.name, i.label, i.speaker) for i in test] == [(name(14), "unknown", None),
                                                                  (name(15), "unknown", None)]
    assert len(items) == 13


def test_missing_emoclass_column_means_unlabelled(tmp_path: Path) -> None:
    src = tmp_path / "msp"
    (src / "Labels").mkdir(parents=True)
    (src / "Audios").mkdir()
    sf.write(src / "Audios" / "a.wav", np.zeros(1600, np.float32), 16000)
    (src / "Labels" / "labels_consensus.csv").write_text("FileName,Split_Set\na.wav,Test3\n")
    (src / "Labels" / "labels_consensus.csv").write_text("FileName,Split_Set\na.wav,Test2\n")
    with pytest.raises(CorpusError, match="no usable rows .*1 unlabelled"):
        prepare_msp_podcast(src, tmp_path / "m.csv")
    items = prepare_msp_podcast(src, tmp_path / "m.csv", include_unlabelled=True)
    assert [(i.label, i.split, i.transcript, i.extra["FileName"]) for i in items] == [
        ("unknown", "test2", None, "a.wav")]


def test_missing_labels_file_or_audio_folder(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "msp")
    (src / "Labels" / "labels_consensus.csv").rename(src / "Labels" / "other.csv")
    with pytest.raises(CorpusError, match=r"labels_consensus.csv: MSP-Podcast labels file not found"):
        prepare_msp_podcast(src, tmp_path / "m.csv")
    (src / "Labels" / "other.csv").rename(src / "Labels" / "labels_consensus.csv")
    (src / "Audios").rename(src / "Wavs")
    with pytest.raises(CorpusError, match=r"Audios: MSP-Podcast audio folder not found"):
        prepare_msp_podcast(src, tmp_path / "m.csv")


def test_missing_audio_files_one_error(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "msp")
    for i in (0, 1, 2, 3, 4, 5, 6, 8):  # 8 is an X row: not needed, not reported
        (src / "Audios" / name(i)).unlink()
    with pytest.raises(CorpusError) as err:
        prepare_msp_podcast(src, tmp_path / "m.csv")
    message = str(err.value)
    assert "7 of 13 audio files listed in labels_consensus.csv not found" in message
    assert name(0) in message and name(4) in message and "and 2 more" in message
    assert "\n" not in message and not (tmp_path / "m.csv").exists()


def test_unreadable_audio_is_reported(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "msp")
    (src / "Audios" / name(3)).write_bytes(b"not audio at all")
    with pytest.raises(CorpusError, match=rf"1 unreadable audio files: .*{name(3)}"):
        prepare_msp_podcast(src, tmp_path / "m.csv")


@pytest.mark.parametrize(("rows", "message"), [
    ([("Q", "Train", "1")], r"row 2 has EmoClass 'Q' \(valid: A, H, S, F, U, C, D, N, X, O or empty\)"),
    ([("A", "Train", "1"), ("A", "Val set", "1")], r"row 3 has Split_Set 'Val set'"),
    ([("A", "", "1")], r"row 2 has an empty FileName or Split_Set"),
    ([("X", "Train", "1"), ("O", "Development", "2")], r"no usable rows \(2 rows, 2 X/O, 0 unlabelled\)"),
])
def test_bad_rows(tmp_path: Path, rows, message: str) -> None:
    src = make_tree(tmp_path / "msp", rows)
    with pytest.raises(CorpusError, match=message):
        prepare_msp_podcast(src, tmp_path / "m.csv")


def test_bad_header_and_duplicates(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "msp", ROWS[:2])
    labels = src / "Labels" / "labels_consensus.csv"
    labels.write_text("File,EmoClass,Split\nx.wav,A,Train\n")
    with pytest.raises(CorpusError, match=r"missing column\(s\) FileName, Split_Set \(found: File, EmoClass"):
        prepare_msp_podcast(src, tmp_path / "m.csv")
    labels.write_text(f"FileName,EmoClass,Split_Set\n{name(0)},A,Train\n\n{name(0)},H,Train\n")
    with pytest.raises(CorpusError, match=rf"rows 2 and 4 both list {name(0)}"):
        prepare_msp_podcast(src, tmp_path / "m.csv")
    labels.write_text("FileName,EmoClass,Split_Set\n../x.wav,A,Train\n")
    with pytest.raises(CorpusError, match=r"row 2 FileName '../x.wav' is not a plain file name"):
        prepare_msp_podcast(src, tmp_path / "m.csv")


def test_lowercase_codes_bom_and_short_rows(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "msp", ROWS[:3])
    (src / "Labels" / "labels_consensus.csv").write_text(
        f"\ufeffFileName , EmoClass,Split_Set\n{name(0)},a,Train\n{name(1)},n,Development\n", encoding="utf-8")
    items = prepare_msp_podcast(src, tmp_path / "m.csv")
    assert [(i.label, i.split, i.speaker) for i in items] == [("angry", "train", None), ("neutral", "dev", None)]


def test_challenge_codes_and_rows() -> None:
    assert set(EMO_CODES.values()) == set(CHALLENGE_CODES) and len(CHALLENGE_CODES) == 8
    assert all(EMO_CODES[CHALLENGE_CODES[label]] == label for label in CHALLENGE_CODES)
    rows = challenge_rows([Path("/data/Audios/MSP-PODCAST_0002_0033.wav"), "b/x.wav"], ["contempt", "surprise"])
    assert rows == [("MSP-PODCAST_0002_0033.wav", "C"), ("x.wav", "U")]
    with pytest.raises(ValueError, match=r"label\(s\) 'calm' are not challenge classes"):
        challenge_rows(["a.wav"], ["calm"])
    with pytest.raises(ValueError, match="one label per path"):
        challenge_rows(["a.wav", "b.wav"], ["angry"])
