"""dmha: Double Multi-Head Attention multimodal speech emotion recognition.

The public API, imported on first use (torch and transformers take seconds to import, so
`import dmha` itself stays instant):

    >>> from dmha import EmotionRecognizer                   # doctest: +SKIP
    >>> rec = EmotionRecognizer.load("demo_out/model")       # doctest: +SKIP
    >>> rec.predict("clip.wav").label                        # doctest: +SKIP
    'happy'
    >>> rec.predict_long("meeting.flac").write_csv("meeting.csv")   # doctest: +SKIP
"""
from __future__ import annotations

import importlib

__version__ = "0.2.0"

_EXPORTS = {
    "EmotionRecognizer": "dmha.inference",
    "Prediction": "dmha.prediction",
    "Timeline": "dmha.timeline",
    "Segment": "dmha.timeline",
    "AudioError": "dmha.audio",
    "load_audio": "dmha.audio",
    "export_onnx": "dmha.export",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dmha' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
