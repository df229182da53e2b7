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

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value or key that dmha cannot accept."""


def rule(default: Any = dataclasses.MISSING, *, factory: Any = None, choices: tuple | None = None,
         above: float | None = None, at_least: float | None = None, below: float | None = None,
         at_most: float | None = None, note: str = "") -> Any:
    """A config field with its own rule: one of `choices`, or a range (> above or >= at_least,
    < below or <= at_most; `note` explains a special value). Checked by `from_dict`, named by key."""
    rules = {k: v for k, v in dict(choices=choices, above=above, at_least=at_least, below=below,
                                   at_most=at_most).items() if v is not None}
    if note:
        rules["note"] = note
    if factory is not None:
        return field(default_factory=factory, metadata=rules)
    return field(default=default, metadata=rules)


def _check_rule(key: str, value: Any, rules: dict) -> None:
    """The message every out-of-range key gets: 'config key K must be ..., got V'."""
    if "choices" in rules:
        if value not in rules["choices"]:
            raise ConfigError(f"config key {key} must be one of {', '.join(rules['choices'])}, got {value!r}")
        return
    low = ("(", rules["above"]) if "above" in rules else ("[", rules["at_least"]) if "at_least" in rules else None
    high = (")", rules["below"]) if "below" in rules else ("]", rules["at_most"]) if "at_most" in rules else None
    if low is None and high is None:
        return
    fails = ((low is not None and (value <= low[1] if low[0] == "(" else value < low[1]))
             or (high is not None and (value >= high[1] if high[0] == ")" else value > high[1])))
    if not fails:
        return
    if low is not None and high is not None:
        wanted = f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    elif low is not None:
        wanted = f"{'>' if low[0] == '(' else '>='} {low[1]:g}"
    else:
        wanted = f"{'<' if high[0] == ')' else '<='} {high[1]:g}"
    note = f" ({rules['note']})" if "note" in rules else ""
    raise ConfigError(f"config key {key} must be {wanted}{note}, got {value!r}")


POSITIVE, NON_NEGATIVE, FRACTION = {"above": 0}, {"at_least": 0}, {"at_least": 0.0, "below": 1.0}


@dataclass
class EncodersConfig:
    """Frozen encoders, each a registry name, a Hugging Face id or a local directory."""

    speech: str = "whisper-base"  # registry name (whisper-base, whisper-tiny.en), HF id or local dir
    text: str = "minilm"  # registry name (minilm), HF id or local dir; none = speech only (no text branch, no ASR)
    asr: str = "tiny.en"  # ASR for missing transcripts: tiny.en, base, or a CTranslate2 Whisper dir
    asr_window_s: float = rule(30.0, at_least=1.0, at_most=30.0)  # ASR window for clips up to 30 s (< 30: faster)
    # the language spoken, a Whisper code (en, de, es, ca, ...); tiny.en is English-only, base is multilingual
    asr_language: str = "en"
    speech_pad_to_s: float = rule(0.0, **NON_NEGATIVE)  # Whisper window: 0 = true length, 30 = Whisper's padded one
    # > 0: the speech encoder's top N transformer layers train, run live on the cached state L-1-N (0 = frozen)
    finetune_layers: int = rule(0, **NON_NEGATIVE)
    device: str = "cpu"  # where the encoders run in train/extract/cv (a machine setting, recorded as provenance)


@dataclass
class ModelConfig:
    """The DMHA head (paper §3-4)."""

    attention: str = rule("standard", choices=("standard", "subvector"))  # standard (eqs 1-2) | subvector (eqs 3-4)
    heads: int = rule(4, **POSITIVE)  # H, heads of the first attention layer
    hidden_layers: int = rule(4, **NON_NEGATIVE)  # N hidden layers of the classifier (each LayerNorm, GELU, dropout)
    hidden_dim: int = rule(512, **POSITIVE)  # width of the classifier's hidden layers
    dropout: float = rule(0.1, **FRACTION)  # dropout of the classifier's layers
    dim: int = rule(128, **NON_NEGATIVE)  # common width D of speech and text; 0 = the speech encoder's (the paper)
    # speaker (standardised per speaker, shrunk to the train-set statistics) | standardize (train-set mean/std
    # per layer and dim) | layernorm | none
    feature_norm: str = rule("speaker", choices=("speaker", "standardize", "layernorm", "none"))
    # speaker norm: frames of the train-set statistics mixed into each speaker's (1000 = 20 s at 50 frames/s)
    speaker_prior_frames: float = rule(1000.0, **NON_NEGATIVE)
    query_init: str = rule("zero", choices=("random", "zero"))  # queries u_j, u': zero (pooling starts as the mean)
    # what the head predicts: "category" (the label) and/or emotional attributes, each a name with a
    # declared range (attribute_ranges) read from a manifest column (attribute_columns; default: its name)
    targets: list[str] = field(default_factory=lambda: ["category"])
    attribute_columns: dict[str, str] = field(default_factory=dict)  # attribute → manifest column
    attribute_ranges: dict[str, list[float]] = field(default_factory=dict)  # attribute → [min, max]

    def check(self, prefix: str) -> None:
        if not self.targets or len(set(self.targets)) != len(self.targets) or any(not t for t in self.targets):
            raise ConfigError(f"config key {prefix}targets must list distinct non-empty names "
                              f"(\"category\" and/or attributes), got {self.targets!r}")
        attributes = [t for t in self.targets if t != "category"]
        for key in ("attribute_columns", "attribute_ranges"):
            stray = sorted(set(getattr(self, key)) - set(attributes))
            if stray:
                raise ConfigError(f"config key {prefix}{key} names {stray[0]!r}, which is not an attribute in "
                                  f"{prefix}targets ({', '.join(attributes) or 'none'})")
        for name in attributes:
            bounds = self.attribute_ranges.get(name)
            if bounds is None:
                raise ConfigError(f"config key {prefix}attribute_ranges must give [min, max] for attribute "
                                  f"{name!r} (e.g. {prefix}attribute_ranges.{name}=[1, 7])")
            if len(bounds) != 2 or not bounds[0] < bounds[1]:
                raise ConfigError(f"config key {prefix}attribute_ranges.{name} must be [min, max] with "
                                  f"min < max, got {bounds!r}")


@dataclass
class FeaturesConfig:
    """How frozen-encoder outputs are computed and cached."""

    cache_dir: str = ""  # empty = $DMHA_HOME/features
    # utterance: each waveform's own mean/std | train: the training split's (paper §5.2) | none
    normalize: str = rule("utterance", choices=("utterance", "train", "none"))
    batch_size: int = rule(8, **POSITIVE)  # utterances per encoder call during extraction
    # cached | online (encoders run in the training step) | auto: online iff aug is on
    mode: str = rule("auto", choices=("auto", "cached", "online"))
    layers: list[int] = field(default_factory=list)  # speech hidden states to keep (0 = embeddings); [] = all
    shard_mb: float = rule(256.0, **POSITIVE)  # store shard size: a killed extraction loses at most one shard

    def check(self, prefix: str) -> None:
        if any(k < 0 for k in self.layers) or len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"config key {prefix}layers must list distinct layer indices >= 0, got {self.layers!r}")


@dataclass
class TrainConfig:
    """Optimisation recipe (paper §5.2)."""

    max_epochs: int = rule(20, **POSITIVE)  # at most this many epochs (early stopping may end sooner)
    batch_size: int = rule(32, **POSITIVE)  # utterances per training step
    lr: float = rule(5e-4, **POSITIVE)  # AdamW learning rate of the head
    weight_decay: float = rule(0.01, **NON_NEGATIVE)  # AdamW decoupled weight decay
    crop_s: float = rule(5.5, **NON_NEGATIVE)  # random training crops of clips longer than this; 0 = full length
    # clips shorter than the crop: keep whole | repeat (the paper's repetition padding)
    crop_short: str = rule("keep", choices=("keep", "repeat"))
    length_buckets: bool = True  # batch utterances of similar length (less padding); false = plain random batches
    lr_patience: int = rule(5, **POSITIVE)  # halve the LR after this many epochs without dev macro-F1 gain
    lr_factor: float = rule(0.5, above=0.0, below=1.0)  # the plateau schedule multiplies the LR by this
    early_stop_patience: int = rule(10, **POSITIVE)  # stop after this many epochs without dev gain
    focal_gamma: float = rule(2.0, **NON_NEGATIVE)  # γ of the focal loss (loss = focal)
    label_smoothing: float = rule(0.1, **FRACTION)  # target mass ε spread evenly over all classes (0 = the paper)
    frame_dropout: float = rule(0.3, **FRACTION)  # fraction of speech frames each training step drops (0 = paper)
    layer_lr: float = rule(0.01, **NON_NEGATIVE)  # LR of the layer-sum weights, no decay; 0 = train.lr with decay
    encoder_lr: float = rule(5e-5, **POSITIVE)  # LR of the encoder's live top layers (encoders.finetune_layers)
    # each live layer below the top gets the LR of the one above times this (layer-wise decay; 1 = none)
    encoder_lr_decay: float = rule(1.0, above=0.0, at_most=1.0)
    # > 0: dev scores and the saved head use an EMA of the weights; 0 = off (the paper)
    ema_decay: float = rule(0.99, **FRACTION, note="0 = off")
    # with both categories and attributes in model.targets: loss = category loss + this × attribute loss
    attribute_weight: float = rule(1.0, **NON_NEGATIVE)
    # dev score for early stopping, the LR schedule and the kept checkpoint: macro_f1 | ccc (mean over the
    # attributes) | sum (of both) | auto (macro_f1 when categories are predicted, else ccc)
    dev_criterion: str = rule("auto", choices=("auto", "macro_f1", "ccc", "sum"))
    # how dev is scored for that choice, with model.feature_norm=speaker: each dev clip alone (the headline,
    # what `predict` gives a file) | grouped by the manifest's dev speakers (transductive)
    dev_scoring: str = rule("alone", choices=("alone", "grouped"))
    # with model.feature_norm=speaker, the speaker statistics each training draw is normalised by: all of its
    # speaker's training utterances | subsets: its own frames plus a random subset of the speaker's others
    # (none with probability alone_share, else 1..all), so the head meets every amount of enrolment. subsets is
    # the default since issue 27: on the speaker cv's dev folds, each clip alone, +0.013 on RAVDESS (5 of 6
    # folds) and +0.025 on CREMA-D (5 of 5), grouped -0.010 / -0.012 (benchmarks/results, docs: Results)
    speaker_stats: str = rule("subsets", choices=("all", "subsets"))
    alone_share: float = rule(0.5, at_least=0.0, at_most=1.0)  # speaker_stats=subsets: draws with no other utterance
    # several corpora: each epoch takes every item once (proportional) or repeats the smaller corpora up to
    # the largest one's size (balanced)
    corpus_sampling: str = rule("proportional", choices=("proportional", "balanced"))
    # PREFIX: train categories on the annotators' vote distribution, read from columns PREFIX<label>
    # (e.g. votes_ for CREMA-D's votes_angry, ...); empty = the hard label
    soft_targets: str = ""
    soft_target_weight: float = rule(1.0, at_least=0.0, at_most=1.0)  # share of votes in the target (rest: label)
    num_workers: int = rule(0, **NON_NEGATIVE)  # DataLoader worker processes (0: batches built in the training process)
    # per-epoch curves: csv (RUN_DIR/logs/metrics.csv, always written: reports read it) | tensorboard (also
    # TensorBoard event files in RUN_DIR/logs/, for `tensorboard --logdir RUN_DIR/logs`; needs dmha[tensorboard])
    logger: str = rule("csv", choices=("csv", "tensorboard"))
    accelerator: str = "cpu"  # Lightning accelerator: cpu, gpu, auto (a machine setting)
    devices: int = rule(1, **POSITIVE)  # devices per node: > 1 trains with DDP (a machine setting)
    num_nodes: int = rule(1, **POSITIVE)  # nodes for multi-node DDP (a machine setting)
    # Lightning precision, or auto: bf16-mixed where the hardware has bf16 units
    precision: str = rule("32-true", choices=("32-true", "32", "auto", "bf16-mixed", "16-mixed", "bf16-true",
                                              "16-true", "64-true"))


PAPER_AUGMENT_TECHNIQUES = ("speed", "reverb", "noise")  # paper §5.2: the default
# the channel of a new microphone or line (dmha.channel): telephone band, low-bitrate codecs, gain with clipping
CHANNEL_TECHNIQUES = ("telephone", "codec", "gain")
AUGMENT_TECHNIQUES = (*PAPER_AUGMENT_TECHNIQUES, *CHANNEL_TECHNIQUES)


@dataclass
class AugmentConfig:
    """Online augmentation of training waveforms (paper §5.2); off by default."""

    enabled: bool = False  # augment the training waveforms online (encoders run in every step)
    p: float = rule(0.5, at_least=0.0, at_most=1.0)  # probability that a waveform is augmented at all
    speeds: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])  # speed perturbation factors (soxr)
    snr_db_min: float = 0.0  # lowest SNR of additive noise, dB
    snr_db_max: float = 15.0  # highest SNR of additive noise, dB
    rir_dir: str = ""  # e.g. OpenSLR RIRS_NOISES; empty = synthetic shoebox rooms
    noise_dir: str = ""  # e.g. MUSAN; empty = coloured noise or babble of training utterances
    # one drawn per augmented waveform: speed, reverb, noise (the paper's, the default), telephone, codec, gain
    techniques: list[str] = field(default_factory=lambda: list(PAPER_AUGMENT_TECHNIQUES))
    cached_copies: int = rule(0, **NON_NEGATIVE)  # >0: K augmented copies per utterance encoded once

    def check(self, prefix: str) -> None:
        if not self.speeds or any(s <= 0 for s in self.speeds):
            raise ConfigError(f"config key {prefix}speeds must be a non-empty list of factors > 0, got {self.speeds!r}")
        if self.snr_db_min > self.snr_db_max:
            raise ConfigError(f"config key {prefix}snr_db_min ({self.snr_db_min}) exceeds {prefix}snr_db_max "
                              f"({self.snr_db_max})")
        if not self.techniques:
            raise ConfigError(f"config key {prefix}techniques must not be empty (valid: {', '.join(AUGMENT_TECHNIQUES)})")
        for name in self.techniques:
            if name not in AUGMENT_TECHNIQUES:
                raise ConfigError(f"config key {prefix}techniques: unknown technique {name!r} "
                                  f"(valid: {', '.join(AUGMENT_TECHNIQUES)})")


@dataclass
class DecisionConfig:
    """How probabilities become a label at evaluate/predict time (thresholds live in thresholds.json)."""

    prior: str = "none"  # none | uniform | "label:weight,...": shift from the training prior to this one

    def check(self, prefix: str) -> None:
        prior = self.prior.strip()
        if prior not in ("none", "uniform") and ":" not in prior:
            raise ConfigError(f"config key {prefix}prior must be none, uniform or 'label:weight,...', got {prior!r}")


@dataclass
class Config:
    """Everything needed to train, and stored with the model to rebuild it."""

    seed: int = 0  # seeds everything: seeded CPU runs are reproducible on one machine and thread count
    loss: str = rule("wce", choices=("wce", "focal"))  # wce (inverse-frequency weighted cross-entropy) | focal
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    aug: AugmentConfig = field(default_factory=AugmentConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)

    def check(self, prefix: str) -> None:
        """Keys of different sections that must agree about what the head predicts."""
        category = "category" in self.model.targets
        attributes = [t for t in self.model.targets if t != "category"]
        if self.train.dev_criterion in ("macro_f1", "sum") and not category:
            raise ConfigError(f"config key train.dev_criterion={self.train.dev_criterion} needs \"category\" in "
                              f"model.targets ({', '.join(self.model.targets)})")
        if self.train.dev_criterion in ("ccc", "sum") and not attributes:
            raise ConfigError(f"config key train.dev_criterion={self.train.dev_criterion} needs an attribute in "
                              "model.targets (e.g. model.targets=[\"category\", \"arousal\"])")
        if self.train.soft_targets and not category:
            raise ConfigError("config key train.soft_targets needs \"category\" in model.targets")


def validate(section: Any, prefix: str = "") -> None:
    """Every field's rule, then each section's own cross-field check, sections in declaration order."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, f"{prefix}{f.name}.")
        else:
            _check_rule(f"{prefix}{f.name}", value, f.metadata)
    if hasattr(section, "check"):
        section.check(prefix)


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
    validate(config)
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
    if get_origin(kind) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key} must be a table, got {value!r}")
        _, item = get_args(kind)
        return {str(name): _coerce(element, item, f"{key}.{name}") for name, element in value.items()}
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
