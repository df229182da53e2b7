"""tune-thresholds, prior correction, ensembles, report.html and compare, end to end on tiny encoders."""
import csv
import json
import re

import numpy as np
import pytest

from conftest import write_tone_corpus
from dmha.cli import main
from dmha.config import load
from dmha.decision import hard_vote
from dmha.ensemble import load_members, make_ensemble
from dmha.evaluation import evaluate
from dmha.experiment import train
from dmha.inference import EmotionRecognizer
from dmha.modeldir import ModelDirError, load_model_dir

VARIANTS = {"std": [], "sub": ["model.attention=subvector"], "focal": ["loss=focal", "seed=1"]}


@pytest.fixture(scope="module")
def runs(tiny_encoders, tmp_path_factory):
    root = tmp_path_factory.mktemp("decisions")
    manifest = write_tone_corpus(root / "corpus", n_per_class=6, labels=("low", "mid", "high"))
    base = [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={root / 'cache'}", "train.max_epochs=3", "train.batch_size=4",
            "model.hidden_layers=1", "train.crop_s=0"]
    for name, extra in VARIANTS.items():
        train(manifest, root / name, load(None, base + extra), progress=False)
    return root, manifest


def _predictions(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tune_thresholds_writes_file_that_evaluate_applies(runs, tmp_path, capsys):
    root, manifest = runs
    model = root / "std" / "model"
    assert main(["tune-thresholds", str(model), "--manifest", str(manifest)]) == 0
    assert "train macro-F1" in capsys.readouterr().out
    tuned = json.loads((model / "thresholds.json").read_text())
    assert set(tuned["thresholds"]) == {"low", "mid", "high"} and tuned["split"] == "train"
    assert all(0 <= t < 1 for t in tuned["thresholds"].values())

    on = evaluate(model, manifest, "test", tmp_path / "on", progress=False, report=False)
    off = evaluate(model, manifest, "test", tmp_path / "off", progress=False, use_thresholds=False, report=False)
    assert on["decision"]["thresholds"] and not off["decision"]["thresholds"]
    assert on["macro_f1"] == pytest.approx(on["decisions_macro_f1"]["thresholds"])
    assert off["macro_f1"] == pytest.approx(off["decisions_macro_f1"]["argmax"])
    # the thresholded predictions follow the rule on the written probabilities
    bundle = load_model_dir(model)
    thresholds = np.array([tuned["thresholds"][label] for label in bundle.labels])
    rows = _predictions(tmp_path / "off" / "predictions.csv")
    probs = np.array([[float(r[f"p_{label}"]) for label in bundle.labels] for r in rows])
    from dmha.decision import apply_thresholds

    expected = [bundle.labels[k] for k in apply_thresholds(probs, thresholds)]
    assert [r["prediction"] for r in _predictions(tmp_path / "on" / "predictions.csv")] == expected


def test_tune_on_dev_with_multiclass_objective(runs):
    root, manifest = runs
    model = root / "sub" / "model"
    assert main(["tune-thresholds", str(model), "--manifest", str(manifest), "--split", "dev",
                 "--objective", "multiclass"]) == 0
    tuned = json.loads((model / "thresholds.json").read_text())
    assert tuned["split"] == "dev" and tuned["macro_f1_after"] >= tuned["macro_f1_before"]


def test_prior_correction_is_reported_with_and_without(runs, tmp_path, capsys):
    root, manifest = runs
    out = tmp_path / "prior"
    assert main(["evaluate", str(root / "focal" / "model"), "--manifest", str(manifest), "--out", str(out),
                 "--set", "decision.prior=uniform", "--no-report"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["decision"]["prior"] == "uniform"
    assert set(metrics["decisions_macro_f1"]) == {"argmax", "prior=uniform"}
    assert metrics["macro_f1"] == pytest.approx(metrics["decisions_macro_f1"]["prior=uniform"])
    assert "prior=uniform" in capsys.readouterr().out
    # only decision.* may change after training
    assert main(["evaluate", str(root / "focal" / "model"), "--manifest", str(manifest), "--out", str(out),
                 "--set", "model.heads=2"]) == 1
    assert "only decision.*" in capsys.readouterr().err
    assert main(["evaluate", str(root / "focal" / "model"), "--manifest", str(manifest), "--out", str(out),
                 "--set", "decision.prior=mid:1"]) == 1
    assert "decision.prior" in capsys.readouterr().err


def test_ensemble_votes_like_its_members(runs, tmp_path, capsys):
    root, manifest = runs
    dirs = [str(root / name / "model") for name in VARIANTS]
    assert main(["ensemble", *dirs, "--out", str(tmp_path / "ens")]) == 0
    spec = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    devs = [m["dev_macro_f1"] for m in spec["members"]]
    assert devs == sorted(devs, reverse=True) and len(spec["members"]) == 3
    for member in spec["members"]:  # self-contained copies, with the training curves
        assert (tmp_path / "ens" / member["dir"] / "model.safetensors").is_file()
        assert (tmp_path / "ens" / member["dir"] / "training_log.csv").is_file()

    ens = evaluate(tmp_path / "ens", manifest, "test", tmp_path / "ens_eval", progress=False, report=False)
    assert ens["ensemble"] and set(ens["members"]) == {m["name"] for m in spec["members"]}
    member_preds = []
    labels = ens["labels"]
    for member in spec["members"]:
        single = evaluate(tmp_path / "ens" / member["dir"], manifest, "test", tmp_path / member["name"],
                          progress=False, report=False)
        assert single["macro_f1"] == pytest.approx(ens["members"][member["name"]]["macro_f1"])
        member_preds.append([labels.index(r["prediction"]) for r in _predictions(tmp_path / member["name"] / "predictions.csv")])
    rows = _predictions(tmp_path / "ens_eval" / "predictions.csv")
    voted = hard_vote(np.array(member_preds), len(labels))
    assert [r["prediction"] for r in rows] == [labels[k] for k in voted]
    assert [r[f"vote_{spec['members'][0]['name']}"] for r in rows] == [labels[k] for k in member_preds[0]]


def test_ensemble_runs_each_encoder_once_and_predicts(runs, tmp_path, capsys, monkeypatch):
    root, manifest = runs
    make_ensemble([root / name / "model" for name in VARIANTS], tmp_path / "ens")
    rec = EmotionRecognizer.load(tmp_path / "ens")
    assert len(rec.members) == 3 and len(rec._speech) == 1 and len(rec._text) == 1
    calls = {"speech": 0, "text": 0}
    for kind, encoder in (("speech", rec.speech), ("text", rec.text)):
        original = encoder.encode

        def counted(batch, *args, _original=original, _kind=kind, **kwargs):
            calls[_kind] += 1
            return _original(batch, *args, **kwargs)

        # the encoders are cached for the whole process: patched for this test only
        monkeypatch.setattr(encoder, "encode", counted)
    from dmha.data.manifest import read_manifest

    items = [i for i in read_manifest(manifest) if i.split == "test"]
    preds = rec.predict([i.path for i in items], transcripts=[i.transcript for i in items], batch_size=len(items))
    assert calls == {"speech": 1, "text": 1}
    for pred in preds:
        assert set(pred.votes) == {m.name for m in rec.members}
        assert pred.label in pred.votes.values()

    assert main(["predict", str(tmp_path / "ens"), *[str(i.path) for i in items], "--format", "jsonl",
                 *sum((["--transcript", i.transcript] for i in items), [])]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in records] == [p.label for p in preds]
    assert all(len(r["votes"]) == 3 for r in records)


def test_ensemble_rejects_bad_inputs(runs, tmp_path, tiny_encoders):
    root, manifest = runs
    with pytest.raises(ModelDirError, match="at least two"):
        make_ensemble([root / "std" / "model"], tmp_path / "one")
    other = write_tone_corpus(tmp_path / "two_labels", labels=("low", "high"))
    config = load(None, [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
                         f"features.cache_dir={root / 'cache'}", "train.max_epochs=1", "model.hidden_layers=1"])
    train(other, tmp_path / "two", config, progress=False)
    with pytest.raises(ModelDirError, match="labels"):
        make_ensemble([root / "std" / "model", tmp_path / "two" / "model"], tmp_path / "mixed")
    make_ensemble([root / "std" / "model", root / "sub" / "model"], tmp_path / "ens")
    with pytest.raises(ModelDirError, match="not empty"):
        make_ensemble([root / "std" / "model", root / "sub" / "model"], tmp_path / "ens")
    spec = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    spec["members"][0]["dir"] = "../../elsewhere"
    (tmp_path / "ens" / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(ModelDirError, match="outside"):
        load_members(tmp_path / "ens")


def test_bad_thresholds_file_is_one_clear_error(runs, tmp_path):
    root, _ = runs
    import shutil

    model = tmp_path / "model"
    shutil.copytree(root / "std" / "model", model)
    (model / "thresholds.json").write_text(json.dumps({"thresholds": {"low": 0.2}}))
    with pytest.raises(ModelDirError, match="thresholds.json: needs one threshold"):
        load_model_dir(model)
    (model / "thresholds.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="invalid thresholds"):
        load_model_dir(model)


def test_report_html_has_every_figure(runs, tmp_path):
    root, manifest = runs
    for name, kind in (("std", "standard"), ("sub", "sub-vector")):
        out = tmp_path / name
        evaluate(root / name / "model", manifest, "test", out, progress=False)
        page = (out / "report.html").read_text()
        for heading in ("Confusion matrix", "Per-class precision", "Training curves", "speech layer weights",
                        f"({kind} MHA)", "Attention mass on speech vs text"):
            assert heading in page, heading
        images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
        # confusion, per-class, curves, layer weights, ≥1 attention map, modality share
        assert len(images) >= 6
        import base64

        assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
        assert "src=\"http" not in page  # self-contained


def test_compare_prints_and_writes_a_table(runs, tmp_path, capsys):
    root, manifest = runs
    out = tmp_path / "table.csv"
    evaluate(root / "sub" / "model", manifest, "test", tmp_path / "sub_eval", progress=False,
             use_thresholds=False, prior="uniform", report=False)
    runs_ = [*[str(root / name) for name in VARIANTS], str(tmp_path / "sub_eval")]
    assert main(["compare", *runs_, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| run" in printed and "subvector" in printed and "focal" in printed
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == [*VARIANTS, "sub_eval"]
    saved = json.loads((root / "sub" / "metrics.json").read_text())
    assert float(rows[1]["macro_f1"]) == pytest.approx(saved["macro_f1"])
    assert rows[1]["decision"] == "argmax" and rows[3]["decision"] == "prior=uniform"
    assert float(rows[3]["dev_macro_f1"]) == pytest.approx(saved["dev_macro_f1"])  # from the model's record
    assert main(["compare", *runs_, "--out", str(tmp_path / "table.md")]) == 0
    assert (tmp_path / "table.md").read_text().startswith("| run")
    assert main(["compare", str(tmp_path / "nothing_here")]) == 1
    assert "no metrics.json" in capsys.readouterr().err


def test_members_with_different_encoders(runs, tmp_path, tiny_encoders, monkeypatch):
    """Each distinct speech encoder runs once per batch; members sharing one share its output."""
    from conftest import build_tiny_speech_encoder
    from dmha.data.manifest import read_manifest

    root, manifest = runs
    other = build_tiny_speech_encoder(tmp_path / "other_speech")
    config = load(None, [f"encoders.speech={other}", f"encoders.text={tiny_encoders['text']}",
                         f"features.cache_dir={root / 'cache'}", "train.max_epochs=2", "train.batch_size=4",
                         "model.hidden_layers=1", "train.crop_s=0"])
    train(manifest, tmp_path / "other", config, progress=False)
    make_ensemble([root / "std" / "model", root / "sub" / "model", tmp_path / "other" / "model"], tmp_path / "ens")
    rec = EmotionRecognizer.load(tmp_path / "ens")
    assert len(rec._speech) == 2 and len(rec._text) == 1
    calls = []
    for key, encoder in rec._speech.items():
        original = encoder.encode
        monkeypatch.setattr(encoder, "encode", lambda batch, *a, _o=original, _k=key, **k: calls.append(_k) or _o(batch, *a, **k))
    items = [i for i in read_manifest(manifest) if i.split == "test"]
    preds = rec.predict([i.path for i in items], transcripts=[i.transcript for i in items], batch_size=len(items))
    assert sorted(calls) == sorted(rec._speech) and all(len(p.votes) == 3 for p in preds)
    report = evaluate(tmp_path / "ens", manifest, "test", tmp_path / "eval", progress=False, report=False)
    assert report["n"] == len(items) and len(report["members"]) == 3


def test_a_retrained_model_dir_drops_the_old_thresholds(runs, tmp_path):
    """docs/reference/robustness.md: training again into a run folder whose model was tuned (a resumed run: its
    metrics.json is gone) replaces the model directory whole, and the old thresholds.json (tuned for the
    old weights) goes with it; the same command on a finished run changes nothing."""
    import shutil

    from dmha.config import from_dict

    root, manifest = runs
    run = tmp_path / "std"
    shutil.copytree(root / "std", run)
    (run / "model" / "thresholds.json").write_text(json.dumps({"thresholds": {"low": 0.2, "mid": 0.3, "high": 0.4}}))
    assert load_model_dir(run / "model").thresholds is not None
    config = from_dict(json.loads((run / "config.json").read_text()))
    train(manifest, run, config, progress=False)  # finished: nothing to do, the tuned model stays
    assert (run / "model" / "thresholds.json").exists()
    (run / "metrics.json").unlink()  # as if killed before the end: it resumes and saves the model anew
    train(manifest, run, config, progress=False)
    assert not (run / "model" / "thresholds.json").exists()
    assert load_model_dir(run / "model").thresholds is None and (run / "model" / "model.safetensors").is_file()
