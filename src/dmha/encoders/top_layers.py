"""The speech encoder's top N transformer layers, run live on a cached lower hidden state (partial fine-tuning).

The feature store keeps every hidden state 0..L-1 of the frozen encoder. To fine-tune only the top N
layers, the head reads states 0..L-1-N from the store and recomputes states L-N..L-1 here, from state
L-1-N, with trainable copies of the encoder's own top N layers. Before any training the result equals
the frozen encoder's states (tests check 1e-5 for each family); an epoch costs the head plus N layers,
not the encoder.

What each family needs besides the layers themselves:
- Whisper: positions are added before the first layer, so they are already in the cached states; the
  last state is reported after the encoder's final layer norm.
- wav2vec2 / HuBERT / XLS-R / data2vec-audio: the positional convolution runs before the first layer
  (cached too); "stable layer norm" variants (the large models) have a final layer norm, which the
  reported last state includes or not depending on the transformers version (asked, not assumed);
  the others normalise before the first layer (already in state 0).
- WavLM: the first layer computes a relative position bias from the sequence length and passes it on
  to every later layer; the live layers get it from a frozen copy of that table.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

FAMILIES = ("whisper", "wav2vec2", "wavlm")


def _transformer(speech_encoder) -> tuple[str, nn.Module, object]:
    """(family, the encoder's transformer stack, its config) of a dmha speech encoder."""
    whisper = getattr(speech_encoder, "_whisper", None) or speech_encoder
    if hasattr(whisper, "mel") and hasattr(whisper, "encoder"):  # WhisperSpeechEncoder (HF or CT2 weights)
        return "whisper", whisper.encoder, whisper.encoder.config
    model = getattr(speech_encoder, "model", None)
    stack = getattr(model, "encoder", None)
    if stack is None or not hasattr(stack, "layers"):
        name = getattr(getattr(speech_encoder, "info", None), "name", type(speech_encoder).__name__)
        raise ValueError(f"encoders.finetune_layers: {name} is not a transformers speech encoder dmha can split "
                         f"(Whisper, wav2vec2, HuBERT, XLS-R, WavLM); use finetune_layers=0")
    family = "wavlm" if model.config.model_type == "wavlm" else "wav2vec2"
    return family, stack, model.config


def _reports_normed_last_state(model: nn.Module) -> bool:
    """Whether a stable-layer-norm model's last reported hidden state is after its final layer norm.

    transformers 4 reported it normed, transformers 5 reports the last layer's raw output (and puts the
    normed one in last_hidden_state only); the live layers must give what the store holds, so ask the
    model itself, on 0.1 s of silence."""
    param = next(model.parameters())
    with torch.no_grad():
        out = model(torch.zeros(1, 1600, dtype=param.dtype, device=param.device), output_hidden_states=True)
    return bool(torch.allclose(out.hidden_states[-1], out.last_hidden_state))


class _RelativeBias(nn.Module):
    """WavLM's bucketed relative position bias table (frozen: it belongs to layer 0, below the live layers)."""

    def __init__(self, attention: nn.Module):
        super().__init__()
        self.num_heads, self.num_buckets, self.max_distance = attention.num_heads, attention.num_buckets, attention.max_distance
        self.rel_attn_embed = copy.deepcopy(attention.rel_attn_embed).requires_grad_(False)
        self._bias, self._bucket = type(attention).compute_bias, type(attention)._relative_positions_bucket

    def _relative_positions_bucket(self, relative_positions: torch.Tensor) -> torch.Tensor:
        return self._bucket(self, relative_positions)

    def forward(self, batch: int, frames: int) -> torch.Tensor:
        """(B·H, T, T): what WavLM's first layer hands to the next ones."""
        bias = self._bias(self, frames, frames)  # (H, T, T)
        return bias.unsqueeze(0).expand(batch, -1, -1, -1).reshape(batch * self.num_heads, frames, frames)


class TopLayers(nn.Module):
    """Trainable copies of a speech encoder's top `n` layers: state L-1-N (B, T, D) → states L-N..L-1 (B, N, T, D).

    Parameters: speech_encoder (a loaded dmha speech encoder, all hidden states), n (1..L-1).
    The copies start from the encoder's pre-trained weights; the encoder itself is left untouched.
    Example: `TopLayers(load_speech_encoder("whisper-base"), 2)(cached[:, -3], mask)  # (B, 2, T, 512)`.
    """

    def __init__(self, speech_encoder, n: int):
        super().__init__()
        family, stack, config = _transformer(speech_encoder)
        total = len(stack.layers)
        if not 1 <= n <= total:
            raise ValueError(f"encoders.finetune_layers={n}: the speech encoder has {total} transformer layers")
        self.family, self.n, self.config = family, n, config
        self.layers = copy.deepcopy(stack.layers[total - n:]).requires_grad_(True)
        final_norm = family == "whisper" or (bool(getattr(config, "do_stable_layer_norm", False))
                                             and _reports_normed_last_state(speech_encoder.model))
        self.final_norm = copy.deepcopy(stack.layer_norm).requires_grad_(True) if final_norm else None
        self.relative_bias = _RelativeBias(stack.layers[0].attention) if family == "wavlm" else None
        self.train()  # copies of an encoder in eval mode: follow the head's mode (dropout while training)

    def _attention_mask(self, x: torch.Tensor, mask: torch.Tensor | None):
        """Each family's own mask format for (B, T) booleans (True = a real frame)."""
        if self.family == "wavlm":
            return None if mask is None else mask.long()
        if mask is None or bool(mask.all()):
            return None
        if self.family == "whisper":  # additive (B, 1, 1, T), as dmha's Whisper front end builds it
            additive = torch.zeros(mask.shape[0], 1, 1, mask.shape[1], dtype=x.dtype, device=x.device)
            return additive.masked_fill_(~mask[:, None, None, :], torch.finfo(x.dtype).min)
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.config, inputs_embeds=x, attention_mask=mask.long())

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: hidden state L-1-N (B, T, D), mask (B, T) → the N states above it (B, N, T, D)."""
        attention_mask = self._attention_mask(x, mask)
        bias = self.relative_bias(x.shape[0], x.shape[1]) if self.relative_bias is not None else None
        states = []
        for layer in self.layers:
            if self.family == "wavlm":
                x, bias = layer(x, attention_mask=attention_mask, position_bias=bias)[:2]
            else:
                out = layer(x, attention_mask)
                x = out[0] if isinstance(out, tuple) else out
            states.append(x)
        if self.final_norm is not None:
            states[-1] = self.final_norm(states[-1])
        return torch.stack(states, dim=1)  # (B, N, T, D)
