"""The EmoSpeech importer (issue 35, item 1): names parsed, the unusable clips left out, calm mapped as the
module says, splits by user (the converted copy's kept), and `dmha prepare emospeech`."""
import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dmha.data.emospeech import UNKNOWN_USER, parse_name, prepare_emospeech
from dmha.data.manifest import CorpusError, read_manifest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "emospeech"
USERS = [f"{k:02x}" * 28 for k in range(1, 7)]  # six 56-hex-digit user hashes


def _clip(folder: Path, keyword: str, emotion: str, stamp: str, user: str, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{keyword}-safe-{emotion}-{stamp}-{user}.wav"
    sf.write(path, np.random.default_rng(seed).uniform(-0.3, 0.3, 8000).astype(np.float32), 16000)
    return path


@pytest.fixture
def original(tmp_path) -> Path:
    """The repository's layout: webservice/ with known users, plus every kind of clip that is left out."""
    web = tmp_path / "emospeech-dataset-v1" / "webservice"
    seed = 0
    for u, user in enumerate(USERS):
        for e, emotion in enumerate(("Calm", "Happy", "Angry", "Fearful")):
            seed += 1
            _clip(web, ("help", "bacho", "stop", "go")[e], emotion, f"15630{u}{e}", user, seed)
    _clip(web, "help", "Angry", "1", UNKNOWN_USER, 100)  # the unknown user: many people under one hash
    _clip(web, "background", "None", "2", USERS[0], 101)  # nothing spoken
    _clip(web, "background", "Calm", "3", USERS[0], 102)  # nothing spoken, labelled anyway
    twin = _clip(web, "go", "Angry", "4", USERS[1], 103)  # the same bytes under two labels: both out
    (web / twin.name.replace("Angry", "Fearful")).write_bytes(twin.read_bytes())
    return tmp_path / "emospeech-dataset-v1"


def test_names_parse_and_unknown_emotions_are_errors(tmp_path):
    fields = parse_name(Path(f"help-glass break-Fearful-xx-{USERS[0]}.wav"))
    assert (fields["keyword"], fields["environment"], fields["emotion"]) == ("help", "glass break", "Fearful")
    assert parse_name(Path("03-01-05-02-01-01-01.wav")) is None
    with pytest.raises(CorpusError, match="unknown EmoSpeech emotion 'Bored'"):
        parse_name(Path(f"help-safe-Bored-1-{USERS[0]}.wav"))


def test_original_layout(original, tmp_path):
    items = prepare_emospeech(original, tmp_path / "m.csv")
    assert len(items) == 6 * 4  # every left-out kind is out, nothing else
    assert all(UNKNOWN_USER[:10] != i.speaker for i in items)
    assert Counter(i.label for i in items) == {"neutral": 6, "happy": 6, "angry": 6, "fear": 6}
    assert {i.extra["source_label"] for i in items if i.label == "neutral"} == {"calm"}
    assert {i.speaker for i in items} == {u[:10] for u in USERS}
    splits = {i.speaker: i.split for i in items}
    assert all(len({i.split for i in items if i.speaker == s}) == 1 for s in splits)  # whole users only
    assert Counter(splits.values()) == {"train": 4, "dev": 1, "test": 1}
    assert {i.transcript for i in items} == {"help", "bacho", "stop", "go"}
    again = read_manifest(tmp_path / "m.csv")
    assert [(i.label, i.split, i.speaker) for i in again] == [(i.label, i.split, i.speaker) for i in items]
    assert all(i.extra["corpus"] == "emospeech" for i in again)


def test_calm_can_stay_calm_and_transcripts_can_stay_empty(original, tmp_path):
    items = prepare_emospeech(original, tmp_path / "m.csv", calm_as="calm", transcripts=False)
    assert Counter(i.label for i in items)["calm"] == 6 and all(i.transcript is None for i in items)
    with pytest.raises(ValueError, match="calm_as"):
        prepare_emospeech(original, tmp_path / "m.csv", calm_as="relaxed")


def test_no_clips_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="no EmoSpeech audio files found"):
        prepare_emospeech(tmp_path, tmp_path / "m.csv")


def test_cli(original, tmp_path):
    out = tmp_path / "m.csv"
    done = subprocess.run([sys.executable, "-m", "dmha.cli", "prepare", "emospeech", str(original), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out}: 24 items")


@pytest.mark.skipif(not (SHARED / "manifest.csv").is_file(), reason="needs ../shared/data/emospeech")
def test_the_shared_copy_keeps_its_splits(tmp_path):
    items = prepare_emospeech(SHARED, tmp_path / "m.csv")
    with open(SHARED / "manifest.csv", newline="") as handle:
        given = {Path(r["path"]).stem: r for r in csv.DictReader(handle)}
    assert len(items) == len(given) == 1393
    assert Counter(i.split for i in items) == {"train": 986, "dev": 186, "test": 221}
    for item in items:
        row = given[item.path.stem]
        assert (item.split, item.speaker) == (row["split"], row["speaker"])
        assert item.label == ("neutral" if row["label"] == "calm" else row["label"])
