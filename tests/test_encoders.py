"""Frozen encoders: tiny random-init models through the real loading path; slow tests on the packaged ones."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizerFast,
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)

from dmha.encoders import (
    EncoderNotFoundError,
    clear_cache,
    load_speech_encoder,
    load_text_encoder,
    load_transcriber,
)
from dmha.batching import length_sorted_batches
from dmha.encoders.windows import consecutive_windows, even_windows
from dmha.encoders.ct2_format import CT2FormatError, read_model_bin
from dmha.encoders.ct2_whisper import is_ct2_whisper_dir
from dmha.encoders.whisper import whisper_hidden_states
from dmha.encoders.whisper_mel import WhisperMel

SR = 16_000
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
RAVDESS_CLIP = SHARED / "data/ravdess/audio/Actor_01/03-01-01-01-01-01-01.flac"
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def _wave(seconds: float, seed: int = 0) -> np.ndarray:
    """Noisy tone, enough structure for features to differ along time."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Largest absolute difference over matching tensors of equal shapes."""
    assert [x.shape for x in a] == [y.shape for y in b]
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.fixture(autouse=True)
def _fresh_registry_cache():
    """Each test loads its own encoders, so the process cache cannot hide a loading bug."""
    clear_cache()
    yield
    clear_cache()


# --- tiny model directories -------------------------------------------------------------


def _tiny_whisper() -> WhisperForConditionalGeneration:
    """Random 2-layer, 32-d Whisper; encoder weights spread out so every parameter matters."""
    torch.manual_seed(0)
    config = WhisperConfig(
        d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=128, max_target_positions=16, num_mel_bins=80,
        pad_token_id=1, bos_token_id=2, eos_token_id=2, decoder_start_token_id=3,
        suppress_tokens=[], begin_suppress_tokens=[],
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.model.encoder.named_parameters():
            # Left at ones/zeros so CTranslate2 stores it as an alias of another variable.
            if "layers.1.final_layer_norm" not in name and "embed_positions" not in name:
                p.normal_(0, 0.2)
    return model


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory) -> Path:
    """transformers Whisper checkpoint with its feature extractor."""
    path = tmp_path_factory.mktemp("tiny-whisper")
    _tiny_whisper().save_pretrained(path)
    WhisperFeatureExtractor().save_pretrained(path)
    return path


def _save_ct2(model: WhisperForConditionalGeneration, path: Path, quantization: str) -> Path:
    """The same model written by CTranslate2's own converter code, as faster-whisper dirs are."""
    from ctranslate2.converters.transformers import WhisperLoader

    spec = WhisperLoader().get_model_spec(model)
    spec.config.suppress_ids, spec.config.suppress_ids_begin = [], []
    spec.config.lang_ids, spec.config.alignment_heads = [], [(0, 0)]
    spec.register_vocabulary([f"tok{i}" for i in range(model.config.vocab_size)])
    spec.validate()
    spec.optimize(quantization=quantization)
    spec.save(str(path))
    return path


@pytest.fixture(scope="module", params=["float16", "int8"])
def ct2_dir(request, tmp_path_factory) -> Path:
    """CTranslate2 Whisper dir of the tiny model, fp16 like the packaged base, int8 like quantised dirs."""
    return _save_ct2(_tiny_whisper(), tmp_path_factory.mktemp(f"ct2-{request.param}"), request.param)


SPEECH_MODELS = {
    "wav2vec2-group": (Wav2Vec2Config, Wav2Vec2Model, dict(feat_extract_norm="group")),
    "wav2vec2-layer": (Wav2Vec2Config, Wav2Vec2Model, dict(feat_extract_norm="layer", do_stable_layer_norm=True)),
    "hubert-layer": (HubertConfig, HubertModel, dict(feat_extract_norm="layer", do_stable_layer_norm=True)),
    "wavlm-group": (WavLMConfig, WavLMModel, dict(feat_extract_norm="group")),
    "wavlm-layer": (WavLMConfig, WavLMModel, dict(feat_extract_norm="layer", do_stable_layer_norm=True)),
}


@pytest.fixture(scope="module", params=list(SPEECH_MODELS))
def speech_dir(request, tmp_path_factory) -> Path:
    """wav2vec2-family checkpoint (32-d, 2 layers, 50 frames/s) with its feature extractor."""
    config_cls, model_cls, extra = SPEECH_MODELS[request.param]
    torch.manual_seed(0)
    model = model_cls(config_cls(**TINY, **extra)).eval()
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    layer_norm = extra["feat_extract_norm"] == "layer"
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True,
                             return_attention_mask=layer_norm).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    """2-layer BERT with a small WordPiece vocabulary and a 24-token limit."""
    path = tmp_path_factory.mktemp("tiny-bert")
    words = "kids are talking by the door dogs sitting hello world ##s ##ing".split()
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), model_max_length=24)
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=24)
    BertModel(config).eval().save_pretrained(path)
    return path


