"""`dmha export`: the fusion + classifier head of a model directory as an ONNX graph.

Only the head is exported (layer weighting, fusion, first attention, pooling, classifier,
softmax): its inputs are the frozen encoders' outputs, which stay in transformers / CTranslate2.
A JSON sidecar beside the .onnx (and the same facts in the graph's metadata) says what those
inputs are, so the file can be used without dmha.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .ensemble import ENSEMBLE_FILE, is_ensemble
from .fileio import atomic_path, atomic_write_text
from .modeldir import ModelBundle, load_model_dir
from .targets import attributes_of, predicts_category

log = logging.getLogger(__name__)

INPUTS = ("speech", "speech_mask", "text", "text_mask")
OUTPUT = "probs"
ATTRIBUTES_OUTPUT = "attributes"  # a second output, for models that predict emotional attributes
# Example sizes for tracing; the time and batch axes are exported as dynamic.
_EXAMPLE_BATCH, _EXAMPLE_FRAMES, _EXAMPLE_TOKENS = 2, 13, 7


class ExportError(RuntimeError):
    """The model cannot be exported (an ensemble, or the [export] extra is missing)."""


class _Head(nn.Module):
    """DMHA with softmax on top and masks as plain inputs: the graph that is exported. A model with
    attributes also returns them, mapped from [0, 1] to their declared ranges inside the graph."""

    def __init__(self, model: nn.Module, ranges: list[tuple[float, float]] = ()):
        super().__init__()
        self.model = model
        self.register_buffer("low", torch.tensor([lo for lo, _ in ranges], dtype=torch.float32))
        self.register_buffer("span", torch.tensor([hi - lo for lo, hi in ranges], dtype=torch.float32))

    def forward(self, speech, speech_mask, text=None, text_mask=None):
        if text is None:  # a speech-only model (encoders.text = "none"): the graph takes speech alone
            text, text_mask = speech.new_zeros(speech.shape[0], 0, 0), speech_mask[:, :0]
        out = self.model(speech, speech_mask, text, text_mask)
        probs = torch.softmax(out.logits.float() / self.model.temperature, dim=-1)  # (B, K), calibrated
        if out.attributes is None:
            return probs
        return probs, self.low + out.attributes.float() * self.span  # (B, K), (B, A)


def export_onnx(model_dir: str | Path, out: str | Path, opset: int = 18) -> Path:
    """Export a model directory's head to ONNX; writes OUT and its sidecar OUT-with-.json.

    Inputs of the graph: speech (B, L, T1, Ds) float32, speech_mask (B, T1) bool, text
    (B, T2, Dt) float32, text_mask (B, T2) bool; output probs (B, K) float32, in the label
    order of the sidecar. B, T1 and T2 are dynamic. Class probabilities only: the decision rule
    (prior correction, thresholds) is described in the sidecar, not applied in the graph.

    Args:
        model_dir: a model directory (ensembles are refused: export each member).
        out: the .onnx file to write.
        opset: ONNX opset version.

    Returns:
        The sidecar's path.

    Raises:
        ExportError: an ensemble directory, or onnx / onnxscript missing.
        ModelDirError: not a model directory.

    Example:
        >>> export_onnx("runs/ravdess/model", "head.onnx")   # doctest: +SKIP
        PosixPath('head.json')
    """
    model_dir, out = Path(model_dir), Path(out)
    if is_ensemble(model_dir):
        raise ExportError(f"{model_dir}: is an ensemble ({ENSEMBLE_FILE}); export each member directory "
                          f"under {model_dir / 'members'} on its own (the vote is a few lines over their outputs)")
    onnx = _require("onnx")
    _require("onnxscript")
    bundle = load_model_dir(model_dir)
    head = _Head(bundle.model, [(a.low, a.high) for a in attributes_of(bundle.config.model)]).eval()
    meta = _sidecar(bundle, opset)
    with atomic_path(out) as tmp:
        _trace(head, bundle, tmp, opset)
        graph = onnx.load(str(tmp))
        graph.metadata_props.add(key="dmha", value=json.dumps(meta))  # the sidecar's facts, inside the file
        graph.metadata_props.add(key="labels", value=json.dumps(meta["labels"]))
        onnx.save(graph, str(tmp))
    sidecar = out.with_suffix(".json")
    atomic_write_text(sidecar, json.dumps(meta, indent=2) + "\n")
    log.info("exported %s → %s (+ %s)", model_dir, out, sidecar.name)
    return sidecar


def _trace(head: _Head, bundle: ModelBundle, path: Path, opset: int) -> None:
    """torch.export-based ONNX export with dynamic batch and time axes."""
    b, t1, t2 = _EXAMPLE_BATCH, _EXAMPLE_FRAMES, _EXAMPLE_TOKENS
    example = (torch.randn(b, bundle.speech.num_layers, t1, bundle.speech.dim),  # (B, L, T1, Ds)
               torch.ones(b, t1, dtype=torch.bool),  # (B, T1)
               torch.randn(b, t2, bundle.text.dim),  # (B, T2, Dt)
               torch.ones(b, t2, dtype=torch.bool))  # (B, T2)
    example[1][1, t1 // 2:] = False  # a padded item, so the masked path is traced
    outputs = [OUTPUT, ATTRIBUTES_OUTPUT] if attributes_of(bundle.config.model) else [OUTPUT]
    example[3][1, t2 // 2:] = False
    batch, frames, tokens = (torch.export.Dim(n, min=1) for n in ("batch", "speech_frames", "text_tokens"))
    shapes = {"speech": {0: batch, 2: frames}, "speech_mask": {0: batch, 1: frames},
              "text": {0: batch, 1: tokens}, "text_mask": {0: batch, 1: tokens}}
    names = graph_inputs(bundle)
    example, shapes = example[:len(names)], {k: v for k, v in shapes.items() if k in names}
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # it warns about every torchvision op it cannot register
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's FutureWarnings and axis-renaming notes
            torch.onnx.export(head, example, str(path), input_names=list(names), output_names=outputs,
                              dynamic_shapes=shapes, opset_version=opset, dynamo=True, verbose=False,
                              external_data=False)
    finally:
        exporter_log.setLevel(level)


def graph_inputs(bundle: ModelBundle) -> tuple[str, ...]:
    """The graph's inputs: speech and text with their masks, or speech alone for a speech-only model."""
    return INPUTS if bundle.text.dim else INPUTS[:2]


