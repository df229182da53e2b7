"""Experiment configuration: nested dataclasses, loaded from TOML and `--set a.b=value` overrides.

This is the only place configuration is parsed. Unknown keys, wrong types and out-of-range
values are errors that name the key, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, get_args, get_origin, get_type_hints

from .augment import AugmentConfig, validate_config as _validate_aug

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value or key that dmha cannot accept."""


@dataclass
class EncodersConfig:
    """Frozen encoders, each a registry name, a Hugging Face id or a local directory."""

    speech: str = "whisper-base"
    text: str = "minilm"
    asr: str = "tiny.en"
    asr_window_s: float = 30.0  # ASR encoder window for clips up to 30 s (< 30: faster, see README)
    speech_pad_to_s: float = 0.0  # Whisper window: 0 = true length, 30 = Whisper's padded window
    device: str = "cpu"


@dataclass
class ModelConfig:
    """The DMHA head (paper §3-4)."""

    attention: str = "standard"  # standard (eqs 1-2) | subvector (eqs 3-4)
    heads: int = 4
    hidden_layers: int = 4
    hidden_dim: int = 512
    dropout: float = 0.1
    dim: int = 128  # common width D of speech and text; 0 = the speech encoder's width (the paper)
    feature_norm: str = "standardize"  # standardize (train-set mean/std per layer and dim) | layernorm | none
    query_init: str = "zero"  # attention queries u_j, u': zero (pooling starts as the mean) | random


@dataclass
class FeaturesConfig:
    """How frozen-encoder outputs are computed and cached."""

    cache_dir: str = ""  # empty = $DMHA_HOME/features
    normalize: str = "utterance"  # utterance: each waveform's own mean/std | train: the training split's (paper §5.2) | none
    batch_size: int = 8
    mode: str = "auto"  # cached | online (encoders run in the training step) | auto: online iff aug is on
    layers: list[int] = field(default_factory=list)  # speech hidden states to keep (0 = embeddings); [] = all
    shard_mb: float = 256.0  # feature-store shard size: a killed extraction loses at most one unwritten shard


@dataclass
class TrainConfig:
    """Optimisation recipe (paper §5.2)."""

    max_epochs: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    crop_s: float = 5.5  # random training crops of clips longer than this; 0 = full length
    crop_short: str = "keep"  # clips shorter than the crop: keep whole | repeat (the paper's repetition padding)
    length_buckets: bool = True  # batch utterances of similar length (less padding); false = plain random batches
    lr_patience: int = 5  # halve the LR after this many epochs without dev macro-F1 gain
    lr_factor: float = 0.5
    early_stop_patience: int = 10
    focal_gamma: float = 2.0
    label_smoothing: float = 0.1  # target mass ε spread evenly over all classes (0 = the paper)
    frame_dropout: float = 0.3  # fraction of speech frames each training step drops (0 = the paper)
    layer_lr: float = 0.01  # learning rate of the layer-sum weights, without weight decay; 0 = train.lr with it
    ema_decay: float = 0.99  # > 0: dev scores and the saved head use an EMA of the weights; 0 = off (the paper)
    num_workers: int = 0
    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    precision: str = "32-true"  # Lightning precision, or auto: bf16-mixed where the hardware has bf16 units


@dataclass
class DecisionConfig:
    """How probabilities become a label at evaluate/predict time (thresholds live in thresholds.json)."""

    prior: str = "none"  # none | uniform | "label:weight,...": shift from the training prior to this one


@dataclass
class Config:
    """Everything needed to train, and stored with the model to rebuild it."""

    seed: int = 0
    loss: str = "wce"  # wce (inverse-frequency weighted cross-entropy) | focal
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    aug: AugmentConfig = field(default_factory=AugmentConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)


