"""Synthesise a small, offline, speaker-independent emotional speech corpus with eSpeak NG for the demo."""
from __future__ import annotations

import _ctypes
import csv
import ctypes
import json
import logging
import shutil
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf
import soxr
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

EMOTIONS = ("neutral", "happy", "sad", "angry")
SAMPLE_RATE = 16_000
# Bump whenever sentences, voices, prosody or rendering change, so cached corpora are rebuilt.
CORPUS_VERSION = 1
MIN_SPEAKERS = 3


@dataclass(frozen=True)
class Prosody:
    """eSpeak NG speaking parameters for one utterance (eSpeak's own units)."""

    pitch: float  # base pitch 0-100, 50 = voice default
    range: float  # pitch range 0-100, 0 = monotone
    rate: float  # words per minute, 80-450
    volume: float  # amplitude 0-200, 100 = normal
    pause_ms: float  # SSML break inserted at commas (and once mid-sentence when long)


# Acted-emotion stereotypes: sad is low, flat, slow, quiet and halting; angry loud and fast.
_EMOTION_PROSODY = {
    "neutral": Prosody(pitch=48, range=45, rate=165, volume=100, pause_ms=120),
    "happy": Prosody(pitch=68, range=85, rate=180, volume=118, pause_ms=80),
    "sad": Prosody(pitch=30, range=18, rate=130, volume=62, pause_ms=280),
    "angry": Prosody(pitch=58, range=70, rate=198, volume=150, pause_ms=60),
}
# Valid eSpeak NG ranges, so jitter and speaker offsets never leave them.
_LIMITS = {"pitch": (0, 100), "range": (0, 100), "rate": (80, 450), "volume": (0, 200), "pause_ms": (0, 2000)}
# Per-utterance uniform jitter half-widths, wide enough that neighbouring classes overlap.
_JITTER = Prosody(pitch=7, range=12, rate=14, volume=14, pause_ms=60)

# (eSpeak language voice, variant file in espeak-ng-data/voices/!v); order alternates gender.
_VOICES = (
    ("en-us", "m1"), ("en-us", "f2"), ("en", "m3"), ("en-us", "f4"),
    ("en-us", "m7"), ("en", "f1"), ("en-us", "m2"), ("en-gb-x-rp", "f3"),
    ("en-us", "m6"), ("en-us", "f5"), ("en-gb-scotland", "m4"), ("en", "steph"),
    ("en-us", "Andy"), ("en-us", "linda"), ("en-us-nyc", "m8"), ("en", "belinda"),
)

