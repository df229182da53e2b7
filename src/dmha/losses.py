"""Losses: the paper's class-imbalance-aware ones (§5.2, weighted cross-entropy and focal loss), for a
hard label or a target distribution (annotators' votes), and 1 − CCC for emotional attributes."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import concordance


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

    def forward(self, logits: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """target: class indices (B,) or distributions (B, K) (soft targets); `allowed` (B, K): the classes
        each item's corpus offered (the softmax, the smoothing and the loss cover only those)."""
        if allowed is not None:
            log_p, allowed = _masked_log_softmax(logits, allowed)
            q = _smoothed(target, allowed, self.label_smoothing, log_p.dtype)
            return (-(q * (1 - log_p.exp()) ** self.gamma * log_p).sum(-1)).mean()
        log_p = F.log_softmax(logits, dim=-1)  # (B, K)
        if not self.label_smoothing and target.dim() == 1:
            log_pt = log_p.gather(1, target[:, None]).squeeze(1)  # log p_t: (B,)
            return (-(1 - log_pt.exp()) ** self.gamma * log_pt).mean()
        k = logits.shape[-1]
        q = F.one_hot(target, k).to(log_p.dtype) if target.dim() == 1 else target.to(log_p.dtype)
        q = q * (1 - self.label_smoothing) + self.label_smoothing / k
        return (-(q * (1 - log_p.exp()) ** self.gamma * log_p).sum(-1)).mean()


def _masked_log_softmax(logits: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p over each row's allowed classes, and 0 (not −inf) elsewhere, so 0 · log p stays 0."""
    allowed = allowed.to(torch.bool)
    log_p = F.log_softmax(logits.float().masked_fill(~allowed, float("-inf")), dim=-1)  # (B, K)
    return torch.where(allowed, log_p, torch.zeros_like(log_p)), allowed


def _smoothed(target: torch.Tensor, allowed: torch.Tensor, epsilon: float, dtype) -> torch.Tensor:
    """(1 − ε)·q + ε spread evenly over each row's allowed classes: (B, K)."""
    q = F.one_hot(target, allowed.shape[-1]).to(dtype) if target.dim() == 1 else target.to(dtype)
    share = allowed.to(dtype) / allowed.sum(-1, keepdim=True).clamp(min=1)
    return q * (1 - epsilon) + epsilon * share


class WeightedCrossEntropy(nn.Module):
    """Class-weighted cross-entropy of a hard label or a target distribution q (B, K):
    Σ_i Σ_k w_k q̃_ik (−log p_ik) / Σ_i Σ_k w_k q_ik, with q̃ the label-smoothed q.

    For one-hot q this is exactly torch's weighted, label-smoothed mean (so hard labels train as before),
    and the class weights keep their meaning with votes: a rare class's share of an item's target
    counts as much as a rare label would."""

    def __init__(self, weight: torch.Tensor, label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("weight", weight)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """`allowed` (B, K): the classes each item's corpus offered; the softmax and the smoothing cover
        only those, so no item is taught that a class its corpus never offered is wrong."""
        if allowed is not None:
            log_p, allowed = _masked_log_softmax(logits, allowed)
            q = F.one_hot(target, logits.shape[-1]).float() if target.dim() == 1 else target.float()
            smoothed = _smoothed(q, allowed, self.label_smoothing, log_p.dtype)
            return -(smoothed * self.weight * log_p).sum() / (q * self.weight).sum().clamp(min=1e-12)
        if target.dim() == 1:
            return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=self.label_smoothing)
        log_p = F.log_softmax(logits.float(), dim=-1)  # (B, K)
        q = target.to(log_p.dtype)
        smoothed = q * (1 - self.label_smoothing) + self.label_smoothing / q.shape[-1]
        return -(smoothed * self.weight * log_p).sum() / (q * self.weight).sum().clamp(min=1e-12)


class TargetLoss(nn.Module):
    """What a training step minimises: the category loss (hard labels, or the vote distribution when the
    batch carries `soft`), plus `attribute_weight` × mean over attributes of 1 − CCC over the batch."""

    def __init__(self, category: nn.Module | None, attribute_weight: float = 0.0):
        super().__init__()
        self.category, self.attribute_weight = category, attribute_weight

    def forward(self, logits: torch.Tensor, attributes: torch.Tensor | None, batch: dict) -> torch.Tensor:
        loss = logits.new_zeros(())
        if self.category is not None:
            target = batch.get("soft", batch["target"])
            if "allowed" in batch:  # several corpora: each item's loss over its own corpus's labels
                loss = loss + self.category(logits, target, batch["allowed"])
            else:
                loss = loss + self.category(logits, target)
        if attributes is not None and self.attribute_weight:
            target = batch["attributes"].to(attributes.dtype)
            valid = (~torch.isnan(target)).sum(0) > 1  # a CCC needs two values
            if valid.any():
                ccc = concordance(attributes.float(), target.float())[valid]
                loss = loss + self.attribute_weight * (1 - ccc).mean()
        return loss


def build_loss(name: str, class_counts: list[float], focal_gamma: float = 2.0,
               label_smoothing: float = 0.0) -> nn.Module:
    """'wce' → cross-entropy with inverse-frequency weights; 'focal' → FocalLoss(γ); both label-smoothed by ε.
    `class_counts` may be fractional: the training targets' summed mass per class (soft targets)."""
    losses = {
        "wce": lambda: WeightedCrossEntropy(inverse_frequency_weights(class_counts), label_smoothing),
        "focal": lambda: FocalLoss(focal_gamma, label_smoothing),
    }
    if name not in losses:
        raise ValueError(f"unknown loss {name!r} (valid: {', '.join(losses)})")
    return losses[name]()
