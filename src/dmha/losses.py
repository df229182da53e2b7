"""Class-imbalance-aware losses of the paper (§5.2): weighted cross-entropy and focal loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def inverse_frequency_weights(counts: list[int]) -> torch.Tensor:
    """Weight each class by 1/frequency (normalised to mean 1); absent classes get weight 0."""
    counts_t = torch.tensor(counts, dtype=torch.float32)
    weights = torch.where(counts_t > 0, counts_t.sum() / counts_t.clamp(min=1), torch.zeros_like(counts_t))
    present = (counts_t > 0).sum().clamp(min=1)
    return weights * present / weights.sum()


class FocalLoss(nn.Module):
    """FL(p_t) = -(1 - p_t)^γ log p_t (Lin et al.), averaged over the batch.

    With label smoothing ε the target is q = (1-ε)·onehot + ε/K and FL = -Σ_k q_k (1 - p_k)^γ log p_k,
    which is the paper's focal loss at ε = 0."""

    def __init__(self, gamma: float = 2.0, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=-1)  # (B, K)
        if not self.label_smoothing:
            log_pt = log_p.gather(1, target[:, None]).squeeze(1)  # log p_t: (B,)
            return (-(1 - log_pt.exp()) ** self.gamma * log_pt).mean()
        k = logits.shape[-1]
        q = F.one_hot(target, k).to(log_p.dtype) * (1 - self.label_smoothing) + self.label_smoothing / k
        return (-(q * (1 - log_p.exp()) ** self.gamma * log_p).sum(-1)).mean()


def build_loss(name: str, class_counts: list[int], focal_gamma: float = 2.0,
               label_smoothing: float = 0.0) -> nn.Module:
    """'wce' → CrossEntropy with inverse-frequency weights; 'focal' → FocalLoss(γ); both label-smoothed by ε."""
    losses = {
        "wce": lambda: nn.CrossEntropyLoss(weight=inverse_frequency_weights(class_counts),
                                           label_smoothing=label_smoothing),
        "focal": lambda: FocalLoss(focal_gamma, label_smoothing),
    }
    if name not in losses:
        raise ValueError(f"unknown loss {name!r} (valid: {', '.join(losses)})")
    return losses[name]()
