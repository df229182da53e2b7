"""What a recognizer returns: one utterance's Prediction, and a speaker's enrolled statistics."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prediction:
    """One utterance's result; `attention` holds both stages' weights when asked for.

    For an ensemble, `probs` is the mean of the members' probabilities and `votes` holds each
    member's label; `label` is the hard vote, so it need not be the argmax of `probs`. A model that
    predicts emotional attributes gives them in `attributes` ({name: value} in each attribute's own
    scale; an ensemble's are the members' mean); an attribute-only model has no label (None, probs {}).
    An input the speech gate heard no speech in has no label and no probabilities either, and
    `reason` says why ("no speech found (...)"); `reason` is None whenever an emotion was given.
    """

    label: str | None
    probs: dict[str, float]
    transcript: str
    path: str | None = None
    attention: dict[str, np.ndarray] | None = field(default=None, repr=False)
    votes: dict[str, str] | None = None
    attributes: dict[str, float] | None = None
    reason: str | None = None

    def top(self, k: int | None = None) -> list[dict[str, float | str]]:
        """The `k` most probable labels (all when None), as [{"label", "score"}], most probable first."""
        ranked = sorted(self.probs.items(), key=lambda kv: -kv[1])
        return [{"label": label, "score": score} for label, score in ranked[:k]]

    def to_dict(self) -> dict:
        """The `predict --format jsonl` record."""
        record = {"path": self.path, "label": self.label, "probs": self.probs, "transcript": self.transcript}
        if self.attributes is not None:
            record["attributes"] = self.attributes
        if self.votes is not None:
            record["votes"] = self.votes
        if self.reason is not None:
            record["reason"] = self.reason
        return record


@dataclass
class SpeakerProfile:
    """One speaker's frame statistics under each speech encoder of a model (`EmotionRecognizer.enrol`).

    A model trained with `model.feature_norm=speaker` normalises a recording by its speaker's
    statistics when given a profile, and by the recording's own (shrunk toward the training
    corpus's) when not. Only moments are kept, never the audio or the features."""

    moments: dict = field(repr=False)  # speech-encoder key → Moments
    recordings: int = 0
    seconds: float = 0.0