def _sidecar(bundle: ModelBundle, opset: int) -> dict:
    """What a user of the .onnx alone needs: labels, input shapes, which encoders make the inputs."""
    config = bundle.config
    rule = bundle.decision_rule(warn=False)
    attributes = attributes_of(config.model)
    return {
        "format": "dmha-head-onnx", "format_version": 1, "dmha_version": __version__, "opset": opset,
        "labels": list(bundle.labels),
        "inputs": {key: value for key, value in {
            "speech": {"shape": ["batch", bundle.speech.num_layers, "speech_frames", bundle.speech.dim],
                       "dtype": "float32", "what": "all kept hidden states of the speech encoder"},
            "speech_mask": {"shape": ["batch", "speech_frames"], "dtype": "bool", "what": "true on real frames"},
            "text": {"shape": ["batch", "text_tokens", bundle.text.dim], "dtype": "float32",
                     "what": "last hidden state of the text encoder"},
            "text_mask": {"shape": ["batch", "text_tokens"], "dtype": "bool", "what": "true on real tokens"},
        }.items() if key in graph_inputs(bundle)},
        "output": {"probs": {"shape": ["batch", len(bundle.labels)], "dtype": "float32",
                             "what": "softmax class probabilities, in `labels` order"
                                     + ("" if predicts_category(config.model) else
                                        " (not trained: this model predicts attributes only)")},
                   **({"attributes": {"shape": ["batch", len(attributes)], "dtype": "float32",
                                      "what": "emotional attributes in `attributes` order, each in its range"}}
                      if attributes else {})},
        "attributes": {a.name: {"range": [a.low, a.high], "column": a.column} for a in attributes},
        "speech_encoder": {**vars(bundle.speech), "layers": list(config.features.layers),
                           "window_s": config.encoders.speech_pad_to_s},
        "text_encoder": vars(bundle.text),
        "waveform_normalization": {"mean": bundle.norm.mean, "std": bundle.norm.std,
                                   "per_utterance": bundle.norm.per_utterance,
                                   "what": "per_utterance: each waveform minus its own mean, over its own std; else (w - mean) / std; applied to the 16 kHz waveform before the speech encoder"},
        "attention": config.model.attention,
        "calibration": {"temperature": bundle.model.temperature,
                        "what": "in the graph: probs = softmax(logits / temperature) (calibration.json; 1 = none)"},
        "decision": {"prior": bundle.prior_in_effect(),
                     "thresholds": None if rule.thresholds is None else
                     {label: float(t) for label, t in zip(bundle.labels, rule.thresholds)},
                     "train_class_counts": bundle.meta.get("class_counts"),
                     "what": "not in the graph: dmha's decision rule applied to `probs`"},
    }


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ExportError(f"ONNX export needs {module}: pip install 'dmha[export]'") from None
