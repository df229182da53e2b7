"""Partial fine-tuning's foundation: cached prefix + live top layers = the frozen encoder, for each family."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model,
                          WavLMConfig, WavLMModel, WhisperConfig, WhisperFeatureExtractor,
                          WhisperForConditionalGeneration)

from dmha.encoders.hf import HFSpeechEncoder
from dmha.encoders.top_layers import TopLayers

SR = 16000
LAYERS = 3  # transformer layers; hidden states 0..3
TINY = dict(hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
FAMILIES = {
    "wav2vec2-group": (Wav2Vec2Config, Wav2Vec2Model, dict(feat_extract_norm="group")),
    "wav2vec2-stable": (Wav2Vec2Config, Wav2Vec2Model, dict(feat_extract_norm="layer", do_stable_layer_norm=True)),
    "hubert-stable": (HubertConfig, HubertModel, dict(feat_extract_norm="layer", do_stable_layer_norm=True)),
    "wavlm-group": (WavLMConfig, WavLMModel, dict(feat_extract_norm="group", num_buckets=16, max_bucket_distance=64)),
    "wavlm-stable": (WavLMConfig, WavLMModel, dict(feat_extract_norm="layer", do_stable_layer_norm=True,
                                                    num_buckets=16, max_bucket_distance=64)),
}


def _spread(model: torch.nn.Module) -> None:
    """Random weights well away from init (norms at ones would hide a missing final norm)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" not in name:
                p.normal_(0, 0.2)


@pytest.fixture(scope="module", params=["whisper", *FAMILIES])
def encoder(request, tmp_path_factory) -> HFSpeechEncoder:
    """A tiny 3-layer random-init speech encoder of each family, loaded the way dmha loads any HF model."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(request.param)
    if request.param == "whisper":
        model = WhisperForConditionalGeneration(WhisperConfig(
            d_model=32, encoder_layers=LAYERS, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=128, max_target_positions=16, num_mel_bins=80,
            pad_token_id=1, bos_token_id=2, eos_token_id=2, decoder_start_token_id=3))
        _spread(model.model.encoder)
        model.save_pretrained(path)
        WhisperFeatureExtractor().save_pretrained(path)
    else:
        config_cls, model_cls, extra = FAMILIES[request.param]
        model = model_cls(config_cls(**TINY, **extra))
        _spread(model.encoder)
        model.save_pretrained(path)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True,
                                 return_attention_mask=extra["feat_extract_norm"] == "layer").save_pretrained(path)
    return HFSpeechEncoder(str(path))


def _padded(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-utterance (L, T_i, D) → (B, L, T, D) zero-padded, mask (B, T)."""
    t = max(s.shape[1] for s in states)
    out = torch.zeros(len(states), states[0].shape[0], t, states[0].shape[2])
    mask = torch.zeros(len(states), t, dtype=torch.bool)
    for i, s in enumerate(states):
        out[i, :, : s.shape[1]], mask[i, : s.shape[1]] = s, True
    return out, mask


@pytest.mark.parametrize("n", [1, 2, LAYERS])
def test_prefix_plus_live_top_layers_equals_the_full_encoder(encoder, n):
    """Before training, states L-N..L-1 recomputed from the cached state L-1-N are the encoder's own,
    in a padded batch of different lengths (each family's mask, WavLM's relative bias, final norms)."""
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(int(SR * s)).astype(np.float32) * 0.1 for s in (0.9, 0.5, 1.3)]
    full = encoder.encode(waves)  # each (L, T_i, D), L = LAYERS + 1
    top = TopLayers(encoder, n).eval()
    cached, mask = _padded(full)
    with torch.no_grad():
        live = top(cached[:, LAYERS - n], mask)  # (B, N, T, D)
    for i, states in enumerate(full):
        frames = states.shape[1]
        expected = states[LAYERS + 1 - n:]  # (N, T_i, D)
        scale = expected.abs().max()
        assert (live[i, :, :frames] - expected).abs().max() <= 1e-5 * max(1.0, float(scale)), (i, n)


def test_live_layers_are_trainable_copies_and_the_encoder_stays_frozen(encoder):
    top = TopLayers(encoder, 1)
    params = list(top.parameters())
    assert params and all(p.requires_grad for p in top.layers.parameters())
    frozen = {id(p) for p in encoder.model.parameters()}
    assert not any(id(p) in frozen for p in params)  # copies: training them leaves the encoder as it was
    if top.relative_bias is not None:  # WavLM's bias table belongs to layer 0, below the live layers
        assert not top.relative_bias.rel_attn_embed.weight.requires_grad


def test_bad_layer_counts_are_named(encoder):
    with pytest.raises(ValueError, match="finetune_layers=4"):
        TopLayers(encoder, LAYERS + 1)
    with pytest.raises(ValueError, match="finetune_layers=0"):
        TopLayers(encoder, 0)