# --- helpers --------------------------------------------------------------------------------


def test_batching_helpers():
    assert length_sorted_batches([3, 9, 1, 5], 2) == [[1, 3], [0, 2]]
    assert consecutive_windows(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert consecutive_windows(0, 3) == [(0, 0)]
    windows = even_windows(10, 4)
    assert windows == [(0, 3), (3, 7), (7, 10)] and all(e - s <= 4 for s, e in windows)


@pytest.mark.parametrize("seconds", [0.3, 3.01, 30.0])
def test_mel_matches_whisper_feature_extractor(seconds):
    extractor, mel = WhisperFeatureExtractor(), WhisperMel.default()
    wave = _wave(seconds)
    true_len = extractor(wave, sampling_rate=SR, padding="longest", return_tensors="np").input_features[0]
    padded = extractor(wave, sampling_rate=SR, return_tensors="np").input_features[0]
    assert mel(wave).shape == true_len.shape == (80, mel.num_frames(len(wave)))
    np.testing.assert_allclose(mel(wave).numpy(), true_len, atol=1e-5)
    np.testing.assert_allclose(mel(wave, pad_to_samples=30 * SR).numpy(), padded, atol=1e-5)


# --- Whisper (transformers checkpoint) ------------------------------------------------------


def test_whisper_padded_run_equals_hf_forward(whisper_dir):
    """pad_to_s=30 reproduces WhisperEncoder.forward's hidden states, cut to the real frames."""
    enc = load_speech_encoder(str(whisper_dir), pad_to_s=30)
    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
    wave = _wave(3.0)
    features = WhisperFeatureExtractor()(wave, sampling_rate=SR, return_tensors="pt").input_features
    with torch.no_grad():
        ref = model.model.encoder(features, output_hidden_states=True).hidden_states
    ours = enc.encode([wave])[0]
    assert ours.shape == (3, 150, 32)
    expected = torch.stack(ref)[:, 0, :150]  # (L, T, D)
    assert (ours - expected).abs().max().item() < 1e-4


def test_whisper_true_length_shapes_and_frozen(whisper_dir):
    enc = load_speech_encoder(str(whisper_dir))
    assert (enc.info.num_layers, enc.info.dim, enc.info.frame_rate) == (3, 32, 50.0)
    waves = [_wave(s, i) for i, s in enumerate([1.0, 2.345, 0.01])]
    outs = enc.encode(waves)
    for wave, out in zip(waves, outs):
        mel_frames = max(len(wave), 400) // 160
        assert out.shape == (3, math.ceil(mel_frames / 2), 32) and out.dtype == torch.float32
        assert not out.is_inference()  # downstream training may use them in autograd
    assert not any(p.requires_grad for p in enc.model.parameters())
    assert not enc.model.training


@pytest.mark.parametrize("pad_to_s", [0.0, 30.0, 4.0])
def test_whisper_batched_equals_unbatched(whisper_dir, pad_to_s):
    enc = load_speech_encoder(str(whisper_dir), pad_to_s=pad_to_s)
    waves = [_wave(s, i) for i, s in enumerate([2.0, 0.7, 5.31, 1.234][: 3 if pad_to_s == 30 else 4])]
    batched = enc.encode(waves, batch_size=4)
    single = [enc.encode([w], batch_size=1)[0] for w in waves]
    assert _max_diff(batched, single) <= 1e-4


def test_whisper_long_audio_is_windowed(whisper_dir):
    wave = _wave(65.0)
    true_len = load_speech_encoder(str(whisper_dir)).encode([wave])[0]
    padded = load_speech_encoder(str(whisper_dir), pad_to_s=30).encode([wave])[0]
    assert true_len.shape == padded.shape == (3, 65 * 50, 32)
    short_window = load_speech_encoder(str(whisper_dir), pad_to_s=10).encode([_wave(3.0)])[0]
    assert short_window.shape == (3, 150, 32)
    ten_s_windows = load_speech_encoder(str(whisper_dir), max_window_s=10).encode([_wave(25.0)])[0]
    assert ten_s_windows.shape == (3, 1250, 32)
    with pytest.raises(ValueError, match="pad_to_s"):
        load_speech_encoder(str(whisper_dir), pad_to_s=31)


def test_whisper_without_feature_extractor_config_uses_default_front_end(whisper_dir, tmp_path, caplog):
    for f in whisper_dir.iterdir():
        if f.name != "preprocessor_config.json":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    with caplog.at_level(logging.WARNING, logger="dmha.encoders.hf"):
        out = load_speech_encoder(str(tmp_path)).encode([_wave(1.0)])[0]
    assert out.shape == (3, 50, 32) and "default front end" in caplog.text


def test_whisper_forward_masks_padding(whisper_dir):
    """The functional core alone: a zero-padded batch row equals that row run at its own length."""
    enc = load_speech_encoder(str(whisper_dir))
    mel = WhisperMel.default()(_wave(1.0))  # (80, 100)
    padded = torch.nn.functional.pad(mel, (0, 37))[None]  # (1, 80, 137)
    with torch.inference_mode():
        a = whisper_hidden_states(enc.model, padded, torch.tensor([100]))[:, 0, :50]
        b = whisper_hidden_states(enc.model, mel[None], torch.tensor([100]))[:, 0]
    assert (a - b).abs().max().item() < 1e-5


# --- Whisper rebuilt from CTranslate2 ---------------------------------------------------------


def test_ct2_dir_detection(ct2_dir, whisper_dir, tmp_path):
    assert is_ct2_whisper_dir(ct2_dir)
    assert not is_ct2_whisper_dir(whisper_dir)
    (tmp_path / "model.bin").write_bytes(b"not a model")
    assert not is_ct2_whisper_dir(tmp_path)
    with pytest.raises(CT2FormatError):
        read_model_bin(tmp_path / "model.bin")


def test_ct2_aliases_are_resolved(ct2_dir):
    variables = read_model_bin(ct2_dir / "model.bin", keep=lambda n: n.startswith("encoder/")).variables
    assert "encoder/layer_1/ffn/layer_norm/gamma" in variables  # stored as an alias by CTranslate2
    assert np.allclose(variables["encoder/layer_1/ffn/layer_norm/gamma"], 1.0)


def test_ct2_rebuild_matches_transformers_and_ctranslate2(ct2_dir, whisper_dir):
    import ctranslate2

    rebuilt = load_speech_encoder(str(ct2_dir), pad_to_s=30)
    reference = load_speech_encoder(str(whisper_dir), pad_to_s=30)
    assert rebuilt.info.num_layers == 3 and rebuilt.info.dim == 32
    wave = _wave(2.0)
    ours = rebuilt.encode([wave])[0]
    tolerance = 0.2 if "int8" in ct2_dir.name else 5e-3  # quantised weights vs the float32 original
    assert (ours - reference.encode([wave])[0]).abs().max().item() < tolerance

    features = WhisperMel.default()(wave, pad_to_samples=30 * SR)[None].numpy()  # (1, 80, 3000)
    ct2 = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))[0, :100]
    assert np.abs(ours[-1].numpy() - theirs).max() < 1e-4


