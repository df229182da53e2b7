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
from .model import unpad_attention
from .ensemble import Member, combine, load_members
from .modeldir import ModelBundle, predict_proba
from .pipeline import speech_encoder, text_encoder, transcriber

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One utterance's result; `attention` holds both stages' weights when asked for.

    For an ensemble, `probs` is the mean of the members' probabilities and `votes` holds each
    member's label; `label` is the hard vote, so it need not be the argmax of `probs`.
    """

    label: str
    probs: dict[str, float]
    transcript: str
    path: str | None = None
    attention: dict[str, np.ndarray] | None = field(default=None, repr=False)
    votes: dict[str, str] | None = None

    def to_dict(self) -> dict:
        """The `predict --format jsonl` record."""
        record = {"path": self.path, "label": self.label, "probs": self.probs, "transcript": self.transcript}
        if self.votes is not None:
            record["votes"] = self.votes
        return record


class EmotionRecognizer:
    """A loaded model or ensemble directory ready to predict.

    Each distinct frozen encoder is loaded and run once per utterance, however many ensemble
    members share it; every member then applies its own decision rule (prior, thresholds) and
    the members vote.

    Example:
        >>> rec = EmotionRecognizer.load("runs/ravdess/model")     # doctest: +SKIP
        >>> rec.predict("clip.wav").label                          # doctest: +SKIP
        'angry'
    """

    def __init__(self, members: Sequence[Member] | ModelBundle, device: str = "cpu"):
        if isinstance(members, ModelBundle):
            members = [Member("model", members, members.decision_rule())]
        self.members, self.device = list(members), device
        self.bundle = self.members[0].bundle  # the lead member: labels, ASR, attention
        self._speech, self._text, self._asr = {}, {}, None
        for member in self.members:
            enc, spec = member.bundle.config.encoders, member.bundle.speech
            if self._speech_key(member) not in self._speech:
                self._speech[self._speech_key(member)] = speech_encoder(enc, member.bundle.config.features.layers)
            if self._text_key(member) not in self._text:
                self._text[self._text_key(member)] = text_encoder(enc)
            encoder = self._speech[self._speech_key(member)]
            if encoder.info.identity != spec.identity:
                log.warning("%s: speech encoder identity differs from training: %s vs %s",
                            member.name, encoder.info.identity, spec.identity)

    @staticmethod
    def _speech_key(member: Member) -> tuple:
        enc = member.bundle.config.encoders
        return enc.speech, enc.speech_pad_to_s, enc.device, tuple(member.bundle.config.features.layers)

    @staticmethod
    def _text_key(member: Member) -> tuple:
        enc = member.bundle.config.encoders
        return enc.text, enc.device

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu", use_thresholds: bool = True,
             prior: str | None = None) -> "EmotionRecognizer":
        """Load a model or ensemble directory (JSON + safetensors; never unpickles).

        `use_thresholds=False` ignores thresholds.json; `prior` overrides decision.prior
        (none, uniform or 'label:weight,...').
        """
        return cls(load_members(model_dir, device, use_thresholds, prior), device)

    @property
    def labels(self) -> list[str]:
        return list(self.bundle.labels)

    @property
    def speech(self):
        """The lead member's speech encoder."""
        return self._speech[self._speech_key(self.members[0])]

    @property
    def text(self):
        """The lead member's text encoder."""
        return self._text[self._text_key(self.members[0])]

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[str]:
        """ASR with the lead member's transcriber (loaded on first use), shared by all members."""
        if self._asr is None:
            enc = self.bundle.config.encoders
            self._asr = transcriber(enc)
        return self._asr.transcribe(waves)

    def predict_waves(self, waves: Sequence[np.ndarray], transcripts: Sequence[str | None],
                      return_attention: bool = False) -> list[Prediction]:
        """16 kHz mono waveforms (one batch) → predictions; missing transcripts come from ASR."""
        missing = [i for i, t in enumerate(transcripts) if t is None]
        texts = list(transcripts)
        for i, text in zip(missing, self.transcribe([waves[i] for i in missing]) if missing else []):
            texts[i] = text
        speech_cache, text_cache, member_probs = {}, {}, []
        lead_attention, lead_batch = None, None
        for m, member in enumerate(self.members):
            norm = member.bundle.norm
            skey, tkey = (self._speech_key(member), norm), self._text_key(member)
            if skey not in speech_cache:
                speech_cache[skey] = self._speech[skey[0]].encode([norm.apply(w) for w in waves])  # [(L, T, D)]
            if tkey not in text_cache:
                text_cache[tkey] = self._text[tkey].encode(texts)  # [(T2, D)]
            batch = collate([{"speech": s, "text": t} for s, t in zip(speech_cache[skey], text_cache[tkey])])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            probs, attention = predict_proba(member.bundle.model, batch, return_attention and m == 0)
            member_probs.append(probs.cpu().numpy())
            if m == 0:
                lead_attention, lead_batch = attention, batch
        preds, probs, votes = combine([m.rule for m in self.members], member_probs)
        labels = self.labels
        results = []
        for i in range(len(waves)):
            pred = Prediction(labels[int(preds[i])], {l: float(p) for l, p in zip(labels, probs[i])}, texts[i])
            if len(self.members) > 1:
                pred.votes = {m.name: labels[int(votes[j, i])] for j, m in enumerate(self.members)}
            if lead_attention:
                t1, t2 = int(lead_batch["speech_mask"][i].sum()), int(lead_batch["text_mask"][i].sum())
                pred.attention = unpad_attention(lead_attention, i, t1, t2, lead_batch["speech_mask"].shape[1])
            results.append(pred)
        return results

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
