"""The model directory: config.json + model.safetensors + labels.json, enough alone to predict.

config.json records what rebuilding and using the model needs (the head's dimensions, the encoders,
the waveform normalisation, the labels' decision settings) and, apart from it, the machine settings
it was trained with (`trained_on`: devices, workers, cache folder), which are provenance only: a
loaded model runs where it is loaded, so a directory trained on a GPU server predicts on a laptop.

Optional: thresholds.json (per-class decision thresholds, `dmha tune-thresholds`), calibration.json
(the temperature of the probabilities, fitted on dev speakers: dmha.calibration) and training_log.csv
(loss and dev macro-F1 per epoch, for reports).

Loading reads JSON and safetensors only, so a model directory from a stranger cannot run code.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .config import Config, from_dict, to_dict
from .decision import DecisionRule, parse_prior, train_prior
from .audio import WaveNorm
from .calibration import CalibrationError, read_calibration
from .fileio import atomic_write_text
from .model import DMHA, HeadDims

log = logging.getLogger(__name__)
FORMAT_VERSION = 2  # 2: "head" (dimensions) and "trained_on" (machine settings); 1 still loads
# Settings of the training machine, not of the model: recorded, never applied where the model is loaded.
MACHINE_SETTINGS = (("encoders", "device"), ("train", "accelerator"), ("train", "devices"), ("train", "num_nodes"),
                    ("train", "num_workers"), ("features", "cache_dir"))
THRESHOLDS_FILE = "thresholds.json"
TRAINING_LOG_FILE = "training_log.csv"


class ModelDirError(ValueError):
    """A model directory that is missing a file or cannot be read."""


@dataclass
class EncoderSpec:
    """What the head was trained on: which encoder, and the shape of what it returns."""

    name: str
    identity: str
    num_layers: int
    dim: int


@dataclass
class ModelBundle:
    """A loaded model directory: the head in eval mode plus what it needs around it."""

    model: DMHA
    config: Config
    labels: list[str]
    speech: EncoderSpec
    text: EncoderSpec
    norm: WaveNorm
    meta: dict
    thresholds: dict | None = None  # thresholds.json: {"thresholds": {label: t}, "prior": ..., ...}
    directory: Path | None = None
    trained_on: dict | None = None  # the training machine's settings (provenance; see MACHINE_SETTINGS)
    calibration: dict | None = None  # calibration.json: {"temperature": T, ...} (dmha.calibration)

    def prior_in_effect(self, prior: str | None = None) -> str:
        """`prior` when given (an evaluate/predict override), else the model's configured decision.prior."""
        return self.config.decision.prior if prior is None else prior

    def decision_rule(self, use_thresholds: bool = True, prior: str | None = None, warn: bool = True) -> DecisionRule:
        """The model's decision: its configured prior (or `prior`), then its thresholds if tuned."""
        prior = self.prior_in_effect(prior)
        target = parse_prior(prior, self.labels)
        source = train_prior(self.meta.get("class_counts", {}), self.labels) if target is not None else None
        thresholds = None
        if use_thresholds and self.thresholds is not None:
            tuned_prior = self.thresholds.get("prior", "none")
            if tuned_prior != prior and warn:
                log.warning("%s: thresholds were tuned with decision.prior=%s, now %s; re-run tune-thresholds",
                            self.directory, tuned_prior, prior)
            thresholds = [self.thresholds["thresholds"][label] for label in self.labels]
        return DecisionRule(self.labels, thresholds, source, target)


def head_dims(speech: EncoderSpec, text: EncoderSpec, num_classes: int) -> HeadDims:
    """The head's dimensions for these encoders and classes."""
    return HeadDims(speech.num_layers, speech.dim, text.dim, num_classes)


def build_model(config: Config, dims: HeadDims, speech: EncoderSpec, speech_encoder=None) -> DMHA:
    """The one constructor of a head, for training and for loading: sized by `dims`; with
    `encoders.finetune_layers` = N > 0 it carries copies of the speech encoder's top N layers
    (`speech_encoder`, or loaded from the config when not given; checked against `speech`)."""
    model = DMHA(dims, config.model)
    if config.encoders.finetune_layers:
        model.top = top_layers(config, speech, speech_encoder)
    return model


def top_layers(config: Config, speech: EncoderSpec, speech_encoder=None):
    """The trainable copies of the speech encoder's top layers, checked against the encoder the head was
    trained on: the cached states below them must come from the same weights."""
    from .encoders.fingerprint import mismatch, same_encoder
    from .encoders.registry import speech_encoder as load_speech
    from .encoders.top_layers import TopLayers

    if config.features.layers:
        raise ValueError("encoders.finetune_layers needs every hidden state (features.layers = [])")
    encoder = speech_encoder or load_speech(config.encoders, config.features.layers)
    if not same_encoder(encoder.info.identity, speech.identity):
        raise ValueError(f"the speech encoder {encoder.info.name} is not the one the head was trained on "
                         f"({mismatch(encoder.info.identity, speech.identity)}): the fine-tuned layers need the "
                         "same frozen layers below them")
    return TopLayers(encoder, config.encoders.finetune_layers)


def machine_settings(config: Config) -> dict:
    """{"encoders.device": ..., ...}: the MACHINE_SETTINGS values of a config."""
    return {f"{section}.{key}": getattr(getattr(config, section), key) for section, key in MACHINE_SETTINGS}


