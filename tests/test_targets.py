"""What the head learns besides the label (dmha.targets, dmha.losses): vote distributions, attributes,
their losses and scores, and the config keys that declare them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dmha.config import ConfigError, load
from dmha.data.manifest import Item, ManifestError
from dmha.losses import FocalLoss, TargetLoss, WeightedCrossEntropy, inverse_frequency_weights
from dmha.metrics import concordance
from dmha.metrics import attribute_report
from dmha.targets import attribute_values, attributes_of, dev_criterion, item_targets, vote_distributions

LABELS = ["angry", "happy", "sad"]


def _item(label: str, **extra: str) -> Item:
    return Item(path=Path(f"/c/{label}-{len(extra)}.wav"), label=label, split="train", extra=dict(extra))


# --- config ----------------------------------------------------------------------------------

def test_targets_and_ranges_are_declared_and_checked():
    cfg = load(None, ['model.targets=["category", "arousal"]', "model.attribute_ranges.arousal=[1, 7]",
                      "model.attribute_columns.arousal=EmoAct", "train.dev_criterion=sum"])
    (arousal,) = attributes_of(cfg.model)
    assert (arousal.name, arousal.column, arousal.low, arousal.high) == ("arousal", "EmoAct", 1.0, 7.0)
    assert arousal.scale(4.0) == pytest.approx(0.5) and arousal.unscale(0.5) == pytest.approx(4.0)
    assert dev_criterion(cfg) == "sum"
    assert dev_criterion(load(None, ['model.targets=["arousal"]', "model.attribute_ranges.arousal=[1, 7]"])) == "ccc"
    assert dev_criterion(load()) == "macro_f1" and attributes_of(load().model) == []
    for overrides, message in [
        (['model.targets=["arousal"]'], "must give \\[min, max\\] for attribute 'arousal'"),
        (['model.targets=["arousal"]', "model.attribute_ranges.arousal=[7, 1]"], "min < max"),
        (["model.attribute_ranges.valence=[1, 7]"], "names 'valence', which is not an attribute"),
        (['model.targets=["category", "category"]'], "distinct"),
        (["model.targets=[]"], "distinct non-empty"),
        (['model.targets=["arousal"]', "model.attribute_ranges.arousal=[1, 7]", "train.dev_criterion=macro_f1"],
         "needs \"category\""),
        (["train.dev_criterion=ccc"], "needs an attribute"),
        (['model.targets=["arousal"]', "model.attribute_ranges.arousal=[1, 7]", "train.soft_targets=votes_"],
         "soft_targets needs \"category\""),
        (["model.attribute_ranges=3"], "must be a table"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load(None, overrides)


# --- reading them from the manifest ----------------------------------------------------------

def test_vote_distributions_mix_votes_with_the_label_and_fall_back_to_it():
    items = [_item("angry", votes_angry="3", votes_happy="1", votes_sad="0"),
             _item("sad", votes_angry="0", votes_happy="0", votes_sad=""),  # no votes: the label
             _item("happy", votes_angry="2", votes_happy="2", votes_sad="0")]
    votes = vote_distributions(items, LABELS, "votes_", 1.0, "m.csv")
    assert np.allclose(votes, [[0.75, 0.25, 0], [0, 0, 1], [0.5, 0.5, 0]])
    mixed = vote_distributions(items, LABELS, "votes_", 0.5, "m.csv")
    assert np.allclose(mixed[0], [0.875, 0.125, 0]) and np.allclose(mixed[2], [0.25, 0.75, 0])
    assert np.allclose(mixed.sum(1), 1)
    with pytest.raises(ManifestError, match="m.csv: train.soft_targets='votes_' needs a column per label; missing votes_sad"):
        vote_distributions([_item("angry", votes_angry="1", votes_happy="1")], LABELS, "votes_", 1.0, "m.csv")
    with pytest.raises(ManifestError, match=r"angry-3.wav: votes_happy='-1' is not a vote count >= 0"):
        vote_distributions([_item("angry", votes_angry="1", votes_happy="-1", votes_sad="0")], LABELS, "votes_", 1.0, "m.csv")
    with pytest.raises(ManifestError, match="votes_sad='many'"):
        vote_distributions([_item("angry", votes_angry="1", votes_happy="0", votes_sad="many")], LABELS, "votes_", 1, "m")


def test_attribute_values_are_scaled_empty_cells_are_nan_and_bad_ones_named():
    cfg = load(None, ['model.targets=["category", "arousal", "valence"]', "model.attribute_ranges.arousal=[1, 7]",
                      "model.attribute_ranges.valence=[0, 100]", "model.attribute_columns.valence=val"])
    attributes = attributes_of(cfg.model)
    values = attribute_values([_item("sad", arousal="7", val="25"), _item("happy", arousal="", val="100")],
                              attributes, "m.csv")
    assert values[0].tolist() == [1.0, 0.25] and np.isnan(values[1, 0]) and values[1, 1] == 1.0
    with pytest.raises(ManifestError, match="m.csv: no column 'val' for attribute 'valence'"):
        attribute_values([_item("sad", arousal="2")], attributes, "m.csv")
    with pytest.raises(ManifestError, match=r"arousal=8 is outside the declared range \[1, 7\] of 'arousal'"):
        attribute_values([_item("sad", arousal="8", val="1")], attributes, "m.csv")
    with pytest.raises(ManifestError, match="arousal='high' is not a number"):
        attribute_values([_item("sad", arousal="high", val="1")], attributes, "m.csv")
    extras = item_targets([_item("sad", arousal="4", val="50", votes_angry="1", votes_happy="0", votes_sad="1")],
                          LABELS, load(None, [*(f"model.{k}" for k in ('targets=["category", "arousal", "valence"]',
                                                                        "attribute_ranges.arousal=[1, 7]",
                                                                        "attribute_ranges.valence=[0, 100]",
                                                                        "attribute_columns.valence=val")),
                                              "train.soft_targets=votes_"]), "m.csv")
    assert np.allclose(extras[0]["soft"], [0.5, 0, 0.5]) and np.allclose(extras[0]["attributes"], [0.5, 0.5])


# --- losses and scores -----------------------------------------------------------------------

@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_weighted_cross_entropy_of_one_hot_distributions_is_torchs(smoothing):
    torch.manual_seed(0)
    logits, target = torch.randn(7, 3), torch.tensor([0, 1, 2, 2, 2, 1, 0])
    weight = inverse_frequency_weights([2, 2, 3])
    loss = WeightedCrossEntropy(weight, smoothing)
    expected = F.cross_entropy(logits, target, weight=weight, label_smoothing=smoothing)
    assert torch.allclose(loss(logits, target), expected, atol=1e-6)
    assert torch.allclose(loss(logits, F.one_hot(target, 3).float()), expected, atol=1e-6)
    focal = FocalLoss(2.0, smoothing)
    assert torch.allclose(focal(logits, F.one_hot(target, 3).float()), focal(logits, target), atol=1e-6)


def test_class_weights_keep_their_meaning_with_votes():
    """Moving target mass from a frequent class to a rare one costs more when that rare class is wrong."""
    logits = torch.tensor([[2.0, 0.0]])  # the model says class 0
    loss = WeightedCrossEntropy(torch.tensor([0.5, 1.5]))  # class 1 is rare
    plain = WeightedCrossEntropy(torch.ones(2))
    soft = torch.tensor([[0.5, 0.5]])
    # -Σ w q log p / Σ w q: the rare class's share weighs three times the frequent one's
    log_p = torch.log_softmax(logits, -1)[0]
    want = -(0.25 * log_p[0] + 0.75 * log_p[1])
    assert torch.allclose(loss(logits, soft), want) and loss(logits, soft) > plain(logits, soft)


def test_concordance_matches_its_definition_ignores_nan_and_the_loss_uses_it():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 2))
    pred = 0.7 * ref + rng.normal(scale=0.5, size=ref.shape) + 0.3
    ccc = concordance(torch.tensor(pred), torch.tensor(ref)).numpy()
    for a in range(2):
        report = attribute_report(pred[:, a], ref[:, a])
        assert ccc[a] == pytest.approx(report["ccc"], abs=1e-9)
        assert report["pearson"] == pytest.approx(np.corrcoef(pred[:, a], ref[:, a])[0, 1])
        assert report["rmse"] == pytest.approx(np.sqrt(np.mean((pred[:, a] - ref[:, a]) ** 2)))
    assert concordance(torch.tensor(ref), torch.tensor(ref)).numpy() == pytest.approx([1, 1])
    gappy = ref.copy()
    gappy[::5, 0] = np.nan  # an empty cell: left out, not counted as a value
    kept = ~np.isnan(gappy[:, 0])
    assert concordance(torch.tensor(pred), torch.tensor(gappy))[0].item() == pytest.approx(
        attribute_report(pred[kept, 0], ref[kept, 0])["ccc"])
    assert attribute_report(pred[:, 0], gappy[:, 0])["n"] == kept.sum()
    logits = torch.zeros(4, 2)
    batch = {"target": torch.tensor([0, 1, 0, 1]), "attributes": torch.tensor([[0.1], [0.9], [0.2], [0.8]])}
    perfect = TargetLoss(None, 1.0)(logits, batch["attributes"].clone(), batch)
    assert perfect.item() == pytest.approx(0.0, abs=1e-6)
    both = TargetLoss(WeightedCrossEntropy(torch.ones(2)), 0.5)(logits, torch.full((4, 1), 0.5), batch)
    assert both.item() == pytest.approx(np.log(2) + 0.5 * 1.0, abs=1e-5)  # constant prediction: CCC 0