# Sentences whose words carry the emotion; each is only ever spoken with its own emotion.
_EMOTIONAL_SENTENCES = {
    "neutral": (
        "Okay, I understand what you mean.", "That seems reasonable to me.",
        "Let me check the schedule first.", "I have no strong opinion about it.",
        "Sure, we can do it either way.", "I'll look into it and let you know.",
        "That's fine, nothing has changed.", "It was an ordinary day at work.",
        "The results are about as expected.", "I suppose that could work.",
        "We can discuss it later, no hurry.", "It's the usual routine, nothing special.",
        "Fine, I'll send the file tomorrow.", "I noticed the time has been updated.",
        "Alright, on to the next item.", "It's neither good nor bad, just normal.",
        "I'll take the regular option, thanks.", "That's correct, it's the same as before.",
    ),
    "happy": (
        "I am so happy to see you again!", "This is the best day of my life!",
        "We won the game, I can't believe it!", "What a wonderful surprise, thank you!",
        "I love this song, it makes me smile.", "You got the job? That's fantastic news!",
        "Everything went perfectly today, I'm thrilled.", "I'm so excited about our holiday!",
        "What a lovely gift, I adore it!", "Hooray, we finally finished the project!",
        "Your party was amazing, such fun!", "I feel great, the sun is shining!",
        "Congratulations, I'm so proud of you!", "This cake is delicious, what a treat!",
        "I passed the exam, I'm overjoyed!", "It's wonderful to hear you laugh.",
        "We are going to have a fantastic time!", "I'm delighted with the results, well done!",
    ),
    "sad": (
        "I miss her so much.", "Nobody came to my birthday.",
        "I feel so lonely without you.", "He passed away last night.",
        "I lost my job today.", "Everything feels hopeless right now.",
        "I can't stop crying.", "My old dog died this morning.",
        "I'm sorry, I let everyone down.", "We will never see them again.",
        "It hurts to remember those days.", "I failed again, I'm so tired.",
        "The house feels empty now.", "She left and never said goodbye.",
        "I wish things had been different.", "There is nothing left for me here.",
        "I feel heartbroken and alone.", "It's all so sad.",
    ),
    "angry": (
        "This is terrible, I hate it!", "Get out of my room right now!",
        "How dare you lie to me!", "I am sick and tired of your excuses!",
        "Stop shouting at me, you idiot!", "You broke it again, I'm furious!",
        "That is completely unacceptable!", "Don't you ever touch my things!",
        "I told you a hundred times, listen!", "This stupid machine never works!",
        "You ruined everything, I'm so angry!", "Shut up and leave me alone!",
        "Who parked in my spot again?", "I can't stand this nonsense anymore!",
        "You are wasting my time, get lost!", "Give me back my money, now!",
        "I'm outraged by this rude service!", "Enough! I've had it with you!",
    ),
}
# Emotionally empty sentences spoken by each speaker with every emotion: only prosody tells them apart.
_SHARED_SENTENCES = (
    "The meeting is at ten tomorrow.", "Please put the book on the table.",
    "The train leaves from platform two.", "I will call you after lunch.",
    "The office is on the third floor.", "We need to buy milk and bread.",
    "The report is due on Friday.", "Turn left at the next corner.",
    "The store closes at six o'clock.", "My phone number has changed.",
    "The package arrived this afternoon.", "Children are playing in the park.",
    "It might rain later this evening.", "The keys are in the kitchen drawer.",
    "She works at the city library.", "We moved the chairs into the hall.",
    "The bus was ten minutes late.", "I read the letter this morning.",
    "Dinner will be ready at seven.", "The window in the bedroom is open.",
    "He parked the car across the street.", "The lecture starts in five minutes.",
    "Our flight lands at noon on Monday.", "The printer is next to the door.",
)


# --- eSpeak NG through ctypes -------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 0x1
_SSML = 0x10
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
# The C library keeps global state and is not thread-safe: one session at a time per process.
_ESPEAK_LOCK = threading.Lock()


def _bind(lib: ctypes.CDLL) -> None:
    """Declare the C signatures we call so ctypes converts arguments correctly."""
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]


