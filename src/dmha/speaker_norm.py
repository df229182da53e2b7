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

A model is used with every amount of enrolment, from the clip alone (`predict` of one file) to many
of the speaker's recordings. With `train.speaker_stats=subsets` each training draw of an utterance is
normalised by its own frames plus a random subset of its speaker's other training utterances
(`SpeakerPool`): none with probability `train.alone_share`, else a uniformly drawn number of them, so
the head learns from the whole range it will meet instead of only from complete speakers.
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
    an utterance whose group is None is a group of its own. `speeches` yields (L, T, D) tensors,
    callables returning them (read once each), or each utterance's own Moments."""
    own = [s if isinstance(s, Moments) else Moments.of(s() if callable(s) else s) for s in speeches]
    summed: dict[Hashable, Moments] = {}
    for group, m in zip(groups, own):
        if group is not None:
            summed[group] = summed[group] + m if group in summed else m
    return [summed[g] if g is not None else m for g, m in zip(groups, own)]


@dataclass(frozen=True)
class SpeakerPool:
    """One training utterance's own moments and those of its speaker's other utterances; each `draw`
    is a random enrolment (see the module docstring)."""

    own: Moments
    others: tuple[Moments, ...]
    alone_share: float

    def draw(self) -> Moments:
        """Own moments plus k others: k = 0 with probability alone_share, else uniform in 1..len(others).
        Uses torch's global generator, which Lightning seeds (and restores on resume)."""
        if not self.others or float(torch.rand(())) < self.alone_share:
            return self.own
        k = int(torch.randint(1, len(self.others) + 1, ()))
        drawn = self.own
        for j in torch.randperm(len(self.others))[:k].tolist():
            drawn = drawn + self.others[j]
        return drawn


SPEAKER_KEYS = ("speaker_frames", "speaker_total", "speaker_squares")


def batch_moments(moments: Sequence[Moments]) -> dict[str, torch.Tensor]:
    """The batch entries the head reads: speaker_frames (B,), speaker_total and speaker_squares (B, L, D)."""
    return dict(zip(SPEAKER_KEYS, (torch.tensor([m.frames for m in moments], dtype=torch.float64),
                                   torch.stack([m.total for m in moments]), torch.stack([m.squares for m in moments]))))


def batch_speaker_moments(batch: dict) -> dict[str, torch.Tensor] | None:
    """The speaker moments a collated batch carries (see batch_moments), or None when it carries none
    (each item is then normalised alone)."""
    return {k: batch[k] for k in SPEAKER_KEYS} if SPEAKER_KEYS[0] in batch else None


def draw_moments(ref) -> Moments | None:
    """An item's speaker moments for this draw: its fixed ones, a random enrolment from its SpeakerPool
    (training with train.speaker_stats=subsets), or None (alone)."""
    return ref.speaker.draw() if isinstance(ref.speaker, SpeakerPool) else ref.speaker


def collate_moments(moments: Sequence[Moments | None]) -> dict[str, torch.Tensor]:
    """The batch entries of the items' speaker moments when every item has them (else none: each item is
    then normalised alone)."""
    return batch_moments(moments) if moments and all(m is not None for m in moments) else {}


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


def speaker_group(item) -> tuple[str, str, str] | None:
    """An item's speaker group: its speaker within its corpus and split (so no split's audio normalises
    another's, and speaker `1` of one corpus is not speaker `1` of another), or None when the manifest
    names no speaker (the item is then its own group)."""
    if not getattr(item, "speaker", None):
        return None
    return (getattr(item, "extra", {}).get("corpus") or "", item.split, item.speaker)


def alone(refs: Sequence) -> list:
    """The feature refs without speaker statistics: each utterance normalised by itself (and the prior),
    as `predict` sees one file."""
    return [replace(ref, speaker=None) for ref in refs]


def _own_moments(refs: Sequence, progress: bool) -> list[Moments]:
    from tqdm.auto import tqdm

    return [Moments.of(ref.speech()) for ref in tqdm(refs, desc="speaker statistics", disable=not progress, leave=False)]


def with_speaker_moments(items: Sequence, refs: Sequence, progress: bool = False) -> list:
    """The feature refs with each one's speaker moments attached (`FeatureRef.speaker`), grouped by
    `speaker_group` of the matching item; reads every utterance's stored features once."""
    moments = group_moments(_own_moments(refs, progress), [speaker_group(item) for item in items])
    return [replace(ref, speaker=m) for ref, m in zip(refs, moments)]


def with_speaker_pools(items: Sequence, refs: Sequence, alone_share: float, progress: bool = False) -> list:
    """The feature refs with a `SpeakerPool` attached: for training with `train.speaker_stats=subsets`.
    An utterance without a speaker has no others: it is always normalised alone."""
    own = _own_moments(refs, progress)
    groups = [speaker_group(item) for item in items]
    members: dict = {}
    for i, group in enumerate(groups):
        if group is not None:
            members.setdefault(group, []).append(i)
    pools = []
    for i, (ref, group) in enumerate(zip(refs, groups)):
        others = tuple(own[j] for j in members.get(group, []) if j != i) if group is not None else ()
        pools.append(replace(ref, speaker=SpeakerPool(own[i], others, alone_share)))
    return pools