_CHOICES = {
    "loss": ("wce", "focal"),
    "model.attention": ("standard", "subvector"),
    "train.crop_short": ("keep", "repeat"),
    "model.feature_norm": ("standardize", "layernorm", "none"),
    "model.query_init": ("random", "zero"),
    "features.normalize": ("utterance", "train", "none"),
    "features.mode": ("auto", "cached", "online"),
    "train.precision": ("32-true", "32", "auto", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"),
}
_POSITIVE = {
    "model.heads", "model.hidden_dim", "features.batch_size", "features.shard_mb", "train.max_epochs",
    "train.batch_size", "train.lr", "train.lr_patience", "train.early_stop_patience",
    "train.devices", "train.num_nodes",
}
_NON_NEGATIVE = {
    "model.hidden_layers", "model.dim", "encoders.speech_pad_to_s", "train.weight_decay",
    "train.crop_s", "train.focal_gamma", "train.num_workers", "train.layer_lr",
}


# Keys older versions wrote (e.g. into a model's config.json) that no longer mean anything: accepted
# and ignored with a warning, so old model directories and configs keep loading.
_RETIRED = {
    "features.memory_gb": "the feature store is memory-mapped; the page cache keeps hot shards in RAM",
}


def load(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Build a Config from an optional TOML file and `a.b=value` overrides (later wins)."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"{path}: cannot read config ({err})") from err
    for item in overrides:
        _apply_override(raw, item)
    return from_dict(raw)


def from_dict(raw: dict[str, Any]) -> Config:
    """Validate a nested dict (e.g. a model's config.json section) into a Config."""
    config = _build(Config, raw, prefix="")
    _validate(config)
    return config


def to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict, for config.json."""
    return dataclasses.asdict(config)


def _apply_override(raw: dict[str, Any], item: str) -> None:
    """Set raw[a][b] = value for `a.b=value`; the value is read as a TOML literal, else a string."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. model.attention=subvector")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part!r} is a value, not a section")
    node[leaf] = value


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    """Recursively turn a dict into dataclass `cls`, rejecting unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'} must be a table")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for name in [n for n in raw if f"{prefix}{n}" in _RETIRED]:
        log.warning("config key %s%s is no longer used (%s); ignored", prefix, name, _RETIRED[f"{prefix}{name}"])
        raw = {k: v for k, v in raw.items() if k != name}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]} (valid in this section: {', '.join(sorted(names))})"
        )
    kwargs = {}
    for name, value in raw.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, kind, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, kind: type, key: str) -> Any:
    """Accept the declared type (ints where floats are expected); anything else is an error."""
    if get_origin(kind) is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {key} must be a list, got {value!r}")
        (item,) = get_args(kind)
        return [_coerce(element, item, f"{key}[{i}]") for i, element in enumerate(value)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"config key {key} must be {kind.__name__}, got {value!r}")
    return value


def _validate(config: Config) -> None:
    """Range and choice checks that the types alone cannot express."""
    flat = _flatten(to_dict(config))
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"config key {key} must be one of {', '.join(choices)}, got {flat[key]!r}")
    for key in _POSITIVE:
        if flat[key] <= 0:
            raise ConfigError(f"config key {key} must be > 0, got {flat[key]!r}")
    for key in _NON_NEGATIVE:
        if flat[key] < 0:
            raise ConfigError(f"config key {key} must be >= 0, got {flat[key]!r}")
    try:
        _validate_aug(config.aug)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    layers = config.features.layers
    if any(k < 0 for k in layers) or len(set(layers)) != len(layers):
        raise ConfigError(f"config key features.layers must list distinct layer indices >= 0, got {layers!r}")
    prior = config.decision.prior.strip()
    if prior not in ("none", "uniform") and ":" not in prior:
        raise ConfigError(f"config key decision.prior must be none, uniform or 'label:weight,...', got {prior!r}")
    if not 0.0 < config.train.lr_factor < 1.0:
        raise ConfigError(f"config key train.lr_factor must be in (0, 1), got {config.train.lr_factor!r}")
    if not 1.0 <= config.encoders.asr_window_s <= 30.0:
        raise ConfigError(f"config key encoders.asr_window_s must be in [1, 30], got {config.encoders.asr_window_s!r}")
    for key in ("label_smoothing", "frame_dropout"):
        if not 0.0 <= getattr(config.train, key) < 1.0:
            raise ConfigError(f"config key train.{key} must be in [0, 1), got {getattr(config.train, key)!r}")
    if not 0.0 <= config.train.ema_decay < 1.0:
        raise ConfigError(f"config key train.ema_decay must be in [0, 1) (0 = off), got {config.train.ema_decay!r}")
    if not 0.0 <= config.model.dropout < 1.0:
        raise ConfigError(f"config key model.dropout must be in [0, 1), got {config.model.dropout!r}")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} → {'a.b': 1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
