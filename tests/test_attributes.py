"""Emotional attributes and soft targets end to end (issue: beyond one label): training, metrics, the
model directory, predict and its formats, ensembles, serve, cv, ONNX, and MSP-Podcast's layout."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import write_tone_corpus
from helpers import ROWS, make_tree, name, post
from dmha.cli import main
from dmha.config import load
from dmha.data.manifest import read_manifest
from dmha.data.msp_podcast import prepare_msp_podcast
from dmha.ensemble import make_ensemble
from dmha.evaluation import evaluate
from dmha.experiment import train
from dmha.inference import EmotionRecognizer

ATTRIBUTES = ['model.targets=["category", "arousal", "valence"]', "model.attribute_ranges.arousal=[1, 7]",
              "model.attribute_ranges.valence=[0, 100]", "model.attribute_columns.valence=val"]
ONLY = ['model.targets=["arousal"]', "model.attribute_ranges.arousal=[1, 7]"]


def _overrides(tiny_encoders, cache, *extra):
    return [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={cache}", "train.max_epochs=3", "train.batch_size=4", "model.hidden_layers=1",
            "train.crop_s=0", *extra]


def _annotated(root):
    """The tone corpus with attribute columns (arousal 1-7 follows the class, valence 0-100) and votes."""
    manifest = write_tone_corpus(root, n_per_class=6)
    rows = list(csv.DictReader(open(manifest, newline="")))
    rng = np.random.default_rng(1)
    for i, row in enumerate(rows):
        high = row["label"] == "high"
        row["arousal"] = f"{(5.5 if high else 2.5) + rng.uniform(-1, 1):.2f}"
        row["val"] = "" if i == 3 else f"{rng.uniform(0, 100):.1f}"  # one empty cell: left out, not an error
        row["votes_low"], row["votes_high"] = ("1", "4") if high else ("3", "1")
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


@pytest.fixture(scope="module")
def runs(tiny_encoders, tmp_path_factory):
    """A multi-task model with soft targets, a second seed of it, and an arousal-only model, on one store."""
    root = tmp_path_factory.mktemp("attributes")
    manifest = _annotated(root / "corpus")
    cache = root / "cache"
    multi = [train(manifest, root / f"multi{seed}", load(None, _overrides(tiny_encoders, cache, *ATTRIBUTES,
                                                                           "train.soft_targets=votes_", f"seed={seed}")),
                   progress=False) for seed in (0, 1)]
    only = train(manifest, root / "only", load(None, _overrides(tiny_encoders, cache, *ONLY)), progress=False)
    return root, manifest, multi, only


def test_training_reports_ccc_r_rmse_beside_macro_f1(runs):
    root, _, (multi, _), only = runs
    assert multi["dev_criterion"] == "macro_f1" and "dev_macro_f1" in multi and 0 <= multi["macro_f1"] <= 1
    assert set(multi["attributes"]) == {"arousal", "valence"}
    for scores in multi["attributes"].values():
        assert set(scores) == {"ccc", "pearson", "rmse", "n"} and -1 <= scores["ccc"] <= 1
    assert multi["attributes"]["arousal"]["n"] == 2 and multi["mean_ccc"] == pytest.approx(
        np.mean([s["ccc"] for s in multi["attributes"].values()]))
    assert "macro_f1" not in only and only["dev_criterion"] == "ccc" and "dev_ccc" in only
    assert set(only["attributes"]) == {"arousal"} and "test_grouped" in only  # speaker norm: grouped beside alone
    # every figure equals an independent computation from the predictions the run wrote (grouped and alone)
    for run, report, folder in ((multi, multi, "eval_test"), (multi, multi["test_grouped"], "eval_test_grouped"),
                                (only, only, "eval_test"), (only, only["test_grouped"], "eval_test_grouped")):
        rows = list(csv.DictReader(open(root / ("multi0" if run is multi else "only") / folder / "predictions.csv")))
        for name, scores in report["attributes"].items():
            pairs = np.array([(float(r[name]), float(r[f"ref_{name}"])) for r in rows if r[f"ref_{name}"]])
            expected = _independent_attribute_scores(pairs[:, 0], pairs[:, 1])
            assert scores["n"] == len(pairs)
            assert scores["ccc"] == pytest.approx(expected["ccc"], abs=2e-3)  # predictions.csv rounds to 4 places
            assert scores["pearson"] == pytest.approx(expected["pearson"], abs=2e-3)
            assert scores["rmse"] == pytest.approx(expected["rmse"], abs=2e-3)
        if "macro_f1" in report:
            from sklearn.metrics import f1_score

            assert report["macro_f1"] == pytest.approx(f1_score([r["label"] for r in rows],
                                                                [r["prediction"] for r in rows], average="macro"))
    assert only["test_grouped"]["attributes"]["arousal"] != only["attributes"]["arousal"]  # the speakers mattered
    rows = list(csv.DictReader(open(root / "multi0" / "eval_test" / "predictions.csv")))
    assert {"prediction", "p_low", "p_high", "arousal", "ref_arousal", "valence", "ref_valence"} <= set(rows[0])
    assert all(1 <= float(r["arousal"]) <= 7 for r in rows)
    assert (root / "multi0" / "eval_test" / "scatter_arousal.png").stat().st_size > 1000
    assert not (root / "only" / "eval_test" / "confusion.csv").exists()
    curves = open(root / "only" / "logs" / "metrics.csv").readline()
    assert "val_ccc" in curves and "val_macro_f1" in curves  # the criterion and the (unused) category score


def _independent_attribute_scores(pred: np.ndarray, ref: np.ndarray) -> dict:
    """Lin's CCC, Pearson's r and the RMSE by their textbook formulas (not dmha.metrics)."""
    covariance = np.cov(pred, ref, bias=True)[0, 1]
    ccc = 2 * covariance / (pred.var() + ref.var() + (pred.mean() - ref.mean()) ** 2)
    return {"ccc": ccc, "pearson": np.corrcoef(pred, ref)[0, 1], "rmse": np.sqrt(np.mean((pred - ref) ** 2))}


def test_the_model_directory_evaluates_as_trained_and_predicts_attributes(runs, tmp_path):
    root, manifest, (multi, _), only = runs
    result = evaluate(root / "multi0" / "model", manifest, "test", tmp_path / "eval", progress=False)
    assert result["macro_f1"] == pytest.approx(multi["macro_f1"])
    for name, scores in multi["attributes"].items():
        assert result["attributes"][name]["ccc"] == pytest.approx(scores["ccc"], abs=1e-6)
    page = (tmp_path / "eval" / "report.html").read_text()
    assert "Emotional attributes" in page and 'alt="arousal scatter"' in page
    assert main(["evaluate", str(root / "only" / "model"), "--manifest", str(manifest), "--out", str(tmp_path / "only")]) == 0
    only_eval = json.loads((tmp_path / "only" / "metrics.json").read_text())
    assert "macro_f1" not in only_eval and only_eval["mean_ccc"] == pytest.approx(only["mean_ccc"], abs=1e-6)
    assert "Confusion matrix" not in (tmp_path / "only" / "report.html").read_text()

    items = [i for i in read_manifest(manifest)]
    rec = EmotionRecognizer.load(root / "multi0" / "model")
    assert rec.attribute_names == ["arousal", "valence"] and rec.attribute_ranges["valence"] == (0.0, 100.0)
    paths, texts = [i.path for i in items], [i.transcript for i in items]
    one, many = rec.predict(paths, transcripts=texts, batch_size=1), rec.predict(paths, transcripts=texts, batch_size=5)
    for a, b in zip(one, many):
        assert a.label == b.label and set(a.attributes) == {"arousal", "valence"}
        assert 1 <= a.attributes["arousal"] <= 7 and 0 <= a.attributes["valence"] <= 100
        assert max(abs(a.attributes[k] - b.attributes[k]) for k in a.attributes) <= 1e-3  # batch-invariant
    assert one[0].to_dict()["attributes"] == one[0].attributes
    alone = EmotionRecognizer.load(root / "only" / "model").predict(paths[0], transcript=texts[0])
    assert alone.label is None and alone.probs == {} and set(alone.attributes) == {"arousal"}


def test_predict_formats_carry_attributes_and_refuse_what_a_model_cannot_give(runs, tmp_path, capsys):
    root, manifest, _, _ = runs
    wav = str(next((root / "corpus").glob("high_*.wav")))
    multi, only = str(root / "multi0" / "model"), str(root / "only" / "model")
    assert main(["predict", multi, wav, "--format", "csv", "--transcript", "great"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header == "path,label,p_high,p_low,arousal,valence,transcript,reason" and len(row.split(",")) == 8
    assert main(["predict", only, wav, "--format", "jsonl", "--transcript", "great"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["label"] is None and set(record["attributes"]) == {"arousal"}
    assert main(["predict", only, wav, "--transcript", "great"]) == 0
    assert "arousal " in capsys.readouterr().out  # the table shows it
    assert main(["predict", only, wav, "--format", "challenge", "--transcript", "x"]) == 1
    assert "--format challenge needs a model that predicts categories" in capsys.readouterr().err
    assert main(["predict", multi, wav, "--format", "challenge-task2", "--transcript", "x"]) == 1
    assert "needs attributes arousal, valence and dominance" in capsys.readouterr().err
    assert main(["predict", only, wav, "--segment"]) == 1
    assert "--segment needs a model that predicts categories" in capsys.readouterr().err


def test_an_ensemble_averages_its_members_attributes(runs, tmp_path):
    root, manifest, _, _ = runs
    ensemble = tmp_path / "ens"
    make_ensemble([root / "multi0" / "model", root / "multi1" / "model"], ensemble)
    item = read_manifest(manifest)[0]
    both = EmotionRecognizer.load(ensemble).predict(item.path, transcript=item.transcript)
    each = [EmotionRecognizer.load(root / f"multi{s}" / "model").predict(item.path, transcript=item.transcript)
            for s in (0, 1)]
    for name in ("arousal", "valence"):
        assert both.attributes[name] == pytest.approx(np.mean([p.attributes[name] for p in each]), abs=1e-4)
    result = evaluate(ensemble, manifest, "test", tmp_path / "eval", progress=False)
    assert "attributes" in result and set(result["members"]) == {"multi0", "multi1"}
    with pytest.raises(Exception, match="must predict the same targets"):
        make_ensemble([root / "multi0" / "model", root / "only" / "model"], tmp_path / "mixed")


def test_serve_returns_attributes_and_the_page_shows_them(runs):
    from fastapi.testclient import TestClient

    from dmha.serve.app import create_app

    root, _, _, _ = runs
    rec = EmotionRecognizer.load(root / "multi0" / "model")
    wav = next((root / "corpus").glob("low_*.wav"))
    with TestClient(create_app(rec)) as client:
        info = client.get("/v1/model").json()
        assert info["attributes"] == {"arousal": [1.0, 7.0], "valence": [0.0, 100.0]}
        got = post(client, wav.read_bytes(), wav.name, "terrible").json()
        want = rec.predict(wav, transcript="terrible")
        assert got["label"] == want.label
        assert got["attributes"] == pytest.approx(want.attributes, abs=1e-5)
        assert "drawAttributes" in client.get("/static/app.js").text


def test_cv_averages_ccc_over_folds(runs, tiny_encoders, tmp_path):
    from dmha.cv import cross_validate

    _, manifest, _, _ = runs
    result = cross_validate(manifest, tmp_path / "cv", load(None, _overrides(tiny_encoders, runs[0] / "cache", *ONLY)),
                            folds=3, seeds=[0], progress=False, echo=lambda *_: None)
    summary = result["summary"]
    assert summary["folds_done"] == 3 and "macro_f1" not in summary
    assert set(summary["mean_ccc"]) == {"mean", "std", "ci95"} and "ccc_arousal" in summary
    # each fold's CCC is the one its run measured on its own test predictions; the summary averages folds
    per_fold = []
    for fold in range(3):
        rows = list(csv.DictReader(open(tmp_path / "cv" / f"fold{fold}" / "seed0" / "eval_test" / "predictions.csv")))
        pairs = np.array([(float(r["arousal"]), float(r["ref_arousal"])) for r in rows])
        per_fold.append(_independent_attribute_scores(pairs[:, 0], pairs[:, 1])["ccc"])
        assert summary["per_fold"][str(fold)]["ccc_arousal"] == pytest.approx(per_fold[-1], abs=2e-3)
        assert summary["per_fold"][str(fold)]["mean_ccc"] == summary["per_fold"][str(fold)]["ccc_arousal"]
    assert summary["ccc_arousal"]["mean"] == pytest.approx(np.mean(per_fold), abs=2e-3)
    assert summary["mean_ccc"]["mean"] == pytest.approx(np.mean(per_fold), abs=2e-3)
    assert summary["mean_ccc"]["std"] == pytest.approx(np.std(per_fold, ddof=1), abs=2e-3)
    assert "mean CCC over 3 folds" in (tmp_path / "cv" / "report.html").read_text()


@pytest.mark.slow
def test_onnx_exports_the_attributes_in_their_ranges(runs, tmp_path):
    import onnxruntime as ort

    from dmha.batches import collate
    from dmha.export import export_onnx
    from dmha.extraction import features_for
    from dmha.modeldir import load_model_dir

    root, manifest, _, _ = runs
    model_dir = root / "multi0" / "model"
    sidecar = json.loads(export_onnx(model_dir, tmp_path / "head.onnx").read_text())
    assert sidecar["attributes"] == {"arousal": {"range": [1.0, 7.0], "column": "arousal"},
                                     "valence": {"range": [0.0, 100.0], "column": "val"}}
    bundle = load_model_dir(model_dir)
    data = features_for(read_manifest(manifest)[:3], bundle.config, norm=bundle.norm,
                     progress=False)
    batch = collate([{"speech": r.speech().float(), "text": r.text().float()} for r in data.refs])
    probs, scaled, _ = bundle.model.predict_all(batch)
    session = ort.InferenceSession(str(tmp_path / "head.onnx"), providers=["CPUExecutionProvider"])
    got_probs, got = session.run(None, {k: batch[k].numpy() for k in ("speech", "speech_mask", "text", "text_mask")})
    want = np.stack([1 + 6 * scaled[:, 0].numpy(), 100 * scaled[:, 1].numpy()], axis=1)
    assert np.abs(got_probs - probs.numpy()).max() <= 1e-4 and np.abs(got - want).max() <= 1e-3


def test_msp_podcast_layout_votes_test3_and_a_task2_submission(tiny_encoders, tmp_path, capsys):
    """The challenge layout with attributes and per-annotator labels: prepare → multi-task training on
    votes and EmoAct/EmoVal/EmoDom → `predict --format challenge-task2` of the hidden Test3 files."""
    src = make_tree(tmp_path / "msp")
    with open(src / "Labels" / "labels_detailed.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["FileName", "WorkerID", "EmoClass", "EmoAct"])
        for i, (code, _, _) in enumerate(ROWS[:14]):
            for worker, said in enumerate([code or "N", "Neutral", "Other-bored", "happy"]):
                writer.writerow([name(i), worker, said, "4"])
    extra = src / "Audios" / "MSP-PODCAST_test3_0001.wav"  # a Test3 file the labels do not list
    extra.write_bytes((src / "Audios" / name(0)).read_bytes())
    items = prepare_msp_podcast(src, tmp_path / "msp.csv")
    first = items[0]  # "A": angry, then Neutral, Other, happy
    assert (first.extra["votes_angry"], first.extra["votes_neutral"], first.extra["votes_happy"],
            first.extra["votes_n"]) == ("1", "1", "1", "4")
    test3 = [i for i in items if i.split == "test3"]
    assert [i.path.name for i in test3] == [name(14), name(15), extra.name] and {i.label for i in test3} == {"unknown"}
    overrides = _overrides(tiny_encoders, tmp_path / "cache", "train.max_epochs=1",
                           'model.targets=["category", "arousal", "valence", "dominance"]',
                           *(f"model.attribute_ranges.{a}=[1, 7]" for a in ("arousal", "valence", "dominance")),
                           "model.attribute_columns.arousal=EmoAct", "model.attribute_columns.valence=EmoVal",
                           "model.attribute_columns.dominance=EmoDom", "train.soft_targets=votes_",
                           "train.dev_criterion=sum", "features.normalize=none")
    assert main(["train", "--manifest", str(tmp_path / "msp.csv"), "--out", str(tmp_path / "run"), "--set", *overrides]) == 0
    printed = capsys.readouterr().out
    assert "dev macro-F1" in printed and "dev CCC arousal" in printed and "(dev sum" in printed
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["split"] == "dev" and set(metrics["attributes"]) == {"arousal", "valence", "dominance"}
    files = [str(i.path) for i in test3]
    out = tmp_path / "task2.csv"
    assert main(["predict", str(tmp_path / "run" / "model"), *files, "--format", "challenge-task2",
                 "--no-asr", "--out", str(out)]) == 0
    rows = list(csv.reader(open(out)))
    assert rows[0] == ["FileName", "EmoAct", "EmoVal", "EmoDom"]
    assert [r[0] for r in rows[1:]] == [name(14), name(15), extra.name]
    assert all(1 <= float(v) <= 7 for r in rows[1:] for v in r[1:])


def test_compare_shows_mean_ccc_and_thresholds_are_refused_without_categories(runs, capsys):
    from dmha.compare import collect

    root, manifest, (multi, _), only = runs
    rows = {r["run"]: r for r in collect([root / "multi0", root / "only"])}
    assert rows["multi0"]["mean_ccc"] == pytest.approx(multi["mean_ccc"])
    assert rows["only"]["mean_ccc"] == pytest.approx(only["mean_ccc"]) and rows["only"]["macro_f1"] is None
    assert main(["tune-thresholds", str(root / "only" / "model"), "--manifest", str(manifest)]) == 1
    assert "predicts attributes only (arousal); there are no class thresholds to tune" in capsys.readouterr().err
