"""Speaker normalisation (model.feature_norm=speaker): the statistics, the head, and where they come from."""
import csv
import json

import numpy as np
import pytest
import torch

from conftest import write_tone_corpus
from dmha.batches import collate
from dmha.config import ModelConfig, load
from dmha.evaluation import evaluate
from dmha.experiment import train
from dmha.inference import EmotionRecognizer
from dmha.model import DMHA, HeadDims, FeatureNorm, LayerWeightedSum
from dmha.speaker_norm import Moments, batch_moments, group_moments, speaker_group
from helpers import head_inputs


def _norm(prior_frames: float, layers=3, dim=4, seed=0) -> FeatureNorm:
    g = torch.Generator().manual_seed(seed)
    norm = FeatureNorm("speaker", (layers, dim), prior_frames)
    norm.mean.copy_(torch.randn(layers, dim, generator=g) * 30)
    norm.std.copy_(torch.rand(layers, dim, generator=g) * 5 + 0.5)
    return norm


def test_many_frames_give_the_speakers_own_statistics():
    """With no prior, each item is standardised by its own speaker's mean and std: what per-speaker
    z-scoring by hand gives."""
    torch.manual_seed(0)
    norm = _norm(prior_frames=0)
    a = torch.randn(3, 50, 4) * 7 + 100  # speaker A's two utterances (L, T, D)
    b = torch.randn(3, 30, 4) * 7 + 100
    moments = group_moments([a, b], ["A", "A"])
    assert moments[0] is moments[1] and moments[0].frames == 80
    both = torch.cat([a, b], 1).double()
    expected = (a.double() - both.mean(1, keepdim=True)) / both.std(1, unbiased=False, keepdim=True)
    out = norm(a[None], speaker=batch_moments(moments[:1]))[0]
    assert torch.allclose(out.double(), expected, atol=1e-4)


def test_the_prior_pulls_few_frames_toward_the_corpus_statistics():
    """The MAP statistics lie between the speaker's and the corpus's, the nearer the corpus's the fewer
    the frames; with no frames at all they are the corpus's (plain standardisation)."""
    norm = _norm(prior_frames=100)
    plain = FeatureNorm("standardize", (3, 4))
    plain.mean.copy_(norm.mean), plain.std.copy_(norm.std)
    x = torch.randn(1, 3, 5, 4) * 3 + norm.mean[None, :, None, :] + 10  # a speaker far from the corpus mean
    empty = {"speaker_frames": torch.zeros(1, dtype=torch.float64),
             "speaker_total": torch.zeros(1, 3, 4, dtype=torch.float64),
             "speaker_squares": torch.zeros(1, 3, 4, dtype=torch.float64)}
    assert torch.allclose(norm(x, speaker=empty), plain(x), atol=1e-5)
    offsets = []
    for frames in (5, 50, 5000):
        speaker = torch.randn(3, frames, 4) * 3 + norm.mean[:, None, :] + 10
        out = norm(x, speaker=batch_moments([Moments.of(speaker)]))
        offsets.append(float(out.mean()))
    # the speaker's +10 offset is removed the more, the more frames describe the speaker
    assert plain(x).mean() > offsets[0] > offsets[1] > offsets[2] and abs(offsets[2]) < 0.5


def test_without_speaker_moments_each_item_is_its_own_speaker_and_padding_does_not_count():
    torch.manual_seed(1)
    norm = _norm(prior_frames=20)
    speech, sm, _, _ = head_inputs(layers=3, ds=4)
    speech = speech * 9 + 4
    alone = norm(speech, sm)
    for i in range(len(sm)):
        t = int(sm[i].sum())
        own = norm(speech[i:i + 1, :, :t], speaker=batch_moments([Moments.of(speech[i, :, :t])]))
        assert torch.allclose(alone[i, :, :t], own[0], atol=1e-4)


def test_layer_sum_folds_the_per_item_affine_like_normalising_first():
    torch.manual_seed(2)
    norm = _norm(prior_frames=10, layers=5, dim=24)
    speech, sm, _, _ = head_inputs()
    fused, plain = LayerWeightedSum(5), LayerWeightedSum(5)
    with torch.no_grad():
        fused.logits.normal_()
        plain.logits.copy_(fused.logits)
    a = fused(speech, norm, sm)
    b = torch.einsum("l,bltd->btd", plain.weights, norm(speech, sm))
    assert torch.allclose(a, b, atol=1e-4)
    (a ** 2).sum().backward(), (b ** 2).sum().backward()
    assert torch.allclose(fused.logits.grad, plain.logits.grad, rtol=1e-3, atol=1e-3)


