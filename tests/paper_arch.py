"""The paper's encoders as hand-written architecture configs: full size, random weights, no download.

Shapes follow the published checkpoints' config.json (and torchaudio's wav2vec2/HuBERT/WavLM
builders): all four speech models are 24-layer, 1024-wide post-2020 "large" transformers with a
7-layer convolutional front end (320x downsampling, 50 frames/s), layer-normalised conv features and
pre-layer-norm ("stable") blocks. They differ in conv biases (wav2vec2 and XLS-R have them, HuBERT
and WavLM not) and in WavLM's gated relative position bias. Dropouts are the checkpoints' but only
matter in training mode; the encoders here run frozen in eval mode.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import (
    BertConfig,
    BertModel,
    HubertConfig,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

# Common to the four: the large 24 x 1024 transformer over a 7-layer conv front end.
_LARGE = dict(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    hidden_act="gelu", layer_norm_eps=1e-5, conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2), feat_extract_norm="layer", feat_extract_activation="gelu",
    do_stable_layer_norm=True, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
)


def wav2vec2_large_lv60() -> Wav2Vec2Config:
    """facebook/wav2vec2-large-lv60 (the paper's "wav2vec2.0 large-lv60k")."""
    return Wav2Vec2Config(**_LARGE, conv_bias=True, hidden_dropout=0.1, attention_dropout=0.1,
                          activation_dropout=0.1, feat_proj_dropout=0.1, layerdrop=0.1, mask_time_prob=0.05,
                          vocab_size=32)


def xls_r_300m() -> Wav2Vec2Config:
    """facebook/wav2vec2-xls-r-300m: the wav2vec2 large shape, pre-trained on 128 languages."""
    return Wav2Vec2Config(**_LARGE, conv_bias=True, hidden_dropout=0.1, attention_dropout=0.1,
                          activation_dropout=0.0, feat_proj_dropout=0.1, layerdrop=0.1, mask_time_prob=0.075,
                          vocab_size=32)


def hubert_large_ll60k() -> HubertConfig:
    """facebook/hubert-large-ll60k: no conv biases; layer norm before the feature projection."""
    return HubertConfig(**_LARGE, conv_bias=False, feat_proj_layer_norm=True, hidden_dropout=0.1,
                        attention_dropout=0.1, activation_dropout=0.0, feat_proj_dropout=0.1, layerdrop=0.1,
                        mask_time_prob=0.05, vocab_size=32)


def wavlm_large() -> WavLMConfig:
    """microsoft/wavlm-large: no conv biases; gated relative position bias (320 buckets, distance 800)."""
    return WavLMConfig(**_LARGE, conv_bias=False, num_buckets=320, max_bucket_distance=800,
                       hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.0, feat_proj_dropout=0.1,
                       layerdrop=0.1, mask_time_prob=0.05, vocab_size=32)


def bert_large_uncased() -> BertConfig:
    """bert-large-uncased: 24 layers, 1024 wide, 16 heads, WordPiece vocabulary of 30522."""
    return BertConfig(vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                      intermediate_size=4096, hidden_act="gelu", max_position_embeddings=512, type_vocab_size=2,
                      layer_norm_eps=1e-12)


@dataclass(frozen=True)
class Arch:
    """One of the paper's encoders: the id a config names, and how to build its shape."""

    hf_id: str
    config: Callable[[], PretrainedConfig]
    model: type[PreTrainedModel]


SPEECH: dict[str, Arch] = {
    "facebook/wav2vec2-large-lv60": Arch("facebook/wav2vec2-large-lv60", wav2vec2_large_lv60, Wav2Vec2Model),
    "facebook/wav2vec2-xls-r-300m": Arch("facebook/wav2vec2-xls-r-300m", xls_r_300m, Wav2Vec2Model),
    "facebook/hubert-large-ll60k": Arch("facebook/hubert-large-ll60k", hubert_large_ll60k, HubertModel),
    "microsoft/wavlm-large": Arch("microsoft/wavlm-large", wavlm_large, WavLMModel),
}
TEXT: dict[str, Arch] = {"bert-large-uncased": Arch("bert-large-uncased", bert_large_uncased, BertModel)}


def build_frozen(arch: Arch) -> PreTrainedModel:
    """Random-init model of that shape, frozen the way dmha freezes encoders (eval, no grad)."""
    torch.manual_seed(zlib.crc32(arch.hf_id.encode()))  # same-shaped models still get different weights
    return arch.model(arch.config()).eval().requires_grad_(False)


def num_params(module: torch.nn.Module) -> int:
    """All parameters, trainable or not."""
    return sum(p.numel() for p in module.parameters())
