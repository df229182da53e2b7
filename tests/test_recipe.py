"""Training-recipe options: frame dropout, zero-init queries, the layer weights' own LR, label smoothing, EMA."""
import csv

import pytest
import torch

from conftest import write_tone_corpus
from dmha.config import ConfigError, ModelConfig, TrainConfig, load
from dmha.evaluation import evaluate
from dmha.experiment import train
from dmha.frame_dropout import drop_frames
from dmha.losses import build_loss
from dmha.model import DMHA, HeadDims, AttentionPooling, SubVectorMHA
from dmha.modeldir import load_model_dir
from dmha.training import parameter_groups
from helpers import head_inputs


def test_frame_dropout_zero_is_identity_and_keeps_an_ordered_subset():
    speech, sm, _, _ = head_inputs()
    same = drop_frames(speech, sm, 0.0)
    assert same[0] is speech and same[1] is sm
    torch.manual_seed(0)
    kept, mask = drop_frames(speech, sm, 0.5)
    for i in range(len(sm)):
        frames = speech[i, 0, sm[i]]  # (T_i, D) valid frames
        out = kept[i, 0, mask[i]]
        assert 1 <= len(out) < len(frames)  # something dropped, never everything
        rows = [int((frames == row).all(-1).nonzero()[0]) for row in out]
        assert rows == sorted(rows) and len(set(rows)) == len(rows)  # a subsequence, in order
        assert torch.equal(kept[:, 1:][i, :, mask[i]], speech[i, 1:][:, rows])  # all layers moved alike
    assert mask.shape[1] == int(mask.sum(1).max())  # trimmed to the longest kept clip


def test_frame_dropout_keeps_a_frame_even_at_high_rates():
    speech, sm, _, _ = head_inputs()
    torch.manual_seed(1)
    _, mask = drop_frames(speech, sm, 0.999)
    assert (mask.sum(1) >= 1).all()


@pytest.mark.parametrize("attention", ["standard", "subvector"])
def test_dropping_frames_equals_masking_them(attention):
    """The head gives the same output for removed frames as for masked ones: dropout is a view, not noise."""
    torch.manual_seed(0)
    model = DMHA(HeadDims(5, 24, 16, 4), ModelConfig(attention=attention, heads=4)).eval()
    speech, sm, text, tm = head_inputs()
    torch.manual_seed(3)
    keep = (torch.rand(sm.shape) >= 0.4) & sm
    keep[:, 0] = True
    torch.manual_seed(3)
    dropped, dmask = drop_frames(speech, sm, 0.4)
    with torch.no_grad():
        masked = model(speech, keep, text, tm).logits
        removed = model(dropped, dmask, text, tm).logits
    assert torch.allclose(masked, removed, atol=1e-5)


def test_zero_queries_start_as_mean_pooling():
    torch.manual_seed(0)
    c = torch.randn(2, 6, 8)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    pooled, weights = AttentionPooling(8, "zero")(c, mask)
    assert torch.allclose(pooled[0], c[0].mean(0)) and torch.allclose(pooled[1], c[1, :3].mean(0))
    assert not torch.allclose(AttentionPooling(8)(c, mask)[0], pooled)  # the random init is not the mean
    _, _, head_weights = SubVectorMHA(8, 2, "zero")(c, mask)
    assert torch.allclose(head_weights[1, :, :3], torch.full((2, 3), 1 / 3))


def test_layer_lr_puts_the_layer_logits_in_their_own_group_without_decay():
    model = DMHA(HeadDims(5, 24, 16, 4), ModelConfig(heads=4))
    (single,) = parameter_groups(model, TrainConfig(layer_lr=0.0))
    assert len(single["params"]) == len(list(model.parameters()))
    rest, layer = parameter_groups(model, TrainConfig(layer_lr=0.02))
    assert layer["params"] == [model.layer_sum.logits] and layer["lr"] == 0.02 and layer["weight_decay"] == 0
    assert len(rest["params"]) == len(list(model.parameters())) - 1