def test_head_is_batch_invariant_and_uses_the_batch_speakers():
    """Padding changes nothing, a batch equals its items one by one, and given speaker moments change
    the output (they are not ignored)."""
    torch.manual_seed(3)
    model = DMHA(HeadDims(5, 24, 16, 3), ModelConfig(heads=4, speaker_prior_frames=5)).eval()
    speech, sm, text, tm = head_inputs()
    with torch.no_grad():
        batched = model(speech, sm, text, tm).logits
        for i in range(3):
            t1, t2 = int(sm[i].sum()), int(tm[i].sum())
            one = model(speech[i:i + 1, :, :t1], sm[i:i + 1, :t1], text[i:i + 1, :t2], tm[i:i + 1, :t2]).logits
            assert torch.allclose(one, batched[i:i + 1], atol=1e-4)
        group = batch_moments([Moments.of(speech[0, :, :20]) + Moments.of(speech[1, :, :13])] * 3)
        assert not torch.allclose(model(speech, sm, text, tm, speaker=group).logits, batched, atol=1e-3)


def test_collate_carries_speaker_moments_only_when_every_item_has_them():
    speech, text = torch.randn(3, 6, 4), torch.randn(2, 5)
    m = Moments.of(speech)
    both = collate([{"speech": speech, "text": text, "speaker": m}, {"speech": speech, "text": text, "speaker": m}])
    assert both["speaker_total"].shape == (2, 3, 4) and both["speaker_frames"].tolist() == [6, 6]
    mixed = collate([{"speech": speech, "text": text, "speaker": m}, {"speech": speech, "text": text}])
    assert "speaker_total" not in mixed


def test_speaker_groups_stay_within_their_split():
    class I:
        def __init__(self, split, speaker, corpus=None):
            self.split, self.speaker, self.extra = split, speaker, {"corpus": corpus} if corpus else {}
    assert speaker_group(I("train", "7")) == ("", "train", "7") != speaker_group(I("test", "7"))
    assert speaker_group(I("test", None)) is None and speaker_group(I("test", "")) is None
    assert speaker_group(I("train", "1", "ravdess")) != speaker_group(I("train", "1", "crema-d"))  # by corpus


def _overrides(tiny_encoders, tmp_path, *extra):
    return [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={tmp_path / 'cache'}", "train.max_epochs=2", "train.batch_size=4",
            "model.hidden_layers=1", "train.crop_s=0", *extra]


def _without_speakers(manifest, out):
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "speaker"])
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if k != "speaker"} for r in rows)
    return out


