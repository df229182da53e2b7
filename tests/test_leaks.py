"""Nothing of the test split, and no dev label, reaches what training fits or normalises with.

Training selects on dev (so dev labels may change the kept weights) and reports on test; these tests
change what must not matter and check that the model and its test probabilities stay bit-identical."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import write_tone_corpus
from dmha.config import load
from dmha.experiment import train

NORM_BUFFERS = ("speech_norm.mean", "speech_norm.std", "text_norm.mean", "text_norm.std")


def _overrides(tiny_encoders, cache):
    return [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={cache}", "train.max_epochs=3", "train.batch_size=4", "model.hidden_layers=1",
            "features.normalize=train"]  # the waveform statistics too must come from train only


def _rows(manifest):
    with open(manifest, newline="") as f:
        return list(csv.DictReader(f))


def _write(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _shuffled(rows, split, seed=0):
    """The rows with the labels of `split` permuted among its items (none keeps its own)."""
    picked = [r for r in rows if r["split"] == split]
    labels = [r["label"] for r in picked]
    order = np.roll(np.arange(len(picked)), 1 + seed)
    out, k = [], 0
    for r in rows:
        if r["split"] == split:
            r = {**r, "label": labels[order[k]]}
            k += 1
        out.append(r)
    assert any(a["label"] != b["label"] for a, b in zip(out, rows))
    return out


def _probs(run, split="test"):
    with open(run / f"eval_{split}" / "predictions.csv", newline="") as f:
        return {r["path"]: [v for k, v in r.items() if k.startswith("p_")] for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("leaks")
    manifest = write_tone_corpus(root / "corpus", n_per_class=8, labels=("low", "mid", "high"))
    return root, manifest, _rows(manifest)


@pytest.fixture(scope="module")
def reference(tiny_encoders, corpus):
    root, manifest, _ = corpus
    train(manifest, root / "reference", load(None, _overrides(tiny_encoders, root / "cache")), progress=False)
    return root / "reference"


def test_test_labels_and_the_test_split_never_reach_the_model(tiny_encoders, corpus, reference):
    root, _, rows = corpus
    weights = load_file(reference / "model" / "model.safetensors")
    shuffled = _write(_shuffled(rows, "test"), root / "corpus" / "test_shuffled.csv")
    train(shuffled, root / "test_shuffled", load(None, _overrides(tiny_encoders, root / "cache")), progress=False)
    again = load_file(root / "test_shuffled" / "model" / "model.safetensors")
    assert weights.keys() == again.keys() and all(np.array_equal(weights[k], again[k]) for k in weights)
    assert _probs(reference) == _probs(root / "test_shuffled")  # the same probabilities, to the printed digit
    assert _probs(reference, "test_grouped") == _probs(root / "test_shuffled", "test_grouped")

    # shuffling keeps each class's count; one label for every test clip changes them (a leak through class
    # weights or priors computed over more than the train split would show here)
    one_label = _write([{**r, "label": "low"} if r["split"] == "test" else r for r in rows],
                       root / "corpus" / "test_one_label.csv")
    train(one_label, root / "test_one_label", load(None, _overrides(tiny_encoders, root / "cache")), progress=False)
    relabelled = load_file(root / "test_one_label" / "model" / "model.safetensors")
    assert all(np.array_equal(weights[k], relabelled[k]) for k in weights)

    without = _write([r for r in rows if r["split"] != "test"], root / "corpus" / "no_test.csv")
    train(without, root / "no_test", load(None, _overrides(tiny_encoders, root / "cache")), progress=False)
    alone = load_file(root / "no_test" / "model" / "model.safetensors")
    assert all(np.array_equal(weights[k], alone[k]) for k in weights)


def test_dev_labels_never_reach_the_normalisation(tiny_encoders, corpus, reference):
    """Dev labels choose the kept checkpoint, but the feature and waveform statistics the head normalises
    with come from training audio alone, and dev speakers' statistics from dev audio alone."""
    import json

    from dmha.evaluation import evaluate

    root, _, rows = corpus
    shuffled = _write(_shuffled(rows, "dev"), root / "corpus" / "dev_shuffled.csv")
    train(shuffled, root / "dev_shuffled", load(None, _overrides(tiny_encoders, root / "cache")), progress=False)
    ours, theirs = (load_file(run / "model" / "model.safetensors") for run in (reference, root / "dev_shuffled"))
    assert all(np.array_equal(ours[k], theirs[k]) for k in NORM_BUFFERS)
    norm = [json.loads((run / "model" / "config.json").read_text())["normalization"]
            for run in (reference, root / "dev_shuffled")]
    assert norm[0] == norm[1] and norm[0]["per_utterance"] is False  # train-set waveform statistics
    # the same model scores dev grouped by speaker identically whichever labels the dev rows carry
    probs = []
    for manifest, out in ((root / "corpus" / "manifest.csv", "dev_a"), (shuffled, "dev_b")):
        evaluate(reference / "model", manifest, "dev", root / out, progress=False, report=False)
        with open(root / out / "predictions.csv", newline="") as f:
            probs.append({r["path"]: [v for k, v in r.items() if k.startswith("p_")] for r in csv.DictReader(f)})
    assert probs[0] == probs[1]