# --- wav2vec2 family ----------------------------------------------------------------------


def test_hf_speech_shapes_and_frozen(speech_dir):
    enc = load_speech_encoder(str(speech_dir))
    assert (enc.info.num_layers, enc.info.dim, enc.info.frame_rate) == (3, 32, 50.0)
    outs = enc.encode([_wave(1.0), _wave(0.01)])
    assert outs[0].shape == (3, 49, 32)  # conv stack without padding: floor, one frame short of 50
    assert outs[1].shape == (3, 1, 32)  # shorter than the receptive field: padded up to one frame
    assert not any(o.is_inference() for o in outs)
    assert not any(p.requires_grad for p in enc.model.parameters())
    assert not enc.model.training


def test_hf_speech_batched_equals_unbatched(speech_dir):
    enc = load_speech_encoder(str(speech_dir))
    waves = [_wave(s, i) for i, s in enumerate([1.0, 0.43, 1.6])]
    batched = enc.encode(waves, batch_size=3)
    single = [enc.encode([w], batch_size=1)[0] for w in waves]
    assert _max_diff(batched, single) <= 1e-4


def test_hf_speech_long_audio_windows(speech_dir):
    enc = load_speech_encoder(str(speech_dir), max_window_s=2.0)
    out = enc.encode([_wave(5.0)])[0]  # three windows of ~1.67 s
    assert out.shape[0] == 3 and abs(out.shape[1] - 250) <= 3


# --- text ---------------------------------------------------------------------------------