def _write_rows(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_train_and_evaluate_use_the_manifest_speakers(tiny_encoders, tmp_path):
    """The default recipe standardises per speaker, by the manifest's speaker column: training's grouped
    test score equals `evaluate`'s grouped score on the same manifest; the same test clips under other
    speaker names give other probabilities (one speaker per clip = each clip alone); the training speakers
    change the trained weights; the headline (each clip alone) is what `predict` gives each file on its
    own; the model directory records the mode."""
    from safetensors.torch import load_file
    from sklearn.metrics import f1_score

    corpus = tmp_path / "corpus"
    manifest = write_tone_corpus(corpus, n_per_class=6)  # the two test clips share speaker s5
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    metrics = train(manifest, tmp_path / "run", load(None, _overrides(tiny_encoders, tmp_path)), progress=False)
    model_dir = tmp_path / "run" / "model"
    assert json.loads((model_dir / "config.json").read_text())["config"]["model"]["feature_norm"] == "speaker"
    evaluated = evaluate(model_dir, manifest, out=tmp_path / "eval", progress=False, report=False)
    assert evaluated["grouped"]["macro_f1"] == pytest.approx(metrics["test_grouped"]["macro_f1"])
    assert evaluated["macro_f1"] == pytest.approx(metrics["test"]["macro_f1"])  # the headline: each clip alone
    probs = _probs(tmp_path / "eval" / "grouped")
    assert np.allclose(probs, _probs(tmp_path / "run" / "eval_test_grouped"), atol=1e-5)
    # the same clips, each test clip its own speaker: that is each clip alone
    split_rows = [{**r, "speaker": f"t{n}"} if r["split"] == "test" else r for n, r in enumerate(rows)]
    evaluate(model_dir, _write_rows(split_rows, corpus / "split_speakers.csv"), out=tmp_path / "eval_split",
             progress=False, report=False)
    assert not np.allclose(_probs(tmp_path / "eval_split" / "grouped"), probs, atol=1e-4)
    assert np.allclose(_probs(tmp_path / "eval_split" / "grouped"), _probs(tmp_path / "run" / "eval_test"), atol=1e-5)
    # training reads its speakers from the manifest too: without the column the weights differ
    no_speakers = _without_speakers(manifest, corpus / "train_no_speakers.csv")
    train(no_speakers, tmp_path / "run_alone", load(None, _overrides(tiny_encoders, tmp_path)), progress=False)
    ours, theirs = (load_file(tmp_path / run / "model" / "model.safetensors") for run in ("run", "run_alone"))
    assert any(not torch.equal(ours[k], theirs[k]) for k in ours)

    alone_manifest = _without_speakers(manifest, corpus / "no_speakers.csv")
    evaluate(model_dir, alone_manifest, out=tmp_path / "eval_alone", progress=False, report=False)
    alone = _probs(tmp_path / "eval_alone")
    assert not (tmp_path / "eval_alone" / "grouped").exists()  # no speakers: nothing to group by
    assert not np.allclose(alone, probs, atol=1e-4)  # the speaker's statistics made a difference
    assert np.allclose(alone, _probs(tmp_path / "eval"), atol=1e-5)  # evaluate's headline: each clip alone
    rec = EmotionRecognizer.load(model_dir)
    test = sorted((str(corpus / r["path"]), r["transcript"]) for r in rows if r["split"] == "test")
    live = np.array([[p.probs[label] for label in rec.labels] for path, text in test
                     for p in [rec.predict(path, transcript=text)]])  # one file at a time
    assert np.allclose(live, alone, atol=1e-4)  # predict sees each file alone
    # ... which is what training reported as its test figure: its predictions and its macro-F1
    trained_alone = {r["path"]: r for r in csv.DictReader(open(tmp_path / "run" / "eval_test" / "predictions.csv"))}
    assert np.allclose(live, [[float(trained_alone[path][f"p_{label}"]) for label in rec.labels] for path, _ in test],
                       atol=1e-4)
    assert metrics["test"]["macro_f1"] == pytest.approx(f1_score(
        [trained_alone[path]["label"] for path, _ in test],
        [rec.labels[int(np.argmax(p))] for p in live], average="macro"))
    profile = rec.enrol([p for p, _ in test])
    assert profile.recordings == 2 and profile.seconds > 1
    enrolled = np.array([[p.probs[label] for label in rec.labels] for p in
                         rec.predict([p for p, _ in test], transcripts=[t for _, t in test], speaker=profile)])
    assert np.allclose(enrolled, probs, atol=1e-4)  # = evaluate with the manifest's shared test speaker

    # the CLI: --same-speaker is the enrolment of all its files; --enrol takes other recordings
    from dmha.cli import main

    args = ["predict", str(model_dir), *[p for p, _ in test], *sum((["--transcript", t] for _, t in test), []),
            "--format", "csv"]
    assert main([*args, "--same-speaker", "--out", str(tmp_path / "same.csv")]) == 0
    assert np.allclose(_csv_probs(tmp_path / "same.csv", rec.labels), enrolled, atol=1e-4)
    assert main([*args, "--enrol", test[0][0], "--enrol", test[1][0], "--out", str(tmp_path / "enrol.csv")]) == 0
    assert np.allclose(_csv_probs(tmp_path / "enrol.csv", rec.labels), enrolled, atol=1e-4)
    assert main([*args, "--out", str(tmp_path / "alone.csv")]) == 0
    assert np.allclose(_csv_probs(tmp_path / "alone.csv", rec.labels), alone, atol=1e-4)


def _csv_probs(path, labels):
    with open(path, newline="") as f:
        return np.array([[float(r[f"p_{label}"]) for label in labels] for r in csv.DictReader(f)])


def test_enrol_and_same_speaker_report_bad_recordings(tiny_encoders, tmp_path, capsys):
    from dmha.cli import main

    root = tmp_path / "m"
    manifest = write_tone_corpus(root / "corpus", n_per_class=4)
    train(manifest, root / "run", load(None, _overrides(tiny_encoders, tmp_path, "train.max_epochs=1")), progress=False)
    good, bad = str(root / "corpus" / "low_0.wav"), tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    model = str(root / "run" / "model")
    assert main(["predict", model, good, "--enrol", str(bad), "--no-asr"]) == 1
    assert f"--enrol {bad}" in capsys.readouterr().err
    # --same-speaker leaves the bad file out of the statistics and predict skips it as usual (exit 3)
    assert main(["predict", model, good, str(bad), "--same-speaker", "--no-asr", "--format", "csv",
                 "--out", str(tmp_path / "p.csv")]) == 3
    assert len(_csv_probs(tmp_path / "p.csv", ["low", "high"])) == 1
    assert main(["predict", model, good, "--segment", "--same-speaker"]) == 1
    assert "--segment" in capsys.readouterr().err


def _probs(folder):
    with open(folder / "predictions.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["path"])
    return np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in rows])


