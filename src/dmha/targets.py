"""What the head learns from each item besides its label: the annotators' vote distribution
(`train.soft_targets`) and emotional attributes (`model.targets`), both read from manifest columns.

Attributes are learnt in [0, 1], scaled from their declared range (`model.attribute_ranges`), and
reported in that range again, so a model trained on MSP-Podcast's 1-7 scale predicts on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import Config, ModelConfig
from .data.manifest import Item, ManifestError

CATEGORY = "category"


@dataclass(frozen=True)
class Attribute:
    """One emotional attribute: its name, the manifest column it is read from, its declared range."""

    name: str
    column: str
    low: float
    high: float

    def scale(self, value):
        """Declared range → [0, 1] (what the head learns)."""
        return (value - self.low) / (self.high - self.low)

    def unscale(self, value):
        """[0, 1] → the declared range (what users read)."""
        return self.low + value * (self.high - self.low)


def predicts_category(model: ModelConfig) -> bool:
    return CATEGORY in model.targets


def attributes_of(model: ModelConfig) -> list[Attribute]:
    """The attributes a head predicts, in the order of its attribute outputs."""
    return [Attribute(name, model.attribute_columns.get(name, name), *model.attribute_ranges[name])
            for name in model.targets if name != CATEGORY]


def unscaled(attributes: Sequence[Attribute], values: np.ndarray) -> np.ndarray:
    """(N, A) values in [0, 1] → each attribute's declared range."""
    return np.stack([a.unscale(values[:, k]) for k, a in enumerate(attributes)], axis=1) if len(attributes) \
        else np.zeros((len(values), 0))


def dev_criterion(config: Config) -> str:
    """The dev score that picks the checkpoint: `auto` is macro-F1 when categories are predicted, else
    the mean CCC of the attributes."""
    if config.train.dev_criterion != "auto":
        return config.train.dev_criterion
    return "macro_f1" if predicts_category(config.model) else "ccc"


def attribute_values(items: Sequence[Item], attributes: Sequence[Attribute], source) -> np.ndarray:
    """(N, A) attribute values scaled to [0, 1]; NaN where a cell is empty (left out of loss and scores).

    Raises:
        ManifestError: a column no item has, a value that is not a number, or one outside its range.
    """
    values = np.full((len(items), len(attributes)), np.nan, dtype=np.float32)
    for a, attribute in enumerate(attributes):
        if items and not any(attribute.column in item.extra for item in items):
            raise ManifestError(f"manifest {source}: no column {attribute.column!r} for attribute {attribute.name!r}")
        for i, item in enumerate(items):
            cell = item.extra.get(attribute.column, "").strip()
            if not cell:
                continue
            try:
                value = float(cell)
            except ValueError:
                raise ManifestError(f"manifest {source}: {item.path}: {attribute.column}={cell!r} is not a number") from None
            if not (attribute.low <= value <= attribute.high) or math.isnan(value):
                raise ManifestError(f"manifest {source}: {item.path}: {attribute.column}={cell} is outside the declared "
                                    f"range [{attribute.low:g}, {attribute.high:g}] of {attribute.name!r} "
                                    f"(model.attribute_ranges.{attribute.name})")
            values[i, a] = attribute.scale(value)
    return values


def vote_distributions(items: Sequence[Item], labels: Sequence[str], prefix: str, weight: float,
                       source) -> np.ndarray:
    """(N, K) target distributions: `weight` × the votes in columns PREFIX<label>, normalised, plus
    (1 − weight) × the one-hot label. An item with no votes (empty cells or all zero) keeps its label.

    Raises:
        ManifestError: a vote column missing from the manifest, or a vote that is not a number >= 0.
    """
    columns = [f"{prefix}{label}" for label in labels]
    missing = [c for c in columns if items and not any(c in item.extra for item in items)]
    if missing:
        raise ManifestError(f"manifest {source}: train.soft_targets={prefix!r} needs a column per label; "
                            f"missing {', '.join(missing)}")
    index = {label: k for k, label in enumerate(labels)}
    targets = np.zeros((len(items), len(labels)), dtype=np.float32)
    for i, item in enumerate(items):
        votes = np.zeros(len(labels), dtype=np.float64)
        for k, column in enumerate(columns):
            cell = item.extra.get(column, "").strip()
            try:
                votes[k] = float(cell) if cell else 0.0
            except ValueError:
                votes[k] = -1.0
            if not votes[k] >= 0:
                raise ManifestError(f"manifest {source}: {item.path}: {column}={cell!r} is not a vote count >= 0")
        hard = np.zeros(len(labels))
        hard[index[item.label]] = 1.0
        targets[i] = weight * votes / votes.sum() + (1 - weight) * hard if votes.sum() > 0 else hard
    return targets


def item_targets(items: Sequence[Item], labels: Sequence[str], config: Config, source) -> list[dict]:
    """Per item, what its batch carries besides the label index: `soft` (K,) and `attributes` (A,)."""
    extras: list[dict] = [{} for _ in items]
    if config.train.soft_targets:
        soft = vote_distributions(items, labels, config.train.soft_targets, config.train.soft_target_weight, source)
        for extra, row in zip(extras, soft):
            extra["soft"] = row
    attributes = attributes_of(config.model)
    if attributes:
        for extra, row in zip(extras, attribute_values(items, attributes, source)):
            extra["attributes"] = row
    return extras
