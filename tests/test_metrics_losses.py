import numpy as np
import torch

from dmha.losses import FocalLoss, WeightedCrossEntropy, build_loss, inverse_frequency_weights
from dmha.metrics import classification_report, plot_confusion, write_confusion_csv


def test_report_on_hand_made_example():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    r = classification_report(y_true, y_pred, ["a", "b", "c"])
    # a: P=1/2 R=1/2 F=1/2; b: P=2/3 R=1 F=0.8; c: P=1 R=1/2 F=2/3
    assert np.isclose(r["macro_f1"], (0.5 + 0.8 + 2 / 3) / 3)
    assert np.isclose(r["accuracy"], 4 / 6) and np.isclose(r["uar"], (0.5 + 1 + 0.5) / 3)
    assert r["n"] == 6 and r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert r["per_class"]["b"]["support"] == 2


def test_confusion_outputs(tmp_path):
    cm = np.array([[3, 1], [0, 4]])
    write_confusion_csv(cm, ["x", "y"], tmp_path / "cm.csv")
    assert (tmp_path / "cm.csv").read_text().splitlines()[1] == "x,3,1"
    plot_confusion(cm, ["x", "y"], tmp_path / "cm.png")
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"


def test_inverse_frequency_weights():
    w = inverse_frequency_weights([10, 30, 0, 60])
    assert w[2] == 0 and w[0] > w[1] > w[3]
    assert torch.isclose(w[0] / w[3], torch.tensor(6.0))


def test_focal_loss_reduces_to_ce_at_gamma_zero_and_downweights_easy():
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.3]])
    target = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert torch.isclose(FocalLoss(0.0)(logits, target), ce)
    assert FocalLoss(2.0)(logits, target) < ce
    assert isinstance(build_loss("wce", [1, 2]), WeightedCrossEntropy)