class _ESpeak:
    """A freshly loaded eSpeak NG in synchronous mode, unloaded again on exit.

    eSpeak keeps hidden state between utterances (pitch-flutter phase, a clock-seeded
    noise generator), so the same call gives different samples depending on what was
    spoken before. Loading a fresh copy per utterance (about 4 ms) and seeding its noise
    makes every file depend only on its own parameters. Hold _ESPEAK_LOCK while using it.
    """

    def __enter__(self) -> "_ESpeak":
        import espeakng_loader

        self.data_path = Path(espeakng_loader.get_data_path())
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        _bind(self._lib)
        path = str(self.data_path).encode()
        self.sample_rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, path, 0)
        if self.sample_rate <= 0:
            self._unload()
            raise RuntimeError(f"espeak_Initialize failed with data at {self.data_path}")
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)  # kept on self so ctypes does not free it
        self._lib.espeak_SetSynthCallback(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        self._lib.espeak_Terminate()
        self._unload()

    def _unload(self) -> None:
        """dlclose so the next session starts from the library's initial globals."""
        handle = self._lib._handle
        del self._lib
        _ctypes.dlclose(handle)

    def _collect(self, wav, n_samples, events) -> int:
        """Receive one buffer of 16-bit samples from the synthesiser; 0 tells it to continue."""
        if wav and n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0

    def check_voice(self, language: str, variant: str) -> None:
        """Fail early on a voice this eSpeak build lacks (it silently ignores unknown variants)."""
        if not (self.data_path / "voices" / "!v" / variant).is_file():
            raise ValueError(f"eSpeak NG variant {variant!r} not found in {self.data_path / 'voices' / '!v'}")
        if self._lib.espeak_SetVoiceByName(language.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {language!r}")

    def synth(self, ssml: str, voice: str, prosody: Prosody, noise_seed: int) -> np.ndarray:
        """Speak SSML with a voice and prosody; returns int16 samples at `self.sample_rate`."""
        if hasattr(self._lib, "espeak_ng_SetRandSeed"):
            self._lib.espeak_ng_SetRandSeed(noise_seed)
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        for param, value in ((_RATE, prosody.rate), (_VOLUME, prosody.volume),
                             (_PITCH, prosody.pitch), (_RANGE, prosody.range)):
            self._lib.espeak_SetParameter(param, int(round(value)), 0)
        self._chunks = []
        text = ssml.encode("utf-8")
        flags = _CHARS_UTF8 | _SSML
        err = self._lib.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with code {err} on {ssml!r}")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def _speak(ssml: str, voice: str, prosody: Prosody, noise_seed: int) -> tuple[np.ndarray, int]:
    """Synthesise one utterance in its own eSpeak session; returns int16 samples and their rate."""
    with _ESPEAK_LOCK, _ESpeak() as engine:
        return engine.synth(ssml, voice, prosody, noise_seed), engine.sample_rate


def _check_voices(voices: list[tuple[str, str]]) -> None:
    """Validate all planned voices before spending time on synthesis."""
    with _ESPEAK_LOCK, _ESpeak() as engine:
        for language, variant in voices:
            engine.check_voice(language, variant)
        if not hasattr(engine._lib, "espeak_ng_SetRandSeed"):
            logger.warning("eSpeak NG lacks espeak_ng_SetRandSeed: breathy voices won't be byte-reproducible")


# --- corpus plan ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Speaker:
    """A pseudo-speaker: an eSpeak voice with its own pitch and rate habits."""

    id: str
    voice: str
    split: str
    pitch_offset: float
    rate_offset: float


@dataclass(frozen=True)
class _Utterance:
    """One planned recording; `index` seeds its own random stream so files are order-independent."""

    index: int
    path: str
    label: str
    split: str
    speaker: _Speaker
    text: str


def _split_counts(n_speakers: int) -> dict[str, int]:
    """About 60/20/20 train/dev/test by speaker, at least one speaker in each."""
    n_eval = max(1, round(0.2 * n_speakers))
    return {"train": n_speakers - 2 * n_eval, "dev": n_eval, "test": n_eval}


def _make_speakers(n_speakers: int, rng: np.random.Generator) -> list[_Speaker]:
    """Take the first n voices and deal them to splits at random."""
    counts = _split_counts(n_speakers)
    splits = [s for s, n in counts.items() for _ in range(n)]
    order = rng.permutation(n_speakers)
    speakers = []
    for i, (language, variant) in enumerate(_VOICES[:n_speakers]):
        speakers.append(_Speaker(id=f"spk{i + 1:02d}", voice=f"{language}+{variant}",
                                 split=splits[order[i]], pitch_offset=float(rng.uniform(-8, 8)),
                                 rate_offset=float(rng.uniform(-15, 15))))
    return speakers


def _partition_pools(speakers: list[_Speaker], rng: np.random.Generator) -> dict[tuple[str, str], list[str]]:
    """Give each split its own emotional sentences so test texts are never seen in training."""
    n_by_split = {s: sum(sp.split == s for sp in speakers) for s in ("train", "dev", "test")}
    pools = {}
    for emotion, sentences in _EMOTIONAL_SENTENCES.items():
        shuffled = [sentences[i] for i in rng.permutation(len(sentences))]
        n_dev = max(1, round(len(shuffled) * n_by_split["dev"] / len(speakers)))
        n_test = max(1, round(len(shuffled) * n_by_split["test"] / len(speakers)))
        pools[emotion, "test"] = shuffled[:n_test]
        pools[emotion, "dev"] = shuffled[n_test:n_test + n_dev]
        pools[emotion, "train"] = shuffled[n_test + n_dev:]
    return pools


def _cyclic_pick(pool: list[str], start: int, k: int) -> list[str]:
    """k consecutive items from a pool read as a ring, so speakers cover it evenly."""
    return [pool[(start + i) % len(pool)] for i in range(k)]


def _plan(seed: int, n_speakers: int, sentences_per_emotion: int) -> list[_Utterance]:
    """Decide who says what with which emotion; half emotional-word, half shared neutral sentences."""
    rng = np.random.default_rng(seed)
    speakers = _make_speakers(n_speakers, rng)
    pools = _partition_pools(speakers, rng)
    shared = [_SHARED_SENTENCES[i] for i in rng.permutation(len(_SHARED_SENTENCES))]
    n_emotional = sentences_per_emotion // 2
    n_shared = sentences_per_emotion - n_emotional
    if n_shared > len(shared) or n_emotional > min(len(p) for p in pools.values()):
        logger.warning("sentences_per_emotion=%d repeats sentences within a speaker", sentences_per_emotion)
    rank_in_split = {sp.id: sum(o.split == sp.split for o in speakers[:i]) for i, sp in enumerate(speakers)}
    utterances = []
    for spk_i, speaker in enumerate(speakers):
        shared_texts = _cyclic_pick(shared, spk_i * n_shared, n_shared)
        for emotion in EMOTIONS:
            pool = pools[emotion, speaker.split]
            texts = _cyclic_pick(pool, rank_in_split[speaker.id] * n_emotional, n_emotional) + shared_texts
            for k, text in enumerate(texts):
                path = f"audio/{speaker.id}_{emotion}_{k:02d}.wav"
                utterances.append(_Utterance(len(utterances), path, emotion, speaker.split, speaker, text))
    return utterances


# --- rendering -----------------------------------------------------------------------------

def _jittered_prosody(utt: _Utterance, rng: np.random.Generator) -> Prosody:
    """Emotion prosody plus the speaker's habits plus per-utterance jitter."""
    base, jit = _EMOTION_PROSODY[utt.label], _JITTER
    draw = {f: getattr(base, f) + rng.uniform(-1, 1) * getattr(jit, f) for f in asdict(base)}
    draw["pitch"] += utt.speaker.pitch_offset
    draw["rate"] += utt.speaker.rate_offset
    return replace(base, **{f: float(np.clip(v, *_LIMITS[f])) for f, v in draw.items()})


def _to_ssml(text: str, prosody: Prosody, rng: np.random.Generator) -> str:
    """Turn commas into breaks of the emotion's length; slow emotions also hesitate mid-sentence."""
    brk = f'<break time="{int(prosody.pause_ms)}ms"/>'
    words = [escape(w) for w in text.split()]
    if "," not in text and len(words) >= 5 and prosody.pause_ms >= 240:
        cut = int(rng.integers(2, len(words) - 1))
        words[cut - 1] += brk
    return "<speak>" + " ".join(w.replace(",", "," + brk) for w in words) + "</speak>"


def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS 1/f noise shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def _render(utt: _Utterance, seed: int) -> np.ndarray:
    """Synthesise one utterance and give it padding, gain and a faint room-noise floor; float32 at 16 kHz."""
    rng = np.random.default_rng([seed, utt.index])
    prosody = _jittered_prosody(utt, rng)
    ssml = _to_ssml(utt.text, prosody, rng)
    pcm, native_rate = _speak(ssml, utt.speaker.voice, prosody, noise_seed=int(rng.integers(2**31)))
    voiced = np.flatnonzero(np.abs(pcm) > 64)  # eSpeak appends ~0.35 s of silence; we pad our own
    pcm = pcm[: voiced[-1] + 1] if len(voiced) else pcm
    speech = soxr.resample(pcm.astype(np.float32) / 32768.0, native_rate, SAMPLE_RATE)
    lead, trail = (int(rng.uniform(0.05, 0.25) * SAMPLE_RATE) for _ in range(2))
    audio = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(trail, np.float32)])
    audio *= 10 ** (rng.uniform(-2.0, 2.0) / 20)
    noise_rms = 10 ** (rng.uniform(-58.0, -48.0) / 20)
    audio += noise_rms * (0.8 * _pink_noise(len(audio), rng) + 0.2 * rng.standard_normal(len(audio)))
    return np.clip(audio, -1.0, 32767 / 32768).astype(np.float32)