def test_the_prior_and_the_mode_are_validated():
    with pytest.raises(ValueError, match="model.speaker_prior_frames"):
        load(None, ["model.speaker_prior_frames=-1"])
    with pytest.raises(ValueError, match="model.feature_norm"):
        load(None, ["model.feature_norm=speakers"])


def test_speaker_pools_draw_every_amount_of_enrolment():
    """speaker_stats=subsets: a draw is the utterance's own moments plus a random subset of its speaker's
    others, none with probability alone_share, else 1..all of them, each subset equally likely in size."""
    from dmha.speaker_norm import SpeakerPool

    def moments(frames):
        return Moments(float(frames), torch.full((1, 1), float(frames)), torch.zeros(1, 1))

    own, others = moments(1), tuple(moments(10 ** k) for k in range(1, 5))  # frames 10, 100, 1000, 10000
    pool = SpeakerPool(own, others, alone_share=0.25)
    torch.manual_seed(0)
    draws = [pool.draw() for _ in range(4000)]
    alone = sum(d is own for d in draws) / len(draws)
    assert 0.22 < alone < 0.28
    sizes = [str(int(d.frames) - 1).count("1") for d in draws if d is not own]  # which others were added
    counts = np.bincount(sizes, minlength=5)[1:]
    assert all(abs(c / len(sizes) - 0.25) < 0.03 for c in counts)  # k uniform in 1..4
    assert all(float(d.total[0, 0]) == d.frames for d in draws)  # sums, not copies
    assert SpeakerPool(own, (), 0.0).draw() is own  # a speaker heard once: always alone
    torch.manual_seed(0)
    again = [pool.draw().frames for _ in range(50)]
    torch.manual_seed(0)
    assert again == [pool.draw().frames for _ in range(50)]  # seeded by torch's generator


def test_training_with_speaker_subsets_attaches_pools_to_train_only(tiny_encoders, tmp_path):
    from dmha.speaker_norm import SpeakerPool
    from dmha.task import EmotionTask

    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=6)
    from dmha.data.manifest import read_manifest

    config = load(None, _overrides(tiny_encoders, tmp_path, "train.speaker_stats=subsets", "train.alone_share=0.3"))
    task = EmotionTask(config, ["low", "high"], progress=False)
    prepared = task.prepare(read_manifest(manifest))
    train_refs = prepared.splits["train"].refs
    assert all(isinstance(r.speaker, SpeakerPool) and r.speaker.alone_share == 0.3 for r in train_refs)
    assert all(len(r.speaker.others) == 1 for r in train_refs)  # each train speaker has a low and a high clip
    assert all(isinstance(r.speaker, Moments) for r in prepared.splits["dev"].refs)
    metrics = train(manifest, tmp_path / "run", config, progress=False)
    assert 0 <= metrics["macro_f1"] <= 1 and "test_grouped" in metrics
