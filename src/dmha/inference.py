"""EmotionRecognizer: audio (+ optional transcript) → emotion, with live frozen encoders and the trained head."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .audio import SAMPLE_RATE, AudioError, as_array, audio_duration, is_waveform, load_audio, load_audio_array
from .batches import collate
from .batching import MAX_BATCH_SECONDS, length_sorted_batches
from .model import unpad_attention
from .ensemble import Member, combine, load_members, mean_attributes
from .modeldir import ModelBundle, for_this_machine
from .pretrained import DEFAULT as DEFAULT_MODEL
from .encoders.fingerprint import mismatch, same_encoder
from .encoders.registry import speech_encoder, text_encoder, transcriber, uses_text
from .speaker_norm import Moments, batch_moments
from .speech_gate import SpeechGate
from .targets import attributes_of, predicts_category
from .timeline import Timeline
from .prediction import Prediction, SpeakerProfile  # noqa: F401  (dmha.inference.Prediction stays importable)

# Whole-recording prediction holds every frame of every layer (10 min of Whisper base: ~0.4 GB of
# features, ~1.5 GB peak); longer recordings go through predict_long / --segment, whose memory is flat.
DEFAULT_MAX_DURATION_S = 600.0


log = logging.getLogger(__name__)


def _check_encoder(member: str, kind: str, found: str, expected: str) -> None:
    """Warn, saying what to do, when the encoder loaded here is not the one the head was trained on:
    its features differ, so the head's predictions may be off (encoders.fingerprint.same_encoder)."""
    if not same_encoder(found, expected):
        log.warning("%s: the %s encoder here is not the one the model was trained with: %s. Its features "
                    "differ, so predictions may be off: install the encoder (or package version) it was trained "
                    "with, or retrain the model here (dmha train re-extracts the features)",
                    member, kind, mismatch(found, expected))


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

    def __init__(self, members: Sequence[Member] | ModelBundle | None = None, device: str = "cpu",
                 max_duration_s: float = DEFAULT_MAX_DURATION_S, speech_check: bool | None = None):
        if members is None:  # EmotionRecognizer(): the bundled default model (dmha.pretrained)
            from .pretrained import default_model

            members = load_members(default_model(), device)
        if isinstance(members, ModelBundle):
            members = [Member("model", members, members.decision_rule())]
        self.members, self.device = list(members), device
        if not max_duration_s > 0:
            raise ValueError(f"max_duration_s (--max-duration-s) must be > 0, got {max_duration_s}")
        self.max_duration_s = max_duration_s  # predict() refuses longer inputs (predict_long has no limit)
        # No speech, no emotion: inputs the detectors hear no speech in get a reason instead of a label.
        self.speech_gate = SpeechGate(enabled=speech_check)
        self.bundle = self.members[0].bundle  # the lead member: labels, ASR, attention
        self._load_encoders()

    def _load_encoders(self) -> None:
        """Each distinct encoder once (members that share one share it), on the members' device."""
        self._speech, self._text, self._asr = {}, {}, None
        for member in self.members:
            enc, trained = member.bundle.config.encoders, member.bundle
            if self._speech_key(member) not in self._speech:
                self._speech[self._speech_key(member)] = speech_encoder(enc, member.bundle.config.features.layers)
            if self._text_key(member) not in self._text:
                self._text[self._text_key(member)] = text_encoder(enc)
            _check_encoder(member.name, "speech", self._speech[self._speech_key(member)].info.identity,
                           trained.speech.identity)
            _check_encoder(member.name, "text", self._text[self._text_key(member)].info.identity, trained.text.identity)

    def to(self, device: str) -> "EmotionRecognizer":
        """Move the heads and the encoders to `device` ("cpu", "cuda", "cuda:1"), as torch modules move;
        returns the recognizer."""
        for member in self.members:
            member.bundle.model.to(device)
            member.bundle.config = for_this_machine(member.bundle.config, device)
        self.device = device
        self._load_encoders()
        return self

    def __call__(self, inputs, *, top_k: int | None = None, **options):
        """Predict as a Hugging Face audio-classification pipeline answers: `rec("clip.wav")` →
        [{"label": ..., "score": ...}, ...], most probable first (`top_k` of them; all by default); a
        list of inputs → one such list each. Other options go to `predict` (sample_rate, transcript(s),
        batch_size, speaker).

        Example:
            >>> rec("clip.wav", top_k=2)                                  # doctest: +SKIP
            [{'label': 'angry', 'score': 0.81}, {'label': 'disgust', 'score': 0.07}]
        """
        single = is_waveform(inputs) or isinstance(inputs, (str, Path))
        preds = self.predict(inputs, **options)
        ranked = [pred.top(top_k) for pred in ([preds] if single else preds)]
        return ranked[0] if single else ranked

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
             prior: str | None = None, max_duration_s: float = DEFAULT_MAX_DURATION_S,
             labels: Sequence[str] | None = None, speech_check: bool | None = None) -> "EmotionRecognizer":
        """Load a model or ensemble directory (JSON + safetensors; never unpickles).

        Args:
            model_dir: a model directory (`RUN_DIR/model`) or an ensemble directory.
            device: where the head and the encoders run ("cpu", "cuda", "cuda:1"), whatever machine
                the model was trained on (its `trained_on` settings are provenance only).
            use_thresholds: apply thresholds.json when the model has one.
            prior: override decision.prior (none, uniform or 'label:weight,...').
            max_duration_s: longest input `predict` takes whole (default 600 s); longer ones are
                refused with an AudioError that points to `predict_long`, whose memory is flat.
            labels: predict among these of the model's labels only (probabilities renormalised over
                them), e.g. the emotions an application knows; None = all.
            speech_check: check each input for speech first (dmha.speech_gate) and give an input
                with none no emotion (`Prediction.reason` says why); False answers every input;
                None: on unless the environment sets DMHA_SPEECH_CHECK=0.

        Returns:
            An EmotionRecognizer; its encoders are loaded now, the ASR on first use.

        Raises:
            ModelDirError: not a model or ensemble directory, or files that do not fit together.

        Example:
            >>> rec = EmotionRecognizer.load("demo_out/model", device="cpu")   # doctest: +SKIP
            >>> rec.labels                                                   # doctest: +SKIP
            ['angry', 'happy', 'neutral', 'sad']
        """
        members = load_members(model_dir, device, use_thresholds, prior)
        if labels:
            members = [dataclasses.replace(m, rule=m.rule.among(labels)) for m in members]
        return cls(members, device, max_duration_s, speech_check)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path = DEFAULT_MODEL, revision: str | None = None, *,
                        cache_dir: str | Path | None = None, **load_options) -> "EmotionRecognizer":
        """Load a local model/ensemble directory or a Hugging Face Hub repository that holds one.

        A Hub id (`owner/name`) is fetched with `huggingface_hub` into its cache, JSON and
        safetensors files only (nothing is unpickled or run); with `HF_HUB_OFFLINE=1` the cached
        copy is used. `revision` is a branch, tag or commit of the repository; `load_options` go to
        `load` (device, use_thresholds, prior, max_duration_s).

        Example:
            >>> rec = EmotionRecognizer.from_pretrained("my-lab/dmha-ravdess", revision="v1")  # doctest: +SKIP
        """
        from .hub import resolve_model

        return cls.load(resolve_model(name_or_dir, revision, cache_dir), **load_options)

    @property
    def labels(self) -> list[str]:
        """The labels predictions choose among: the model's, or the subset it was loaded with."""
        allowed = self.members[0].rule.allowed
        return [label for k, label in enumerate(self.bundle.labels) if allowed is None or allowed[k]]

    @property
    def predicts_category(self) -> bool:
        """Whether the model gives a label (model.targets has "category"); else only attributes."""
        return predicts_category(self.bundle.config.model)

    @property
    def attribute_names(self) -> list[str]:
        """The emotional attributes the model predicts (model.targets), in their output order."""
        return [a.name for a in attributes_of(self.bundle.config.model)]

    @property
    def attribute_ranges(self) -> dict[str, tuple[float, float]]:
        """{name: (min, max)}: each attribute's declared scale."""
        return {a.name: (a.low, a.high) for a in attributes_of(self.bundle.config.model)}

    @property
    def reads_text(self) -> bool:
        """Whether any member reads transcripts (a speech-only model needs no ASR)."""
        return any(uses_text(m.bundle.config.encoders) for m in self.members)

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

    def _speaker_members(self) -> list[Member]:
        return [m for m in self.members if m.bundle.config.model.feature_norm == "speaker"]

    def speaker_profile(self, recordings: Sequence, strict: bool = False) -> SpeakerProfile | None:
        """The statistics of one speaker from these recordings (`predict --same-speaker` / `--enrol`), or
        None when there are none or no member normalises per speaker (with a warning: they change
        nothing). Unreadable recordings are left out; with `strict`, one is an error naming it."""
        if not recordings:
            return None
        if not self._speaker_members():
            log.warning("the model normalises no features per speaker (model.feature_norm): a speaker's "
                        "recordings change nothing")
            return None
        skipped: list = []
        profile = self.enrol(recordings, skipped=skipped)
        if strict and skipped:
            raise ValueError(f"{skipped[0][0]}: {skipped[0][1]}")
        if not profile.recordings:
            raise ValueError("no readable recording to take the speaker's statistics from")
        log.info("speaker statistics from %d recording(s), %.1f s", profile.recordings, profile.seconds)
        return profile

    def enrol(self, inputs, *, sample_rate: int | None = None, skipped: list | None = None) -> SpeakerProfile:
        """A speaker's profile from recordings of that speaker (paths and/or waveforms, as `predict`
        takes them), for `predict(..., speaker=profile)`.

        The recordings are encoded one at a time and only their frame moments kept, so memory does
        not grow with how many there are. The more of a speaker's speech, and the more varied, the
        better: the speaker's mean is the reference an emotion departs from (README, "Speaker
        normalisation"). A model without `feature_norm=speaker` gets an empty profile, which changes
        nothing.

        Raises:
            AudioError: an unreadable recording, naming it (with `skipped`, a list, it is appended
                there as (name, reason) instead and left out).
        """
        inputs = [inputs] if is_waveform(inputs) or isinstance(inputs, (str, Path)) else list(inputs)
        moments: dict = {}
        seconds, used = 0.0, 0
        keys = {(self._speech_key(m), m.bundle.norm) for m in self._speaker_members()}
        for i, item in enumerate(inputs):
            try:
                wave = self._load(item, sample_rate, i if len(inputs) > 1 else None)
            except AudioError as err:
                if skipped is None:
                    raise
                skipped.append((str(item) if isinstance(item, (str, Path)) else f"input {i}", err.reason))
                continue
            seconds, used = seconds + wave.size / SAMPLE_RATE, used + 1
            for key in keys:
                (speech,) = self._speech[key[0]].encode([key[1].apply(wave)])
                moments[key] = moments[key] + Moments.of(speech) if key in moments else Moments.of(speech)
        return SpeakerProfile(moments, used, seconds)

    def predict_waves(self, waves: Sequence[np.ndarray], transcripts: Sequence[str | None],
                      return_attention: bool = False, speaker: SpeakerProfile | None = None,
                      check_speech: bool = True) -> list[Prediction]:
        """16 kHz mono waveforms (one batch) → predictions; missing transcripts come from ASR;
        `speaker`: every waveform's speaker (models with feature_norm=speaker; else each one alone).
        A waveform the speech gate hears no speech in gets no label, no probabilities and a `reason`
        (`check_speech=False`: the caller's own detector already found speech, as predict_long's has)."""
        checks = [self.speech_gate.check(w) for w in waves] if check_speech else []
        if any(not c.has_speech for c in checks):
            results = [Prediction(None, {}, transcripts[i] or "", reason=c.reason) for i, c in enumerate(checks)]
            heard = [i for i, c in enumerate(checks) if c.has_speech]
            if heard:
                answered = self.predict_waves([waves[i] for i in heard], [transcripts[i] for i in heard],
                                              return_attention, speaker, check_speech=False)
                for i, pred in zip(heard, answered):
                    results[i] = pred
            return results
        missing = [i for i, t in enumerate(transcripts) if t is None] if self.reads_text else []
        texts = [t if t is not None or self.reads_text else "" for t in transcripts]
        for i, text in zip(missing, self.transcribe([waves[i] for i in missing]) if missing else []):
            texts[i] = text
        speech_cache, text_cache, member_probs, member_attributes = {}, {}, [], []
        lead_attention, lead_batch = None, None
        for m, member in enumerate(self.members):
            norm = member.bundle.norm
            skey, tkey = (self._speech_key(member), norm), self._text_key(member)
            if skey not in speech_cache:
                speech_cache[skey] = self._speech[skey[0]].encode([norm.apply(w) for w in waves])  # [(L, T, D)]
            if tkey not in text_cache:
                text_cache[tkey] = self._text[tkey].encode(texts)  # [(T2, D)]
            batch = collate([{"speech": s, "text": t} for s, t in zip(speech_cache[skey], text_cache[tkey])])
            if speaker is not None and skey in speaker.moments:
                batch.update(batch_moments([speaker.moments[skey]] * len(waves)))
            batch = {k: v.to(self.device) for k, v in batch.items()}
            probs, attributes, attention = member.bundle.model.predict_all(batch, return_attention and m == 0)
            member_probs.append(probs.cpu().numpy())
            member_attributes.append(attributes.cpu().numpy() if attributes is not None else None)
            if m == 0:
                lead_attention, lead_batch = attention, batch
        preds, probs, votes = combine([m.rule for m in self.members], member_probs)
        attributes = mean_attributes(self.members, member_attributes)  # (B, A) in the attributes' scales
        model_labels, labels, category = self.bundle.labels, self.labels, self.predicts_category
        chosen = set(labels)
        results = []
        for i in range(len(waves)):
            pred = Prediction(model_labels[int(preds[i])] if category else None,
                              {l: float(p) for l, p in zip(model_labels, probs[i]) if l in chosen} if category else {},
                              texts[i])
            if attributes is not None:
                pred.attributes = {name: float(v) for name, v in zip(self.attribute_names, attributes[i])}
            if len(self.members) > 1 and category:
                pred.votes = {m.name: model_labels[int(votes[j, i])] for j, m in enumerate(self.members)}
            if lead_attention:
                t1, t2 = int(lead_batch["speech_mask"][i].sum()), int(lead_batch["text_mask"][i].sum())
                pred.attention = unpad_attention(lead_attention, i, t1, t2, lead_batch["speech_mask"].shape[1])
            results.append(pred)
        return results

    def predict(self, inputs: "str | Path | np.ndarray | torch.Tensor | Sequence", *, sample_rate: int | None = None, transcript: str | None = None,
                transcripts: Sequence[str | None] | None = None, batch_size: int = 1,
                return_attention: bool = False,
                speaker: SpeakerProfile | None = None) -> "Prediction | list[Prediction]":
        """Predict the emotion of one recording or of several.

        Args:
            inputs: an audio file path (any format libsndfile reads); a waveform, as a numpy array
                or torch tensor of shape (n,), (n, channels) or (channels, n) (the shorter axis is
                taken as channels; float, or integer PCM); or a list of paths and/or waveforms.
            sample_rate: the waveforms' rate in Hz (required for waveforms; files use their own).
            transcript: what is said in a single input; None runs the model's ASR.
            transcripts: one transcript (or None) per item of a list.
            batch_size: list items per encoder call (length-sorted, so padding stays small).
            return_attention: also return the head's attention weights (`Prediction.attention`).
            speaker: the inputs' speaker, from `enrol` (models trained with feature_norm=speaker);
                None: each input is normalised by its own statistics.

        Returns:
            A Prediction for a single input, a list of Predictions (in input order) for a list.

        Raises:
            AudioError: an unreadable file or unusable waveform, naming it and the reason.
            ValueError: missing sample_rate, or transcripts that do not match the inputs.

        Example:
            >>> rec = EmotionRecognizer.load("demo_out/model")            # doctest: +SKIP
            >>> rec.predict("clip.wav").label                            # doctest: +SKIP
            'happy'
            >>> rec.predict(wave, sample_rate=48000, transcript="I did it!").probs   # doctest: +SKIP
            {'angry': 0.02, 'happy': 0.91, 'neutral': 0.05, 'sad': 0.02}
        """
        if is_waveform(inputs) or isinstance(inputs, (str, Path)):
            if transcripts is not None:
                raise ValueError("transcripts is for a list of inputs; use transcript= for a single one")
            return self.predict([inputs], sample_rate=sample_rate, transcripts=[transcript],
                                return_attention=return_attention, speaker=speaker)[0]
        inputs = list(inputs)
        if transcript is not None:
            raise ValueError("transcript is for a single input; pass transcripts=[...] with a list")
        if transcripts is not None and len(transcripts) != len(inputs):
            raise ValueError(f"got {len(transcripts)} transcripts for {len(inputs)} inputs")
        if all(isinstance(x, (str, Path)) for x in inputs):
            preds, errors = self.predict_files(inputs, transcripts=transcripts, batch_size=batch_size,
                                               return_attention=return_attention, speaker=speaker)
            if errors:
                raise AudioError(errors[0][0], errors[0][1])
            return preds
        waves = [self._load(x, sample_rate, i if len(inputs) > 1 else None) for i, x in enumerate(inputs)]
        preds = self._predict_loaded(waves, transcripts or [None] * len(waves), batch_size, return_attention, speaker)
        for item, pred in zip(inputs, preds):
            pred.path = str(item) if isinstance(item, (str, Path)) else None
        return preds

    def _predict_loaded(self, waves: list[np.ndarray], transcripts: Sequence[str | None], batch_size: int,
                        return_attention: bool, speaker: SpeakerProfile | None = None) -> list[Prediction]:
        """Waveforms in length-sorted batches; results in input order."""
        results: list[Prediction | None] = [None] * len(waves)
        for index in length_sorted_batches([w.size for w in waves], max(1, batch_size),
                                           MAX_BATCH_SECONDS * SAMPLE_RATE, longest_first=False):
            preds = self.predict_waves([waves[i] for i in index], [transcripts[i] for i in index], return_attention,
                                       speaker)
            for i, pred in zip(index, preds):
                results[i] = pred
        return results

    def _load(self, item, sample_rate: int | None, index: int | None) -> np.ndarray:
        """A path or waveform (item `index` of a list) → (n,) float32 at 16 kHz."""
        if isinstance(item, (str, Path)):
            self._check_duration(item, audio_duration(item))
            return load_audio(item)
        if not is_waveform(item):
            raise TypeError(f"input {index or 0}: expected a path, numpy array or torch tensor, "
                            f"got {type(item).__name__}")
        if sample_rate is None:
            raise ValueError("sample_rate is required when predicting from a waveform array")
        name = "<array>" if index is None else f"<array {index}>"
        wave = load_audio_array(as_array(item), sample_rate, name=name)
        self._check_duration(name, wave.size / SAMPLE_RATE)
        return wave

    def _check_duration(self, name, seconds: float) -> float:
        """The input's length, or an AudioError when it is longer than predict takes whole."""
        if seconds > self.max_duration_s:
            raise AudioError(name, f"lasts {seconds:.0f} s, over the {self.max_duration_s:.0f} s limit of whole-"
                                   "recording prediction: use --segment (predict_long), or raise --max-duration-s")
        return seconds

    def predict_long(self, inputs, **options) -> Timeline:
        """Predict the emotion of each speech segment of a long recording, memory flat however long it is
        (dmha.recordings.predict_long: options min_s, max_s, batch_size, progress, transcribe,
        max_seconds, should_stop, sample_rate).

        Example:
            >>> timeline = rec.predict_long("meeting.flac", max_s=10)    # doctest: +SKIP
            >>> [(s.start, s.label) for s in timeline.segments[:2]]      # doctest: +SKIP
            [(0.42, 'neutral'), (3.9, 'happy')]
        """
        from .recordings import predict_long

        return predict_long(self, inputs, **options)

    def predict_files(self, paths: Sequence[str | Path], transcripts: Sequence[str | None] | None = None,
                      batch_size: int = 1, return_attention: bool = False, progress=None,
                      speaker: SpeakerProfile | None = None) -> tuple[list[Prediction | None], list[tuple[str, str]]]:
        """Batch prediction in length-sorted buckets; bad files are skipped and reported, never fatal."""
        from .recordings import predict_files

        return predict_files(self, paths, transcripts, batch_size, return_attention, progress, speaker)

    def iter_predict_files(self, paths: Sequence[str | Path], transcripts: Sequence[str | None] | None = None,
                           batch_size: int = 1, return_attention: bool = False, progress=None,
                           speaker: SpeakerProfile | None = None):
        """Yield (index, Prediction, None) or (index, None, reason) for every file, in input order, as soon
        as its window is done (dmha.recordings.iter_predict_files)."""
        from .recordings import iter_predict_files

        return iter_predict_files(self, paths, transcripts, batch_size, return_attention, progress, speaker)
