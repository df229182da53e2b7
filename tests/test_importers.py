"""Corpus importers: RAVDESS file-name codes and folder-per-label trees."""
from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import pytest

from helpers import silent
from dmha.data.folders import prepare_folders
from dmha.data.manifest import CorpusError, read_manifest
from dmha.data.ravdess import prepare_ravdess

SHARED_RAVDESS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess"



def rav(actor: int, emotion: int = 1, intensity: int = 1, statement: int = 1, repetition: int = 1,
        modality: int = 3, channel: int = 1, ext: str = "wav") -> str:
    codes = (modality, channel, emotion, intensity, statement, repetition, actor)
    return "-".join(f"{code:02d}" for code in codes) + f".{ext}"


def fake_ravdess(root: Path, actors: tuple[int, ...] = (1, 2, 17, 21), ext: str = "wav") -> None:
    """A few speech clips per actor, plus song, video-only and non-RAVDESS files to ignore."""
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        for emotion, intensity, statement in [(1, 1, 1), (5, 2, 2), (8, 1, 2)]:
            silent(folder / rav(actor, emotion, intensity, statement, ext=ext))
        silent(folder / rav(actor, 3, channel=2, ext=ext))  # song
        silent(folder / rav(actor, 4, modality=2, ext=ext))  # video-only (as audio, oddly)
        (folder / rav(actor, 4, modality=1, ext="mp4")).write_bytes(b"not audio")  # AV video: ignored
    (root / "README.txt").write_text("RAVDESS")
    silent(root / "notes" / "other.wav")


# --- RAVDESS ---------------------------------------------------------------------------------


