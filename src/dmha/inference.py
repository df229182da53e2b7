"""EmotionRecognizer: audio (+ optional transcript) → emotion, with live frozen encoders and the trained head."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .audio import AudioError, audio_duration, load_audio, load_audio_array
from .features import collate
from .modeldir import ModelBundle, load_model_dir, predict_proba
from .pipeline import speech_encoder, text_encoder
from .encoders import load_transcriber

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One utterance's result; `attention` holds both stages' weights when asked for."""

    label: str
    probs: dict[str, float]
    transcript: str
    path: str | None = None
    attention: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """The `predict --format jsonl` record."""
        return {"path": self.path, "label": self.label, "probs": self.probs, "transcript": self.transcript}


class EmotionRecognizer:
    """A loaded model directory ready to predict.

    Example:
        >>> rec = EmotionRecognizer.load("runs/ravdess/model")     # doctest: +SKIP
        >>> rec.predict("clip.wav").label                          # doctest: +SKIP
        'angry'
    """

    def __init__(self, bundle: ModelBundle, device: str = "cpu"):
        self.bundle, self.device = bundle, device
        encoders = bundle.config.encoders
        self.speech = speech_encoder(encoders)
        self.text = text_encoder(encoders)
        self._asr = None
        if self.speech.info.identity != bundle.speech.identity:
            log.warning("speech encoder identity differs from training: %s vs %s",
                        self.speech.info.identity, bundle.speech.identity)

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu") -> "EmotionRecognizer":
        """Load a model directory (JSON + safetensors; never unpickles)."""
        return cls(load_model_dir(model_dir, device=device), device)

    @property
    def labels(self) -> list[str]:
        return list(self.bundle.labels)

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[str]:
        """ASR with the model's configured transcriber (loaded on first use)."""
        if self._asr is None:
            enc = self.bundle.config.encoders
            self._asr = load_transcriber(enc.asr, device=enc.device)
        return self._asr.transcribe(waves)

    def predict_waves(self, waves: Sequence[np.ndarray], transcripts: Sequence[str | None],
                      return_attention: bool = False) -> list[Prediction]:
        """16 kHz mono waveforms (one batch) → predictions; missing transcripts come from ASR."""
        missing = [i for i, t in enumerate(transcripts) if t is None]
        texts = list(transcripts)
        for i, text in zip(missing, self.transcribe([waves[i] for i in missing]) if missing else []):
            texts[i] = text
        speech = self.speech.encode([self.bundle.norm.apply(w) for w in waves])  # [(L, T, D)]
        text = self.text.encode(texts)  # [(T2, D)]
        batch = collate([{"speech": s, "text": t} for s, t in zip(speech, text)])
        probs, attention = predict_proba(self.bundle.model, batch, return_attention)
        return [self._prediction(probs[i], texts[i], attention, i, batch) for i in range(len(waves))]

    def _prediction(self, probs: torch.Tensor, text: str, attention: dict, i: int, batch: dict) -> Prediction:
        labels = self.bundle.labels
        pred = Prediction(labels[int(probs.argmax())], {l: float(p) for l, p in zip(labels, probs)}, text)
        if attention:
            t1, t2 = int(batch["speech_mask"][i].sum()), int(batch["text_mask"][i].sum())
            pred.attention = _unpad_attention(attention, i, t1, t2, batch["speech_mask"].shape[1])
        return pred

    def predict(self, inputs, *, sample_rate: int | None = None, transcript: str | None = None,
                transcripts: Sequence[str | None] | None = None, batch_size: int = 1,
                return_attention: bool = False):
        """A path or waveform → Prediction; a list of paths → list of Predictions (bad files raise AudioError)."""
        if isinstance(inputs, np.ndarray):
            if sample_rate is None:
                raise ValueError("sample_rate is required when predicting from a waveform array")
            wave = load_audio_array(inputs, sample_rate)
            return self.predict_waves([wave], [transcript], return_attention)[0]
        if isinstance(inputs, (str, Path)):
            return self.predict([inputs], transcripts=[transcript], return_attention=return_attention)[0]
        preds, errors = self.predict_files(inputs, transcripts=transcripts, batch_size=batch_size,
                                           return_attention=return_attention)
        if errors:
            raise AudioError(errors[0][0], errors[0][1])
        return preds

    def predict_files(self, paths: Sequence[str | Path], transcripts: Sequence[str | None] | None = None,
                      batch_size: int = 1, return_attention: bool = False, progress=None
                      ) -> tuple[list[Prediction | None], list[tuple[str, str]]]:
        """Batch prediction in length-sorted buckets; bad files are skipped and reported, never fatal."""
        transcripts = list(transcripts) if transcripts is not None else [None] * len(paths)
        results: list[Prediction | None] = [None] * len(paths)
        errors: list[tuple[str, str]] = []
        durations = {}
        for i, path in enumerate(paths):
            try:
                durations[i] = audio_duration(path)
            except AudioError as err:
                errors.append((str(path), err.reason))
        order = sorted(durations, key=durations.get)
        for start in range(0, len(order), batch_size):
            index, waves = [], []
            for i in order[start:start + batch_size]:
                try:
                    waves.append(load_audio(paths[i]))
                    index.append(i)
                except AudioError as err:
                    errors.append((str(paths[i]), err.reason))
            if waves:
                for i, pred in zip(index, self.predict_waves(waves, [transcripts[i] for i in index],
                                                             return_attention)):
                    pred.path = str(paths[i])
                    results[i] = pred
            if progress is not None:
                progress(len(order[start:start + batch_size]))
        return results, errors


def _unpad_attention(attention: dict, i: int, t1: int, t2: int, t1_pad: int) -> dict[str, np.ndarray]:
    """Item i's attention weights with padding removed (positions: speech frames, then text tokens)."""
    keep = torch.cat([torch.arange(t1), t1_pad + torch.arange(t2)])
    first, pooling = attention["first"][i], attention["pooling"][i]
    if first.dim() == 3:  # standard MHA: (H, T, T) weights, pooling over its T outputs
        first, pooling = first[:, keep][:, :, keep], pooling[keep]
    else:  # sub-vector MHA: (H, T) weights, pooling over its H head vectors
        first = first[:, keep]
    return {"first": first.numpy(), "pooling": pooling.numpy(), "speech_frames": np.array(t1)}
