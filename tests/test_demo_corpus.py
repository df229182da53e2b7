"""Tests for the eSpeak NG demo corpus: format, splits, determinism, caching and emotional prosody."""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dmha.data import demo_corpus
from dmha.data.demo_corpus import EMOTIONS, SAMPLE_RATE, synthesize_demo_corpus

TINY = dict(seed=3, n_speakers=4, sentences_per_emotion=2, progress=False)


def _rows(manifest: Path) -> list[dict[str, str]]:
    """Manifest rows as dicts."""
    with manifest.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A 4-speaker, 32-utterance corpus shared by the tests in this module."""
    return synthesize_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", **TINY)


def test_manifest_columns_labels_and_files(tiny: Path) -> None:
    """Manifest has the promised columns, labels and relative paths to 16 kHz mono 16-bit WAVs."""
    with tiny.open(newline="") as f:
        assert next(csv.reader(f)) == ["path", "label", "split", "speaker", "reference_text"]
    rows = _rows(tiny)
    assert len(rows) == 4 * len(EMOTIONS) * 2
    assert {r["label"] for r in rows} == set(EMOTIONS)
    for r in rows:
        assert not Path(r["path"]).is_absolute() and r["reference_text"]
        info = sf.info(tiny.parent / r["path"])
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert 1.0 < info.duration < 5.0


def test_splits_are_speaker_independent(tiny: Path) -> None:
    """Every speaker sits in exactly one split and all three splits are present."""
    rows = _rows(tiny)
    splits_of = defaultdict(set)
    for r in rows:
        splits_of[r["speaker"]].add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert sorted(s.pop() for s in splits_of.values()) == ["dev", "test", "train", "train"]


def test_emotional_texts_do_not_cross_splits_and_shared_texts_cover_all_emotions(tiny: Path) -> None:
    """Emotional-word sentences are split-disjoint; neutral sentences are said with every emotion."""
    rows = _rows(tiny)
    emotional = {s for pool in demo_corpus._EMOTIONAL_SENTENCES.values() for s in pool}
    split_of_text = defaultdict(set)
    labels_of_shared = defaultdict(set)
    for r in rows:
        if r["reference_text"] in emotional:
            split_of_text[r["reference_text"]].add(r["split"])
        else:
            assert r["reference_text"] in demo_corpus._SHARED_SENTENCES
            labels_of_shared[r["speaker"], r["reference_text"]].add(r["label"])
    assert split_of_text and all(len(s) == 1 for s in split_of_text.values())
    assert labels_of_shared and all(s == set(EMOTIONS) for s in labels_of_shared.values())


def test_silence_is_not_digital_zero(tiny: Path) -> None:
    """The noise floor keeps leading silence from being exact zeros."""
    audio, _ = sf.read(tiny.parent / _rows(tiny)[0]["path"], dtype="int16")
    assert np.mean(audio[:400] == 0) < 0.5


def test_same_seed_gives_identical_bytes(tiny: Path, tmp_path: Path) -> None:
    """A second build with the same parameters is byte-identical."""
    again = synthesize_demo_corpus(tmp_path / "again", **TINY)
    assert again.read_bytes() == tiny.read_bytes()
    for r in _rows(tiny):
        assert (again.parent / r["path"]).read_bytes() == (tiny.parent / r["path"]).read_bytes()


def test_reuses_existing_corpus_and_rebuilds_on_new_parameters(tmp_path: Path) -> None:
    """Same parameters reuse the files; different ones rebuild and record the new parameters."""
    params = dict(TINY, n_speakers=3, sentences_per_emotion=1)
    manifest = synthesize_demo_corpus(tmp_path, **params)
    wav = tmp_path / _rows(manifest)[0]["path"]
    stamp = wav.stat().st_mtime_ns
    assert synthesize_demo_corpus(tmp_path, **params) == manifest
    assert wav.stat().st_mtime_ns == stamp
    synthesize_demo_corpus(tmp_path, **dict(params, seed=4))
    assert json.loads((tmp_path / "corpus.json").read_text())["params"]["seed"] == 4
    assert len(list((tmp_path / "audio").iterdir())) == len(_rows(manifest))


def test_prosody_angry_louder_sad_slower(tiny: Path) -> None:
    """Angry clips are louder than neutral; sad clips of the same sentence and speaker are longer."""
    rms, duration = defaultdict(list), {}
    for r in _rows(tiny):
        audio, _ = sf.read(tiny.parent / r["path"], dtype="float32")
        rms[r["label"]].append(float(np.sqrt(np.mean(audio**2))))
        duration[r["speaker"], r["reference_text"], r["label"]] = len(audio) / SAMPLE_RATE
    assert np.mean(rms["angry"]) > 1.2 * np.mean(rms["neutral"])
    pairs = [(d, duration[s, t, "neutral"]) for (s, t, lab), d in duration.items()
             if lab == "sad" and (s, t, "neutral") in duration]
    assert pairs
    assert np.mean([sad for sad, _ in pairs]) > 1.1 * np.mean([neu for _, neu in pairs])


def test_default_plan_size_and_split() -> None:
    """The default corpus is 320 utterances from 6/2/2 train/dev/test speakers (no synthesis)."""
    plan = demo_corpus._plan(seed=0, n_speakers=10, sentences_per_emotion=8)
    assert len(plan) == 320
    speakers_by_split = defaultdict(set)
    for u in plan:
        speakers_by_split[u.split].add(u.speaker.id)
    assert {s: len(v) for s, v in speakers_by_split.items()} == {"train": 6, "dev": 2, "test": 2}


@pytest.mark.parametrize("kwargs", [dict(n_speakers=2), dict(n_speakers=99), dict(sentences_per_emotion=0)])
def test_rejects_bad_sizes(tmp_path: Path, kwargs: dict) -> None:
    """Out-of-range sizes raise before anything is written."""
    with pytest.raises(ValueError):
        synthesize_demo_corpus(tmp_path / "bad", progress=False, **kwargs)
    assert not (tmp_path / "bad").exists()


def test_concurrent_builds_are_safe_and_identical(tiny: Path, tmp_path: Path) -> None:
    """Two threads building at once serialise on the eSpeak lock and match the reference bytes."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        manifests = list(pool.map(lambda d: synthesize_demo_corpus(tmp_path / d, **TINY), ["a", "b"]))
    for manifest in manifests:
        for r in _rows(tiny):
            assert (manifest.parent / r["path"]).read_bytes() == (tiny.parent / r["path"]).read_bytes()
