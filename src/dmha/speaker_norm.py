"""Speaker normalisation: each speaker's frozen features standardised by that speaker's own statistics.

Emotion is heard as a departure from how a person usually sounds, and frozen encoders carry much of
*who* speaks in every frame. Standardising each speaker's frames by that speaker's mean and std (per
layer and dimension; labels are never used) removes the speaker's offset. Speaker cross-validation
(README, "Cross-validation") measured it as the largest single gain on both corpora.

A speaker's statistics are a MAP estimate: the speaker's frames plus `prior_frames` frames of the
training corpus's statistics. Many frames give the speaker's own statistics; one short clip stays
close to the corpus's, so a recording predicted alone (no speaker known) is normalised almost as
plain standardisation would, instead of by its own mean, which would erase the emotion it carries.

Statistics travel as `Moments` (frame count, Σh, Σh² in float64) of a group of utterances: the
store's features of a speaker's utterances (`group_moments`), or the frames of one utterance in
the head when none are given (`FeatureNorm` in model.py).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Hashable, Sequence

import torch


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of a set of frames: count, Σh and Σh² per layer and dimension (float64)."""

    frames: float
    total: torch.Tensor  # (L, D)
    squares: torch.Tensor  # (L, D)

    @classmethod
    def of(cls, speech: torch.Tensor) -> "Moments":
        """speech (L, T, D) → its moments over T."""
        x = speech.double()
        return cls(float(x.shape[1]), x.sum(1), (x * x).sum(1))

    def __add__(self, other: "Moments") -> "Moments":
        return Moments(self.frames + other.frames, self.total + other.total, self.squares + other.squares)


def group_moments(speeches: Sequence, groups: Sequence[Hashable | None]) -> list[Moments]:
    """Each utterance's group moments: the sum over every utterance of its group (e.g. its speaker);
    an utterance whose group is None is a group of its own. `speeches` yields (L, T, D) tensors, or
    callables returning them (read once each)."""
    own = [Moments.of(s() if callable(s) else s) for s in speeches]
    summed: dict[Hashable, Moments] = {}
    for group, m in zip(groups, own):
        if group is not None:
            summed[group] = summed[group] + m if group in summed else m
    return [summed[g] if g is not None else m for g, m in zip(groups, own)]


SPEAKER_KEYS = ("speaker_frames", "speaker_total", "speaker_squares")


def batch_moments(moments: Sequence[Moments]) -> dict[str, torch.Tensor]:
    """The batch entries the head reads: speaker_frames (B,), speaker_total and speaker_squares (B, L, D)."""
    return dict(zip(SPEAKER_KEYS, (torch.tensor([m.frames for m in moments], dtype=torch.float64),
                                   torch.stack([m.total for m in moments]), torch.stack([m.squares for m in moments]))))


def shrunk_z_stats(frames: torch.Tensor, z_total: torch.Tensor, z_squares: torch.Tensor, prior_frames: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """MAP mean and std in corpus-standardised units z = (h - m0) / s0, where the prior is N(0, 1):
    μ = Σz / (n + r), E[z²] = (Σz² + r) / (n + r), σ = sqrt(E[z²] - μ²). frames (B,), sums (B, L, D)."""
    n = frames.to(z_total.dtype).reshape(-1, *([1] * (z_total.dim() - 1))) + prior_frames
    mean = z_total / n
    var = (z_squares + prior_frames) / n - mean * mean
    return mean, var.clamp(min=1e-4).sqrt()


def raw_to_z(frames: torch.Tensor, total: torch.Tensor, squares: torch.Tensor, mean0: torch.Tensor,
             std0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Σz and Σz² of z = (h - m0) / s0 from the raw Σh and Σh² (float64, where the cancellation is harmless)."""
    n = frames.double().reshape(-1, 1, 1)
    m0, s0 = mean0.double(), std0.double()
    total, squares = total.double(), squares.double()
    z_total = (total - n * m0) / s0
    z_squares = (squares - 2 * m0 * total + n * m0 * m0) / (s0 * s0)
    return z_total, z_squares


def speaker_group(item) -> tuple[str, str] | None:
    """An item's speaker group: its speaker within its split (so no split's audio normalises
    another's), or None when the manifest names no speaker (the item is then its own group)."""
    return (item.split, item.speaker) if getattr(item, "speaker", None) else None


def with_speaker_moments(items: Sequence, refs: Sequence, progress: bool = False) -> list:
    """The feature refs with each one's speaker moments attached (`FeatureRef.speaker`), grouped by
    `speaker_group` of the matching item; reads every utterance's stored features once."""
    from tqdm.auto import tqdm

    speeches = [ref.speech for ref in tqdm(refs, desc="speaker statistics", disable=not progress, leave=False)]
    moments = group_moments(speeches, [speaker_group(item) for item in items])
    return [replace(ref, speaker=m) for ref, m in zip(refs, moments)]