# --- persistence ---------------------------------------------------------------------------

def _recorded_params(seed: int, n_speakers: int, sentences_per_emotion: int) -> dict:
    """What corpus.json must hold for an existing corpus to be reused."""
    return {"version": CORPUS_VERSION, "seed": seed, "n_speakers": n_speakers,
            "sentences_per_emotion": sentences_per_emotion, "sample_rate": SAMPLE_RATE}


def _is_current(out_dir: Path, params: dict) -> bool:
    """True when out_dir already holds a complete corpus built with these parameters."""
    manifest, info = out_dir / "manifest.csv", out_dir / "corpus.json"
    if not (manifest.is_file() and info.is_file()):
        return False
    try:
        recorded = json.loads(info.read_text())
    except json.JSONDecodeError:
        return False
    if recorded.get("params") != params:
        return False
    with manifest.open(newline="") as f:
        return all((out_dir / row.get("path", "")).is_file() for row in csv.DictReader(f))


def _write_manifest(path: Path, utterances: list[_Utterance]) -> None:
    """Write the manifest via a temporary file so a crash never leaves a half-written one."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split", "speaker", "reference_text"])
        for u in utterances:
            writer.writerow([u.path, u.label, u.split, u.speaker.id, u.text])
    tmp.replace(path)


def synthesize_demo_corpus(out_dir: Path, *, seed: int = 0, n_speakers: int = 10,
                           sentences_per_emotion: int = 8, progress: bool = True) -> Path:
    """Synthesise the offline demo corpus (or reuse an identical one) and return its manifest.

    Every speaker (an eSpeak NG voice variant with its own pitch and rate) says
    `sentences_per_emotion` sentences in each of neutral, happy, sad and angry: half
    whose words carry the emotion (split-disjoint) and half emotionally neutral ones
    that the speaker repeats with all four emotions. Speakers are split about
    60/20/20 into train/dev/test. Files are 16 kHz mono 16-bit WAV under
    `out_dir/audio/`; the output is byte-identical for a given seed.

    Args:
        out_dir: folder to write `audio/`, `manifest.csv` and `corpus.json` into.
        seed: seed for the speaker split, sentence choice, prosody jitter, gain and noise.
        n_speakers: number of pseudo-speakers, between 3 and 16.
        sentences_per_emotion: utterances per speaker and emotion (≥ 2 to get both kinds).
        progress: show a tqdm bar while synthesising.

    Returns:
        Path of `out_dir/manifest.csv` with columns `path,label,split,speaker,reference_text`.

    Example:
        >>> manifest = synthesize_demo_corpus(Path("demo"), seed=0)  # doctest: +SKIP
    """
    if not MIN_SPEAKERS <= n_speakers <= len(_VOICES):
        raise ValueError(f"n_speakers must be in [{MIN_SPEAKERS}, {len(_VOICES)}], got {n_speakers}")
    if sentences_per_emotion < 1:
        raise ValueError(f"sentences_per_emotion must be >= 1, got {sentences_per_emotion}")
    out_dir = Path(out_dir)
    params = _recorded_params(seed, n_speakers, sentences_per_emotion)
    manifest = out_dir / "manifest.csv"
    if _is_current(out_dir, params):
        logger.info("Reusing demo corpus in %s", out_dir)
        return manifest
    utterances = _plan(seed, n_speakers, sentences_per_emotion)
    speakers = {u.speaker.id: u.speaker for u in utterances}
    _check_voices([tuple(s.voice.split("+")) for s in speakers.values()])
    if (out_dir / "corpus.json").is_file() and (out_dir / "audio").is_dir():
        shutil.rmtree(out_dir / "audio")  # a stale corpus of ours: drop files the new manifest won't list
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    total_s = 0.0
    for utt in tqdm(utterances, desc="synthesising demo corpus", unit="utt", disable=not progress):
        audio = _render(utt, seed)
        total_s += len(audio) / SAMPLE_RATE
        sf.write(out_dir / utt.path, audio, SAMPLE_RATE, subtype="PCM_16")
    _write_manifest(manifest, utterances)
    info = {"params": params, "n_utterances": len(utterances), "total_seconds": round(total_s, 2),
            "speakers": {s.id: {"voice": s.voice, "split": s.split} for s in speakers.values()}}
    (out_dir / "corpus.json").write_text(json.dumps(info, indent=2) + "\n")
    logger.info("Wrote %d utterances (%.1f min) to %s", len(utterances), total_s / 60, out_dir)
    return manifest