def for_this_machine(config: Config, device: str | None = None) -> Config:
    """The config a loaded model runs with here: the training machine's settings replaced by this
    one's (encoders on `device`, or on the recorded device where it exists here, else the CPU; one
    process, no workers; the recorded cache folder only if it exists here, else the default)."""
    if device is None:
        device = config.encoders.device if _device_exists(config.encoders.device) else "cpu"
    cache_dir = config.features.cache_dir if config.features.cache_dir and Path(config.features.cache_dir).is_dir() else ""
    return dataclasses.replace(
        config,
        encoders=dataclasses.replace(config.encoders, device=device),
        features=dataclasses.replace(config.features, cache_dir=cache_dir),
        train=dataclasses.replace(config.train, accelerator="cpu" if device == "cpu" else "gpu", devices=1,
                                  num_nodes=1, num_workers=0))


def _device_exists(device: str) -> bool:
    if device == "cpu":
        return True
    import torch

    return device.startswith("cuda") and torch.cuda.is_available()


def save_model_dir(directory: Path, bundle: ModelBundle) -> None:
    """Write the directory as a whole: into a temp sibling, then renamed into place, so a crash
    leaves either the previous model directory or the new one, never a mix (an old thresholds.json
    is dropped with the old weights it was tuned for)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
        _write_model_files(tmp, bundle)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.rename(directory, old)
            os.rename(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_model_files(directory: Path, bundle: ModelBundle) -> None:
    payload = {
        "format_version": FORMAT_VERSION,
        "dmha_version": __version__,
        "head": dataclasses.asdict(bundle.model.dims),
        "config": to_dict(bundle.config),
        "trained_on": bundle.trained_on or machine_settings(bundle.config),
        "speech_encoder": vars(bundle.speech),
        "text_encoder": vars(bundle.text),
        "normalization": {"mean": bundle.norm.mean, "std": bundle.norm.std, "per_utterance": bundle.norm.per_utterance},
        "meta": bundle.meta,
    }
    state = {k: v.detach().contiguous() for k, v in bundle.model.state_dict().items()}
    save_file(state, str(directory / "model.safetensors"))
    (directory / "labels.json").write_text(json.dumps(bundle.labels), encoding="utf-8")
    (directory / "config.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")


def load_model_dir(directory: str | Path, device: str = "cpu", encoder_device: str | None = "same") -> ModelBundle:
    """Rebuild the head from a model directory (JSON + safetensors only; nothing unpickled), on `device`.

    The bundle's config is `for_this_machine`: its encoders run on `device` too (encoder_device="same"),
    on another device, or (None) where training ran if that device exists here."""
    directory = Path(directory)
    for name in ("config.json", "labels.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise ModelDirError(f"{directory}: not a dmha model directory (missing {name})")
    try:
        payload = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        labels = json.loads((directory / "labels.json").read_text(encoding="utf-8"))
        trained = from_dict(payload["config"])
        speech = EncoderSpec(**payload["speech_encoder"])
        text = EncoderSpec(**payload["text_encoder"])
        norm = WaveNorm(**payload["normalization"])
        dims = HeadDims(**payload["head"]) if "head" in payload else head_dims(speech, text, len(labels))  # format 1
        if dims.num_classes != len(labels):
            raise ValueError(f"{dims.num_classes} classes in the head, {len(labels)} labels in labels.json")
    except (ValueError, KeyError, TypeError) as err:
        raise ModelDirError(f"{directory / 'config.json'}: invalid model config ({err})") from err
    config = for_this_machine(trained, device if encoder_device == "same" else encoder_device)
    try:  # the tuned layers' shapes come from the base encoder (their weights: below)
        model = build_model(config, dims, speech)
    except ValueError as err:
        raise ModelDirError(f"{directory}: {err}") from err
    try:
        model.load_state_dict(load_file(str(directory / "model.safetensors"), device=device))
    except SafetensorError as err:  # not a safetensors file at all (e.g. a pickle posing as one)
        raise ModelDirError(f"{directory / 'model.safetensors'}: not a valid safetensors file ({err})") from None
    except (RuntimeError, OSError) as err:
        raise ModelDirError(f"{directory / 'model.safetensors'}: weights do not fit the config ({err})") from err
    model.to(device).eval()
    try:
        calibration = read_calibration(directory)
    except CalibrationError as err:
        raise ModelDirError(str(err)) from None
    model.temperature = calibration["temperature"] if calibration else 1.0
    return ModelBundle(model, config, labels, speech, text, norm, payload.get("meta", {}),
                       read_thresholds(directory, labels), directory,
                       payload.get("trained_on") or machine_settings(trained), calibration)


def read_thresholds(directory: Path, labels: list[str]) -> dict | None:
    """thresholds.json if present, checked against the labels (one value in [0, 1] per label)."""
    path = directory / THRESHOLDS_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        values = payload["thresholds"]
        ok = set(values) == set(labels) and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in values.values())
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ModelDirError(f"{path}: invalid thresholds file ({err})") from err
    if not ok:
        raise ModelDirError(f"{path}: needs one threshold in [0, 1] for each label ({', '.join(labels)})")
    return payload


def write_thresholds(directory: Path, payload: dict) -> None:
    atomic_write_text(Path(directory) / THRESHOLDS_FILE, json.dumps(payload, indent=2))