def test_ravdess_fake_tree(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake_ravdess(tmp_path / "src")
    out = tmp_path / "out" / "ravdess.csv"
    with caplog.at_level(logging.INFO, logger="dmha.data.ravdess"):
        items = prepare_ravdess(tmp_path / "src", out)
    assert "skipped 4 song and 4 video-only files" in caplog.text
    assert len(items) == 12
    assert Counter(i.split for i in items) == {"train": 6, "dev": 3, "test": 3}
    assert {i.speaker: i.split for i in items} == {"1": "train", "2": "train", "17": "dev", "21": "test"}
    first = items[0]
    assert first.path == (tmp_path / "src" / "Actor_01" / "03-01-01-01-01-01-01.wav").resolve()
    assert (first.label, first.transcript) == ("neutral", "Kids are talking by the door")
    assert first.extra == {"corpus": "ravdess", "gender": "male", "intensity": "normal", "statement": "01", "actor": "01",
                           "duration_s": "0.010"}
    angry = next(i for i in items if i.label == "angry" and i.speaker == "2")
    assert angry.extra["gender"] == "female" and angry.extra["intensity"] == "strong"
    assert angry.transcript == "Dogs are sitting by the door"
    assert {i.label for i in items} == {"neutral", "angry", "surprised"}
    assert read_manifest(out) == items


@pytest.mark.parametrize("layout", ["", "Audio_Speech_Actors_01-24"])
@pytest.mark.parametrize("ext", ["wav", "flac", "ogg"])
def test_ravdess_layouts_and_formats(tmp_path: Path, layout: str, ext: str) -> None:
    fake_ravdess(tmp_path / "src" / layout, actors=(3, 20), ext=ext)
    items = prepare_ravdess(tmp_path / "src", tmp_path / "m.csv", transcripts=False)
    assert len(items) == 6 and all(i.path.suffix == f".{ext}" for i in items)
    assert all(i.transcript is None for i in items)


def test_ravdess_audio_only_wins_over_audio_video_twin(tmp_path: Path) -> None:
    silent(tmp_path / "src" / rav(5, modality=3))
    silent(tmp_path / "src" / rav(5, modality=1))
    silent(tmp_path / "src" / rav(5, emotion=2, modality=1))  # AV only: kept
    items = prepare_ravdess(tmp_path / "src", tmp_path / "m.csv")
    assert sorted(i.path.name for i in items) == sorted([rav(5, modality=3), rav(5, emotion=2, modality=1)])


def test_ravdess_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="RAVDESS folder not found"):
        prepare_ravdess(tmp_path / "missing", tmp_path / "m.csv")
    silent(tmp_path / "plain" / "hello.wav")
    with pytest.raises(CorpusError, match="no RAVDESS audio files found"):
        prepare_ravdess(tmp_path / "plain", tmp_path / "m.csv")
    silent(tmp_path / "songs" / rav(1, channel=2))
    with pytest.raises(CorpusError, match="no RAVDESS speech files"):
        prepare_ravdess(tmp_path / "songs", tmp_path / "m.csv")
    silent(tmp_path / "bad" / rav(1, emotion=9))
    with pytest.raises(CorpusError, match="unknown RAVDESS emotion code 09"):
        prepare_ravdess(tmp_path / "bad", tmp_path / "m.csv")
    silent(tmp_path / "actor" / rav(25))
    with pytest.raises(CorpusError, match="actor code 25"):
        prepare_ravdess(tmp_path / "actor", tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()


def test_ravdess_duplicate_clip(tmp_path: Path) -> None:
    silent(tmp_path / "src" / "Actor_01" / rav(1, ext="wav"))
    silent(tmp_path / "src" / "copy" / rav(1, ext="flac"))
    with pytest.raises(CorpusError, match="found twice"):
        prepare_ravdess(tmp_path / "src", tmp_path / "m.csv")


def test_ravdess_unreadable_audio_is_one_error(tmp_path: Path) -> None:
    fake_ravdess(tmp_path / "src", actors=(1,))
    (tmp_path / "src" / "Actor_01" / rav(1, 7)).write_bytes(b"")
    (tmp_path / "src" / "Actor_01" / rav(1, 6)).write_text("text")
    with pytest.raises(CorpusError) as err:
        prepare_ravdess(tmp_path / "src", tmp_path / "m.csv")
    message = str(err.value)
    assert "2 unreadable audio files" in message and "empty file (0 bytes)" in message
    assert "cannot decode audio" in message and "\n" not in message


@pytest.mark.ravdess
@pytest.mark.skipif(not (SHARED_RAVDESS / "manifest.csv").is_file(),
                    reason=f"shared RAVDESS not found at {SHARED_RAVDESS}")
def test_ravdess_shared_copy_reproduces_its_split(tmp_path: Path) -> None:
    items = prepare_ravdess(SHARED_RAVDESS, tmp_path / "ravdess.csv")
    with open(SHARED_RAVDESS / "manifest.csv", encoding="utf-8", newline="") as handle:
        shared = {(SHARED_RAVDESS / row["path"]).resolve(): row for row in csv.DictReader(handle)}
    assert len(items) == 1440 == len(shared)
    assert Counter(i.split for i in items) == Counter(row["split"] for row in shared.values())
    for item in items:
        row = shared[item.path]
        assert (item.split, item.label, item.speaker, item.transcript) == (
            row["split"], row["emotion"], row["speaker"], row["transcript"])
        assert item.extra["gender"] == row["gender"] and item.extra["duration_s"] == row["duration_s"]
    assert read_manifest(tmp_path / "ravdess.csv") == items


# --- folder per label ------------------------------------------------------------------------


def test_folders_per_label_stratified_and_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for n in range(10):
        silent(src / "happy" / f"h{n}.wav")
        silent(src / "sad" / "deeper" / "still" / f"s{n}.flac")
    (src / "sad" / "deeper" / "still" / "s3.txt").write_text("  I am\n sad \n")
    silent(src / ".hidden" / "x.wav")
    silent(src / "happy" / ".cache" / "y.wav")
    silent(src / "loose.wav")
    items = prepare_folders(src, tmp_path / "m.csv", dev=0.2, test=0.2)
    assert len(items) == 20 and {i.label for i in items} == {"happy", "sad"}
    for label in ("happy", "sad"):
        assert Counter(i.split for i in items if i.label == label) == {"train": 6, "dev": 2, "test": 2}
    assert next(i for i in items if i.path.name == "s3.flac").transcript == "I am sad"
    assert all(i.speaker is None for i in items)
    assert prepare_folders(src, tmp_path / "again.csv", dev=0.2, test=0.2) == items
    other = prepare_folders(src, tmp_path / "seed.csv", dev=0.2, test=0.2, seed=1)
    assert [i.split for i in other] != [i.split for i in items]
    assert read_manifest(tmp_path / "m.csv") == items


def test_folders_speaker_layout_is_speaker_independent(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for label in ("angry", "calm"):
        for speaker in range(10):
            for n in range(2):
                silent(src / label / f"spk{speaker}" / f"{n}.wav")
    items = prepare_folders(src, tmp_path / "m.csv")
    splits_of = {}
    for item in items:
        splits_of.setdefault(item.speaker, set()).add(item.split)
    assert len(splits_of) == 10 and all(len(s) == 1 for s in splits_of.values())
    assert Counter(s.pop() for s in splits_of.values()) == {"train": 8, "dev": 1, "test": 1}


def test_folders_tiny_corpus_keeps_train(tmp_path: Path) -> None:
    silent(tmp_path / "src" / "a" / "one.wav")
    items = prepare_folders(tmp_path / "src", tmp_path / "m.csv")
    assert [i.split for i in items] == ["train"]


def test_folders_split_layout(tmp_path: Path) -> None:
    src = tmp_path / "src"
    silent(src / "train" / "happy" / "a.wav")
    silent(src / "train" / "sad" / "b.wav")
    silent(src / "Validation" / "sad" / "c.wav")
    silent(src / "test" / "happy" / "spk" / "d.wav")
    items = prepare_folders(src, tmp_path / "m.csv")
    assert [(i.path.name, i.label, i.split) for i in items] == [
        ("c.wav", "sad", "dev"), ("d.wav", "happy", "test"), ("a.wav", "happy", "train"), ("b.wav", "sad", "train")]


def test_folders_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="folder not found"):
        prepare_folders(tmp_path / "missing", tmp_path / "m.csv")
    silent(tmp_path / "flat" / "a.wav")
    with pytest.raises(CorpusError, match="no label folders"):
        prepare_folders(tmp_path / "flat", tmp_path / "m.csv")
    (tmp_path / "noaudio" / "happy").mkdir(parents=True)
    (tmp_path / "noaudio" / "happy" / "a.txt").write_text("hi")
    with pytest.raises(CorpusError, match="no audio files"):
        prepare_folders(tmp_path / "noaudio", tmp_path / "m.csv")
    silent(tmp_path / "mixed" / "train" / "happy" / "a.wav")
    silent(tmp_path / "mixed" / "sad" / "b.wav")
    with pytest.raises(CorpusError, match=r"mix split names \(train\) with others \(sad\)"):
        prepare_folders(tmp_path / "mixed", tmp_path / "m.csv")
    with pytest.raises(ValueError, match="sum to less than 1"):
        prepare_folders(tmp_path / "mixed", tmp_path / "m.csv", dev=0.5, test=0.5)
    assert not (tmp_path / "m.csv").exists()