def test_text_encoder_tokens_truncation_and_batching(bert_dir, caplog):
    enc = load_text_encoder(str(bert_dir))
    assert (enc.info.num_layers, enc.info.dim, enc.info.frame_rate) == (1, 32, 0.0)
    texts = ["kids are talking by the door", "", "hello", "dogs " * 40]
    with caplog.at_level(logging.WARNING, logger="dmha.encoders.hf"):
        outs = enc.encode(texts)
    assert [o.shape for o in outs] == [(8, 32), (2, 32), (3, 32), (24, 32)]  # [CLS] ... [SEP]
    assert "truncated" in caplog.text
    assert not any(o.is_inference() for o in outs)
    single = [enc.encode([t], batch_size=1)[0] for t in texts]
    assert _max_diff(outs, single) <= 1e-4
    assert enc.encode([]) == []
    assert not any(p.requires_grad for p in enc.model.parameters())


# --- identity, registry ---------------------------------------------------------------------


def test_identity_follows_settings_and_weights(whisper_dir, speech_dir, tmp_path):
    base = load_speech_encoder(str(whisper_dir)).info.identity
    assert base != load_speech_encoder(str(whisper_dir), pad_to_s=30).info.identity
    assert base != load_speech_encoder(str(whisper_dir), max_window_s=10).info.identity
    assert base == load_speech_encoder(str(whisper_dir), batch_size=1).info.identity  # outputs do not change
    assert load_speech_encoder(str(speech_dir)).info.identity != \
        load_speech_encoder(str(speech_dir), max_window_s=10).info.identity

    copy = tmp_path / "whisper"
    copy.mkdir()
    for f in whisper_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    before = load_speech_encoder(str(copy)).info.identity
    weights = copy / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    clear_cache()
    assert load_speech_encoder(str(copy)).info.identity == before  # by content: a touch changes nothing
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last tensor
    weights.write_bytes(bytes(data))
    clear_cache()
    assert load_speech_encoder(str(copy)).info.identity != before


def test_registry_caches_instances(whisper_dir):
    a = load_speech_encoder(str(whisper_dir), pad_to_s=30.0, batch_size=2)
    assert load_speech_encoder(str(whisper_dir), batch_size=2, pad_to_s=30.0) is a
    assert load_speech_encoder(str(whisper_dir)) is not a


def test_registry_unknown_names_say_what_is_valid():
    with pytest.raises(EncoderNotFoundError, match=r"not a registry name \(valid: whisper-base, whisper-tiny.en\)"):
        load_speech_encoder("no-such-org/no-such-model")
    with pytest.raises(EncoderNotFoundError, match=r"valid: minilm.*Hugging Face hub"):
        load_text_encoder("no-such-org/no-such-model")
    with pytest.raises(EncoderNotFoundError, match=r"valid: tiny.en, base"):
        load_transcriber("no-such-org/no-such-model")


def test_pad_to_s_rejected_for_non_whisper(speech_dir):
    with pytest.raises(ValueError, match="Whisper"):
        load_speech_encoder(str(speech_dir), pad_to_s=30)


# --- packaged models (slow) -------------------------------------------------------------------


def _ravdess_clip(k: int = 0) -> np.ndarray:
    """A RAVDESS sentence ('Kids are talking by the door' for k=0; other actors/emotions for k > 0), or skip."""
    if not RAVDESS_CLIP.is_file():
        pytest.skip(f"RAVDESS clip not found at {RAVDESS_CLIP}; run with ../shared/data/ravdess present")
    import soundfile

    path = RAVDESS_CLIP if k == 0 else sorted(RAVDESS_CLIP.parent.parent.glob("Actor_*/*.flac"))[k * 97]
    wave, sr = soundfile.read(path, dtype="float32")
    assert sr == SR and wave.ndim == 1
    return wave


@pytest.mark.slow
def test_packaged_whisper_base_is_assembled_once(tmp_path, monkeypatch):
    from dmha.encoders import packaged

    monkeypatch.setenv("DMHA_HOME", str(tmp_path))
    first = packaged.whisper_base_dir()
    assert first == tmp_path / "models" / packaged.WHISPER_BASE_DIRNAME
    mtime = (first / "model.bin").stat().st_mtime_ns
    assert packaged.whisper_base_dir() == first and (first / "model.bin").stat().st_mtime_ns == mtime
    assert is_ct2_whisper_dir(first) and not list(first.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("name,dim,layers", [("whisper-base", 512, 7), ("whisper-tiny.en", 384, 5)])
def test_packaged_whisper_matches_ctranslate2(name, dim, layers):
    import ctranslate2

    from dmha.encoders import packaged

    enc = load_speech_encoder(name, pad_to_s=30)
    assert (enc.info.num_layers, enc.info.dim) == (layers, dim)
    model_dir = packaged.whisper_base_dir() if name == "whisper-base" else packaged.whisper_tiny_en_dir()
    wave = _wave(3.0)
    features = WhisperMel.default()(wave, pad_to_samples=30 * SR)[None].numpy()  # (1, 80, 3000)
    ct2 = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))[0]  # (1500, D)
    with torch.inference_mode():
        ours = whisper_hidden_states(enc.encoder, torch.from_numpy(features), torch.tensor([3000]))[-1, 0]
    cosine = torch.nn.functional.cosine_similarity(ours.flatten(), torch.from_numpy(theirs).flatten(), dim=0)
    assert np.abs(ours.numpy() - theirs).max() < 1e-2 and cosine.item() > 0.9999
    assert enc.encode([wave])[0].shape == (layers, 150, dim)