def test_label_smoothing_reaches_the_loss_and_is_validated():
    assert build_loss("wce", [3, 1], label_smoothing=0.1).label_smoothing == pytest.approx(0.1)
    logits, target = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    plain, smoothed = build_loss("focal", [3, 1, 1]), build_loss("focal", [3, 1, 1], label_smoothing=0.2)
    p = torch.softmax(logits, -1)
    q = torch.nn.functional.one_hot(target, 3) * 0.8 + 0.2 / 3
    expected = (-(q * (1 - p) ** 2 * p.log()).sum(-1)).mean()
    assert torch.allclose(smoothed(logits, target), expected, atol=1e-6)
    assert torch.allclose(build_loss("focal", [3, 1, 1], label_smoothing=0.0)(logits, target), plain(logits, target))
    for key, value in [("train.label_smoothing", 1.0), ("train.frame_dropout", -0.1), ("train.ema_decay", 1.0),
                       ("train.layer_lr", -1), ("model.query_init", "ones")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load(None, [f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"])


def _train(tiny_encoders, root, *extra):
    manifest = write_tone_corpus(root / "corpus", n_per_class=4)
    config = load(None, [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
                         f"features.cache_dir={root / 'cache'}", "train.max_epochs=2", "train.batch_size=4",
                         "model.hidden_layers=1", "train.crop_s=0", *extra])
    metrics = train(manifest, root / "run", config, progress=False)
    return metrics, load_model_dir(root / "run" / "model"), root / "run" / "checkpoints"


def test_recipe_options_train_and_the_saved_head_is_the_average(tiny_encoders, tmp_path):
    metrics, bundle, ckpts = _train(tiny_encoders, tmp_path / "a", "train.frame_dropout=0.3", "train.layer_lr=0.5",
                                    "model.query_init=zero", "train.label_smoothing=0.1", "train.ema_decay=0.5",
                                    "train.batch_size=1")  # several steps per epoch: the average lags
    assert bundle.config.train.ema_decay == 0.5
    # the run's test figures are the saved head's: `dmha evaluate` of the model (each clip alone, from the
    # audio) gives the probabilities the run wrote, and the figure is scikit-learn's of those predictions
    from sklearn.metrics import f1_score

    run = ckpts.parent
    written = list(csv.DictReader(open(run / "eval_test" / "predictions.csv", newline="")))
    again = evaluate(run / "model", tmp_path / "a" / "corpus" / "manifest.csv", "test", tmp_path / "eval",
                     progress=False, report=False)
    fresh = list(csv.DictReader(open(tmp_path / "eval" / "predictions.csv", newline="")))
    assert [r["path"] for r in written] == [r["path"] for r in fresh] and len(written) == metrics["n"] == 2
    for a, b in zip(written, fresh):
        assert [float(a[k]) for k in a if k.startswith("p_")] == pytest.approx(
            [float(b[k]) for k in a if k.startswith("p_")], abs=1e-5)
    truth, predicted = [r["label"] for r in written], [r["prediction"] for r in written]
    assert metrics["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"), abs=1e-9)
    assert again["macro_f1"] == pytest.approx(metrics["macro_f1"], abs=1e-9)
    best = torch.load(ckpts / "best.ckpt", map_location="cpu", weights_only=True)
    averaged, current = best["state_dict"], best["current_model_state"]
    name = "model.layer_sum.logits"
    assert not torch.equal(averaged[name], current[name])  # the checkpoint holds the average, not the last step
    assert torch.equal(bundle.model.layer_sum.logits.detach(), averaged[name])  # ... and so does the model
    _, plain, _ = _train(tiny_encoders, tmp_path / "b", "train.layer_lr=0")  # one group, with decay
    moved = bundle.model.layer_sum.logits.abs().max()
    assert moved > 10 * plain.model.layer_sum.logits.abs().max()  # the layer weights' own LR lets them move
