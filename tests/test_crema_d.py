"""CREMA-D importer: the original AudioWAV/ layout (with its tables) and a converted copy's manifest."""
from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import pytest

from dmha.data.crema_d import VOTE_COLUMNS, parse_name, prepare_crema_d
from dmha.data.manifest import CorpusError, read_manifest
from helpers import silent

SHARED_CREMA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crema-d"
ACTORS = {"1001": ("51", "Male"), "1002": ("21", "Female"), "1003": ("21", "Female"), "1004": ("42", "Female"),
          "1005": ("29", "Male"), "1006": ("58", "Male"), "1040": ("30", "Male")}


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def fake_original(root: Path) -> Path:
    """AudioWAV/ with a few clips per actor (the misnamed _X file included), VideoDemographics.csv
    and finishedResponses.csv with voice-only (queryType 1) and other answers."""
    for actor in ACTORS:
        for sentence, emotion, level in [("DFA", "ANG", "XX"), ("IEO", "HAP", "HI"), ("TIE", "NEU", "XX")]:
            silent(root / "AudioWAV" / f"{actor}_{sentence}_{emotion}_{level}.wav")
    silent(root / "AudioWAV" / "1040_ITH_SAD_X.wav")
    silent(root / "AudioWAV" / "notes.wav")  # not a CREMA-D name: ignored
    _write_csv(root / "VideoDemographics.csv", [{"ActorID": a, "Age": age, "Sex": sex, "Race": "Unspecified",
                                                 "Ethnicity": "Not Hispanic"} for a, (age, sex) in ACTORS.items()])
    answers = [("A", 60, 1), ("A", 40, 1), ("D", 50, 1), ("H", 90, 2), ("H", 90, 3)]  # 2 and 3: face / audio-visual
    _write_csv(root / "finishedResponses.csv", [
        {"localid": f"r{k}", "queryType": q, "clipName": "1001_DFA_ANG_XX", "respEmo": e, "respLevel": lv}
        for k, (e, lv, q) in enumerate(answers)] + [
        {"localid": "r9", "queryType": 1, "clipName": "1002_IEO_HAP_HI", "respEmo": e, "respLevel": 80}
        for e in ("H", "N")])
    return root


def test_original_layout_codes_demographics_votes_and_split(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="dmha.data.crema_d"):
        items = prepare_crema_d(fake_original(tmp_path / "CREMA-D"), tmp_path / "crema.csv")
    assert len(items) == 3 * len(ACTORS) + 1 and "read as XX" in caplog.text
    by_name = {i.path.stem: i for i in items}
    odd = by_name["1040_ITH_SAD_X"]
    assert (odd.label, odd.speaker, odd.extra["intensity"], odd.extra["sentence"]) == ("sad", "1040", "unspecified", "ITH")
    clip = by_name["1001_DFA_ANG_XX"]
    assert (clip.label, clip.transcript, clip.extra["sex"], clip.extra["age"]) == ("angry", "Don't forget a jacket.", "male", "51")
    assert (clip.extra["votes_angry"], clip.extra["votes_disgust"], clip.extra["votes_happy"]) == ("2", "1", "0")
    assert (clip.extra["votes_n"], clip.extra["vote_majority"], clip.extra["vote_intensity"]) == ("3", "angry", "50.00")
    assert by_name["1002_IEO_HAP_HI"].extra["vote_majority"] == "happy,neutral"  # a tie is joined
    assert by_name["1002_IEO_HAP_HI"].extra["intensity"] == "high"
    assert "votes_n" not in by_name["1003_TIE_NEU_XX"].extra  # no votes given for it
    split_of = {i.speaker: i.split for i in items}
    assert set(split_of.values()) == {"train", "dev", "test"}
    assert all(i.split == split_of[i.speaker] for i in items)  # speaker-independent
    again = prepare_crema_d(tmp_path / "CREMA-D", tmp_path / "again.csv")
    assert [i.split for i in again] == [i.split for i in items]  # deterministic
    rows = read_manifest(tmp_path / "crema.csv")
    assert [r.path for r in rows] == [i.path for i in items] and rows[0].extra["duration_s"] == "0.010"


def test_converted_copy_keeps_its_manifest_columns(tmp_path):
    root = tmp_path / "copy"
    silent(root / "audio" / "1001" / "1001_DFA_ANG_XX.flac")
    silent(root / "audio" / "1002" / "1002_IEO_SAD_LO.flac")
    votes = dict(zip(VOTE_COLUMNS, ["5", "0", "0", "0", "1", "0", "6", "angry", "61.5"]))
    _write_csv(root / "manifest.csv", [
        {"path": "audio/1001/1001_DFA_ANG_XX.flac", "label": "angry", "split": "test", "speaker": "1001",
         "sex": "male", "age": "51", **votes},
        {"path": "audio/1002/1002_IEO_SAD_LO.flac", "label": "sad", "split": "train", "speaker": "1002",
         "sex": "female", "age": "21", **votes}])
    items = prepare_crema_d(root, tmp_path / "m.csv", transcripts=False)
    assert [(i.split, i.extra["sex"], i.extra["vote_intensity"], i.transcript) for i in items] == [
        ("test", "male", "61.5", None), ("train", "female", "61.5", None)]
    assert items[1].extra["intensity"] == "low"


def test_errors_name_the_file(tmp_path):
    with pytest.raises(CorpusError, match="CREMA-D folder not found"):
        prepare_crema_d(tmp_path / "missing", tmp_path / "m.csv")
    silent(tmp_path / "empty" / "x.wav")
    with pytest.raises(CorpusError, match="no CREMA-D audio files"):
        prepare_crema_d(tmp_path / "empty", tmp_path / "m.csv")
    with pytest.raises(CorpusError, match="unknown CREMA-D emotion code CAL"):
        parse_name(Path("1001_DFA_CAL_XX.wav"))
    silent(tmp_path / "dup" / "a" / "1001_DFA_ANG_XX.wav")
    silent(tmp_path / "dup" / "b" / "1001_DFA_ANG_XX.flac")
    with pytest.raises(CorpusError, match="found twice"):
        prepare_crema_d(tmp_path / "dup", tmp_path / "m.csv")


@pytest.mark.crema_d
@pytest.mark.skipif(not (SHARED_CREMA / "manifest.csv").is_file(), reason=f"shared CREMA-D not found at {SHARED_CREMA}")
def test_shared_copy_reproduces_its_manifest(tmp_path):
    items = prepare_crema_d(SHARED_CREMA, tmp_path / "crema.csv")
    with open(SHARED_CREMA / "manifest.csv", newline="", encoding="utf-8") as f:
        shared = {(SHARED_CREMA / r["path"]).resolve(): r for r in csv.DictReader(f)}
    assert len(items) == 3268 == len(shared) and len({i.speaker for i in items}) == 40
    assert Counter(i.split for i in items) == Counter(r["split"] for r in shared.values())
    for item in items:
        row = shared[item.path]
        assert (item.label, item.split, item.speaker, item.transcript) == (row["label"], row["split"], row["speaker"],
                                                                          row["transcript"])
        assert all(item.extra[c] == row[c] for c in ("sex", "sentence", "intensity", *VOTE_COLUMNS))