@pytest.mark.slow
def test_packaged_minilm():
    enc = load_text_encoder()
    assert (enc.info.dim, enc.info.num_layers) == (384, 1)
    a, b, c = (o.mean(0) for o in enc.encode(["Kids are talking by the door.", "Children talk near the door.",
                                             "Stock prices fell sharply today."]))
    cos = torch.nn.functional.cosine_similarity
    assert cos(a, b, dim=0) > cos(a, c, dim=0)
    assert enc.encode([""])[0].shape == (2, 384)


@pytest.mark.slow
def test_asr_transcribes_the_example_clips_and_hears_nothing_in_silence():
    """The default ASR on the shipped CREMA-D clips (one batch): each clip's sentence, word for word (case,
    punctuation and Whisper's digits aside), in the order given; silence and an empty wave give ""."""
    import re

    from dmha.audio import load_audio
    from dmha.examples import clips

    def words(text: str) -> list[str]:
        return re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("eleven", "11")).split()

    examples = clips()
    texts = load_transcriber().transcribe([load_audio(c.path) for c in examples])
    assert [words(t) for t in texts] == [words(c.transcript) for c in examples], texts
    assert load_transcriber().transcribe([np.zeros(SR, np.float32), np.zeros(0, np.float32)]) == ["", ""]


@pytest.mark.slow
@pytest.mark.ravdess
@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_asr_on_ravdess(name):
    text = load_transcriber(name).transcribe([_ravdess_clip()])[0]
    assert "door" in text.lower()


def test_asr_long_form_decodes_at_temperature_zero_only():
    """faster-whisper's default temperature fallback samples, which made transcripts vary between runs."""
    from dmha.encoders.asr import FasterWhisperTranscriber

    seen = {}

    class FakeModel:
        def transcribe(self, wave, **kwargs):
            seen.update(kwargs)
            return iter(()), None

    asr = FasterWhisperTranscriber.__new__(FasterWhisperTranscriber)
    asr.model, asr.beam_size, asr.language, asr.vad_filter = FakeModel(), 1, "en", False
    assert asr.transcribe([np.zeros(31 * 16000, dtype=np.float32), np.zeros(10, np.float32)]) == ["", ""]
    assert seen["temperature"] == 0.0


@pytest.mark.slow
@pytest.mark.ravdess
def test_asr_batch_gives_the_batch_of_one_transcripts():
    """Short clips are decoded together; each transcript must not depend on its batch-mates."""
    clips = [_ravdess_clip(k) for k in range(4)] + [np.zeros(16000, np.float32)]
    asr = load_transcriber("tiny.en")
    one = [asr.transcribe([c])[0] for c in clips]
    assert asr.transcribe(clips) == one
    assert all("door" in t.lower() for t in one[:4]) and one[4] == ""


@pytest.mark.slow
@pytest.mark.ravdess
def test_asr_shorter_window_is_a_setting_with_its_own_cache_identity():
    from dmha.encoders.asr import FasterWhisperTranscriber

    short = load_transcriber("tiny.en", window_s=10)
    assert "|window=10" in short.identity and "|window" not in load_transcriber("tiny.en").identity
    assert "door" in short.transcribe([_ravdess_clip()])[0].lower()
    with pytest.raises(ValueError, match="ASR window"):
        FasterWhisperTranscriber("tiny.en", window_s=0.5)


@pytest.mark.slow
def test_the_asr_language_is_a_setting_and_english_only_models_say_so():
    from dmha.config import load
    from dmha.encoders.registry import transcriber
    from dmha.transcription import asr_identity

    german = load(None, ["encoders.asr_language=de"]).encoders
    assert "lang=de" in asr_identity(german) and "lang=" not in asr_identity(load().encoders)  # cached apart
    with pytest.raises(ValueError, match="tiny.en is an English-only Whisper: it cannot transcribe language 'de'"):
        transcriber(german)
