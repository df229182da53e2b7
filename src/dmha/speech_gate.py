"""No speech, no emotion: the check every prediction passes before an emotion is given.

An emotion head always answers: silence, a hum or a ringtone get a label and a confident-looking
probability (the bundled model said `sad 0.79` to 3 s of silence). So before the encoders run, each
input is asked whether it holds speech, by two detectors in turn:

Both hear the input scaled to a fixed peak, so quiet speech (−30 dB and below) counts as much as loud.

1. silero-vad (the detector `--segment` uses): at least `min_speech_s` of speech → answered.
   It costs about 1/300 of the input's duration, and answers for almost every speech clip.
2. Only when silero finds less: the two detectors' evidence together, silero's voice score (the mean
   of its 5 highest frame probabilities, 160 ms) plus Whisper tiny.en's probability that its 30 s
   window holds speech (1 − its no-speech probability; one decoding step, no transcript). At least
   `min_evidence` → answered. Each detector alone misses cases the other gets: silero misses some
   loud clipped shouting and single words on a phone line, which Whisper hears as speech; Whisper
   takes a pure tone for speech about as readily as such a word, and silero does not.

Only an input both detectors call non-speech is refused: its Prediction has no label, no
probabilities and a `reason`. The thresholds come from benchmarks/no_speech.py (committed:
benchmarks/results/no_speech/no_speech.json), which scores every clip of the shared corpora and a
seeded set of non-speech signals (silence, noises, tones, clicks, hum, chirps and music-like audio):
each threshold sits between the two groups.

"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE

log = logging.getLogger(__name__)

DEFAULT_MIN_SPEECH_S = 0.25  # silero's own shortest speech region (SpeechDetector.min_speech_s)
DEFAULT_MIN_EVIDENCE = 0.45
PEAK = 0.9  # the level silero hears every input at
TOP_FRAMES = 5  # frames of silero's voice score (32 ms each)
SECOND_OPINION_ASR = "tiny.en"
ENVIRONMENT = "DMHA_SPEECH_CHECK"  # 0/off: no check, as --no-speech-check (for scripts and services)
_WINDOW_FRAMES = 3000  # Whisper's 30 s window, 100 mel frames per second


def _at_fixed_peak(wave: np.ndarray) -> np.ndarray:
    """The waveform scaled to peak at PEAK (digital silence stays zeros)."""
    wave = np.asarray(wave, np.float32)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    return wave * np.float32(PEAK / peak) if peak > 0 else wave


def evidence(voice_prob: float, no_speech_prob: float) -> float:
    """The two detectors' speech evidence together: silero's voice score + Whisper's speech probability."""
    return voice_prob + (1.0 - no_speech_prob)


@dataclass
class SpeechCheck:
    """What the detectors found in one input: silero's seconds of speech and voice score (mean of its
    top frame probabilities), Whisper's no-speech probability when it was asked (None: silero was
    enough), and the verdict."""

    voice_prob: float
    speech_s: float
    no_speech_prob: float | None
    has_speech: bool

    @property
    def reason(self) -> str | None:
        """Why no emotion is given (None when there is speech): the `reason` field of a Prediction."""
        if self.has_speech:
            return None
        whisper = "" if self.no_speech_prob is None else f", Whisper's no-speech probability {self.no_speech_prob:.2f}"
        return f"no speech found ({self.speech_s:.2f} s of voice activity, peak {self.voice_prob:.2f}{whisper})"


class SpeechGate:
    """Decides, per 16 kHz waveform, whether it holds speech enough to be given an emotion.

    Args:
        min_speech_s: seconds of speech silero must find to answer at once.
        min_evidence: silero's voice score plus Whisper's speech probability at which an input
            silero found less speech in is still answered.
        enabled: False answers every input, as before the gate (`dmha predict --no-speech-check`);
            None (default): on, unless the environment sets DMHA_SPEECH_CHECK=0 (read at each check).

    The detectors load on first use (Whisper only when an input needs its opinion).
    """

    def __init__(self, min_speech_s: float = DEFAULT_MIN_SPEECH_S, min_evidence: float = DEFAULT_MIN_EVIDENCE,
                 enabled: bool | None = None):
        if min_speech_s < 0:
            raise ValueError(f"min_speech_s must be >= 0, got {min_speech_s}")
        if not 0 <= min_evidence <= 2:
            raise ValueError(f"min_evidence must be in [0, 2], got {min_evidence}")
        self.min_speech_s, self.min_evidence, self._enabled = min_speech_s, min_evidence, enabled
        self._vad = None
        self._whisper = None

    @property
    def enabled(self) -> bool:
        if self._enabled is not None:
            return self._enabled
        return os.environ.get(ENVIRONMENT, "1").strip().lower() not in ("0", "off", "false", "no")

    def check(self, wave: np.ndarray) -> SpeechCheck:
        """The detectors' verdict on one (n,) float32 16 kHz waveform."""
        if not self.enabled:
            return SpeechCheck(float("nan"), float("nan"), None, True)
        voice, speech_s = self.voice_activity(wave)
        if speech_s >= self.min_speech_s:
            return SpeechCheck(voice, speech_s, None, True)
        prob = self.no_speech_prob(wave)
        return SpeechCheck(voice, speech_s, prob, evidence(voice, prob) >= self.min_evidence)

    def voice_activity(self, wave: np.ndarray) -> tuple[float, float]:
        """silero-vad on the waveform scaled to a fixed peak: (voice score, seconds of speech)."""
        from .segment import SileroVAD, SpeechDetector

        if self._vad is None:
            self._vad = SileroVAD()
        scaled = _at_fixed_peak(wave)
        if not scaled.any():
            return 0.0, 0.0
        self._vad.reset()
        probs = np.concatenate([self._vad.push(scaled), self._vad.finish()])  # (frames,)
        detector = SpeechDetector()
        regions = detector.push(probs) + detector.finish(scaled.size / SAMPLE_RATE)
        voice = float(np.sort(probs)[-TOP_FRAMES:].mean()) if probs.size else 0.0
        return voice, float(sum(end - start for start, end in regions))

    def no_speech_prob(self, wave: np.ndarray) -> float:
        """Whisper tiny.en's probability that the first 30 s of the waveform hold no speech."""
        from faster_whisper.audio import pad_or_trim

        if self._whisper is None:
            from .encoders.asr import FasterWhisperTranscriber

            self._whisper = FasterWhisperTranscriber(SECOND_OPINION_ASR)
        model = self._whisper.model
        window = _at_fixed_peak(wave[:30 * SAMPLE_RATE])
        features = pad_or_trim(model.feature_extractor(window)[..., :-1], _WINDOW_FRAMES)[None]  # (1, 80, 3000)
        (result,) = model.model.generate(model.encode(features), [list(self._whisper.prompt)], max_length=2,
                                         return_no_speech_prob=True, suppress_blank=False)
        return float(result.no_speech_prob)
