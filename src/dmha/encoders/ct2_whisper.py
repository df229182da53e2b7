"""Whisper encoder rebuilt in transformers from a CTranslate2 model.bin (the packaged defaults)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from dmha.encoders.ct2_format import CT2FormatError, dequantized, read_header, read_model_bin
from dmha.encoders.fingerprint import weights_id
from dmha.encoders.whisper import WhisperSpeechEncoder
from dmha.encoders.whisper_mel import WhisperMel

logger = logging.getLogger(__name__)

_WHISPER_SPEC = "WhisperSpec"
_HEAD_DIM = 64  # every released Whisper uses 64-d heads; fallback when num_heads is not stored


def is_ct2_whisper_dir(path: str | Path) -> bool:
    """Whether `path` is a CTranslate2 (faster-whisper) Whisper model directory."""
    model_bin = Path(path) / "model.bin"
    if not model_bin.is_file():
        return False
    try:
        return read_header(model_bin)[1] == _WHISPER_SPEC
    except (CT2FormatError, OSError, UnicodeDecodeError):
        return False


def _linear(sd: dict, hf: str, v: dict, ct2: str, bias: bool = True) -> None:
    """Copy one CTranslate2 linear (weight (out, in), optional bias) into state dict keys."""
    sd[f"{hf}.weight"] = dequantized(v, f"{ct2}/weight")
    if bias:
        sd[f"{hf}.bias"] = dequantized(v, f"{ct2}/bias")


def _norm(sd: dict, hf: str, v: dict, ct2: str) -> None:
    """CTranslate2 LayerNorm gamma/beta → nn.LayerNorm weight/bias."""
    sd[f"{hf}.weight"] = dequantized(v, f"{ct2}/gamma")
    sd[f"{hf}.bias"] = dequantized(v, f"{ct2}/beta")


def _layer_state(sd: dict, v: dict, i: int) -> None:
    """One encoder layer; the fused (3D, D) QKV projection is split, k's bias dropped as HF has none."""
    ct2, hf = f"encoder/layer_{i}", f"layers.{i}"
    q_w, k_w, v_w = np.split(dequantized(v, f"{ct2}/self_attention/linear_0/weight"), 3)  # 3 × (D, D)
    q_b, _k_b, v_b = np.split(dequantized(v, f"{ct2}/self_attention/linear_0/bias"), 3)  # 3 × (D,)
    # A key bias adds the same score to every key of a query, so softmax ignores it: dropping it is exact.
    sd.update({
        f"{hf}.self_attn.q_proj.weight": q_w, f"{hf}.self_attn.q_proj.bias": q_b,
        f"{hf}.self_attn.k_proj.weight": k_w,
        f"{hf}.self_attn.v_proj.weight": v_w, f"{hf}.self_attn.v_proj.bias": v_b,
    })
    _linear(sd, f"{hf}.self_attn.out_proj", v, f"{ct2}/self_attention/linear_1")
    _norm(sd, f"{hf}.self_attn_layer_norm", v, f"{ct2}/self_attention/layer_norm")
    _linear(sd, f"{hf}.fc1", v, f"{ct2}/ffn/linear_0")
    _linear(sd, f"{hf}.fc2", v, f"{ct2}/ffn/linear_1")
    _norm(sd, f"{hf}.final_layer_norm", v, f"{ct2}/ffn/layer_norm")


def _config(v: dict[str, np.ndarray]) -> WhisperConfig:
    """WhisperConfig with the encoder dimensions read off the tensors."""
    d_model, n_mels, _ = v["encoder/conv1/weight"].shape
    layers = sum(1 for name in v if name.startswith("encoder/layer_") and name.endswith("ffn/linear_0/weight"))
    heads = int(v["encoder/num_heads"]) if "encoder/num_heads" in v else d_model // _HEAD_DIM
    return WhisperConfig(
        d_model=int(d_model),
        num_mel_bins=int(n_mels),
        encoder_layers=layers,
        encoder_attention_heads=heads,
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
    )


def build_whisper_encoder(model_dir: str | Path) -> WhisperEncoder:
    """float32 transformers WhisperEncoder holding the encoder weights of a CTranslate2 Whisper dir."""
    model = read_model_bin(Path(model_dir) / "model.bin", keep=lambda name: name.startswith("encoder/"))
    if model.spec_name != _WHISPER_SPEC:
        raise CT2FormatError(f"{model_dir} holds a {model.spec_name}, not a {_WHISPER_SPEC}")
    v = model.variables
    config = _config(v)
    sd: dict[str, np.ndarray] = {
        "conv1.weight": dequantized(v, "encoder/conv1/weight"),  # (D, n_mels, 3) as nn.Conv1d
        "conv1.bias": dequantized(v, "encoder/conv1/bias"),
        "conv2.weight": dequantized(v, "encoder/conv2/weight"),  # (D, D, 3)
        "conv2.bias": dequantized(v, "encoder/conv2/bias"),
        "embed_positions.weight": dequantized(v, "encoder/position_encodings/encodings"),  # (P, D)
    }
    for i in range(config.encoder_layers):
        _layer_state(sd, v, i)
    _norm(sd, "layer_norm", v, "encoder/layer_norm")
    encoder = WhisperEncoder(config)
    encoder.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in sd.items()}, strict=True)
    logger.info(
        "rebuilt Whisper encoder from %s: %d layers, %d-d, %d heads, %d mels",
        model_dir, config.encoder_layers, config.d_model, config.encoder_attention_heads, config.num_mel_bins,
    )
    return encoder.eval().requires_grad_(False)


def load_ct2_whisper(
    model_dir: str | Path,
    *,
    name: str | None = None,
    device: str = "cpu",
    pad_to_s: float = 0.0,
    max_window_s: float = 30.0,
    batch_size: int = 8,
) -> WhisperSpeechEncoder:
    """SpeechEncoder over a CTranslate2 Whisper dir.

    Parameters: model_dir (holds model.bin), name (reported in EncoderInfo; defaults to the dir),
    device, pad_to_s (0 = true length, 30 = Whisper's padded window), max_window_s (true-length
    window, at most 30 s), batch_size.
    Example: `load_ct2_whisper(whisper_base_dir(), name="whisper-base").encode([wave])[0].shape  # (7, T, 512)`.
    """
    encoder = build_whisper_encoder(model_dir)
    return WhisperSpeechEncoder(
        encoder,
        WhisperMel.default(encoder.config.num_mel_bins),
        name=name or str(model_dir),
        weights_id=weights_id("ct2-whisper", model_dir, label=name),
        device=device,
        pad_to_s=pad_to_s,
        max_window_s=max_window_s,
        batch_size=batch_size,
    )
