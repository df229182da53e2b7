"""The Double Multi-Head Attention multimodal head (Costa, India, Hernando, Odyssey 2024, §3-4).

It takes frozen-encoder outputs, never the encoders, so training can feed cached features and
inference live ones. Every softmax is masked, so padding never changes a result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig
from .speaker_norm import batch_speaker_moments, raw_to_z, shrunk_z_stats


# Standard MHA's attention weights are H·T² floats: 4096 positions (about 80 s of speech) is 256 MiB
# per item at H = 4. Longer inputs get their prediction, not their weights (see DMHA.forward).
MAX_ATTENTION_POSITIONS = 4096


class AttentionTooLong(ValueError):
    """Attention weights asked for an input too long to hold them."""


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    """Softmax where mask=False entries get exactly zero weight."""
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim)


class FeatureNorm(nn.Module):
    """Fixed normalisation of frozen-encoder outputs before the head sees them.

    `standardize`: per layer and dimension, with mean/std of the training features (stored as
    buffers, so they travel in model.safetensors). Whisper has a few dimensions with magnitudes in
    the hundreds; standardising stops them from dominating the layer sum and the attention scores.
    `speaker`: standardised, then standardised again by the speaker's own statistics, shrunk toward
    the training corpus's with `prior_frames` frames of weight (dmha.speaker_norm); the speaker's
    moments come with the batch, or else the utterance's own frames are its speaker.
    `layernorm`: parameter-free layer norm of each hidden state (SUPERB's featurizer). `none`: as is.
    """

    def __init__(self, mode: str, shape: tuple[int, ...], prior_frames: float = 0.0):
        super().__init__()
        self.mode, self.prior_frames = mode, float(prior_frames)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None, speaker: dict | None = None
                ) -> torch.Tensor:
        """hidden (B, L, T, D) with stats (L, D), or (B, T, D) with stats (D,); `mask` (B, T) and the
        batch's speaker moments only matter for `speaker`."""
        if self.mode == "layernorm":
            return F.layer_norm(hidden, hidden.shape[-1:])
        a, b = self.affine(hidden, mask, speaker)
        if a.dim() == 3:  # per item (B, L, D)
            return hidden * a[:, :, None, :] + b[:, :, None, :]
        if hidden.dim() == 4:
            return hidden * a[:, None, :] + b[:, None, :]
        return hidden * a + b

    def affine(self, hidden: torch.Tensor | None = None, mask: torch.Tensor | None = None,
               speaker: dict | None = None) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """(a, b) with norm(h) = h·a + b: per layer and dimension (L, D), per item (B, L, D) for
        `speaker`, or (None, None) where the norm is not affine (layernorm)."""
        if self.mode == "standardize":
            return 1 / self.std, -self.mean / self.std
        if self.mode == "none":
            return torch.ones_like(self.mean), torch.zeros_like(self.mean)
        if self.mode == "speaker":
            mean_z, std_z = self._speaker_stats(hidden, mask, speaker)  # (B, L, D) in standardised units
            # ((h - m0) / s0 - μ) / σ = h / (s0 σ) - (m0 / s0 + μ) / σ
            return 1 / (self.std * std_z), -(self.mean / self.std + mean_z) / std_z
        return None, None

    def _speaker_stats(self, hidden: torch.Tensor, mask: torch.Tensor | None, speaker: dict | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        if speaker is not None:  # the speaker's raw moments (float64), turned into standardised units
            z_total, z_squares = raw_to_z(speaker["speaker_frames"], speaker["speaker_total"],
                                          speaker["speaker_squares"], self.mean, self.std)
            frames = speaker["speaker_frames"]
        else:  # the utterance alone, one layer at a time (no (B, L, T, D) copy)
            b, layers, t, d = hidden.shape
            keep = (mask if mask is not None else torch.ones(b, t, dtype=torch.bool, device=hidden.device))
            keep = keep[:, :, None].to(self.mean.dtype)
            z_total = hidden.new_zeros(b, layers, d, dtype=self.mean.dtype)
            z_squares = torch.zeros_like(z_total)
            for layer in range(layers):
                z = (hidden[:, layer].to(self.mean.dtype) - self.mean[layer]) / self.std[layer] * keep  # (B, T, D)
                z_total[:, layer], z_squares[:, layer] = z.sum(1), (z * z).sum(1)
            frames = keep.sum((1, 2))
        mean_z, std_z = shrunk_z_stats(frames, z_total, z_squares, self.prior_frames)
        return mean_z.to(self.mean.dtype), std_z.to(self.mean.dtype)


class LayerWeightedSum(nn.Module):
    """Softmax-normalised learned weights over all encoder hidden states (§4.1, SUPERB-style)."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))  # zeros → uniform weights

    @property
    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def forward(self, hidden: torch.Tensor, norm: FeatureNorm | None = None, mask: torch.Tensor | None = None,
                speaker: dict | None = None) -> torch.Tensor:
        """hidden (B, L, T, D) → Σ_l w_l · norm_l(h_l): (B, T, D).

        An affine norm (standardize, speaker, none) is folded into the weights,
        Σ_l h_l·(w_l·a_l) + Σ_l w_l·b_l, one layer at a time: the normalised (B, L, T, D) copy and its
        gradient are never built (2-3x faster on CPU than normalising first; equal to 1e-6)."""
        w = self.weights.to(hidden.dtype)
        affine = norm.affine(hidden, mask, speaker) if norm is not None else (None, None)
        if affine[0] is None:  # layernorm is not affine per layer: normalise, then sum
            hidden = norm(hidden) if norm is not None else hidden
            return torch.einsum("l,bltd->btd", w, hidden)
        a, b = (x.to(hidden.dtype) for x in affine)
        if a.dim() == 2:  # one (L, D) affine for every item
            scale, shift = (w[:, None] * a)[None, :, None, :], (w[:, None] * b).sum(0)  # (1, L, 1, D), (D,)
        else:  # per item (B, L, D): broadcast over time
            scale, shift = (w[None, :, None] * a)[:, :, None, :], (w[None, :, None] * b).sum(1)[:, None, :]  # (B, L, 1, D), (B, 1, D)
        out = hidden[:, 0] * scale[:, 0]
        for layer in range(1, hidden.shape[1]):
            out = out + hidden[:, layer] * scale[:, layer]
        return out + shift


def _query(shape: tuple[int, ...], init: str) -> torch.Tensor:
    """An attention query: `random` (scaled normal, the usual init) or `zero`, so that attention starts
    as mean pooling and moves away from it only as far as the loss asks."""
    if init == "zero":
        return torch.zeros(shape)
    return torch.randn(shape) / math.sqrt(shape[-1])


class StandardMHA(nn.Module):
    """Eqs 1-2: H heads, each with its own D×D projections; W^O maps H·D back to D; T outputs."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.dim, self.heads = dim, heads
        self.w_q = nn.Linear(dim, heads * dim, bias=False)  # [W_1^Q … W_H^Q]
        self.w_k = nn.Linear(dim, heads * dim, bias=False)
        self.w_v = nn.Linear(dim, heads * dim, bias=False)
        self.w_o = nn.Linear(heads * dim, dim, bias=False)  # W^O ∈ R^{HD×D}

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x (B, T, D), mask (B, T) → outputs (B, T, D), their mask (B, T), weights (B, H, T, T) or None.

        Without `need_weights` the T×T weights are never built (fused scaled-dot-product attention,
        memory linear in T): a long recording costs its frames, not their square."""
        b, t, d = x.shape
        q = self.w_q(x).view(b, t, self.heads, d).transpose(1, 2)  # (B, H, T, D)
        k = self.w_k(x).view(b, t, self.heads, d).transpose(1, 2)  # (B, H, T, D)
        v = self.w_v(x).view(b, t, self.heads, d).transpose(1, 2)  # (B, H, T, D)
        if need_weights:
            scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # (B, H, T, T)
            weights = masked_softmax(scores, mask[:, None, None, :])  # (B, H, T, T)
            out = weights @ v
        else:
            weights, out = None, F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        heads = out.transpose(1, 2).reshape(b, t, self.heads * d)  # concat(head_1..H): (B, T, H·D)
        return self.w_o(heads), mask, weights  # (B, T, D)


class SubVectorMHA(nn.Module):
    """Eqs 3-4: split D into H sub-vectors; each head pools its sub-vectors with one query u_j; H outputs."""

    def __init__(self, dim: int, heads: int, query_init: str = "random"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"sub-vector MHA needs the width D={dim} to be divisible by heads H={heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.queries = nn.Parameter(_query((heads, self.head_dim), query_init))  # u_j

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D), mask (B, T) → head vectors c_j (B, H, D/H), all-true mask (B, H), weights (B, H, T).
        Its weights are linear in T, so they are always returned."""
        b, t, _ = x.shape
        h = x.view(b, t, self.heads, self.head_dim)  # h_tj: (B, T, H, D/H)
        scores = torch.einsum("bthd,hd->bht", h, self.queries) / math.sqrt(self.head_dim)  # (B, H, T)
        weights = masked_softmax(scores, mask[:, None, :])  # w_tj: (B, H, T)
        pooled = torch.einsum("bht,bthd->bhd", weights, h)  # c_j: (B, H, D/H)
        return pooled, torch.ones(b, self.heads, dtype=torch.bool, device=x.device), weights


class AttentionPooling(nn.Module):
    """Eqs 5-6: one trainable query u' weighs the first layer's L vectors into one utterance vector c."""

    def __init__(self, dim: int, query_init: str = "random"):
        super().__init__()
        self.query = nn.Parameter(_query((dim,), query_init))  # u' ∈ R^C

    def forward(self, c: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """c (B, L, C), mask (B, L) → pooled (B, C), weights (B, L)."""
        scores = c @ self.query / math.sqrt(c.shape[-1])  # (B, L)
        weights = masked_softmax(scores, mask)  # w'_l: (B, L)
        return torch.einsum("bl,blc->bc", weights, c), weights  # (B, C)


class Classifier(nn.Module):
    """Input layer of width C, N hidden layers of 512, each LayerNorm + GELU + Dropout; logits out (§4.4, §5.2).

    With emotional attributes (model.targets) a second output layer on the same hidden vector gives one
    value per attribute in [0, 1] (a sigmoid; dmha.targets maps it to the attribute's declared range)."""

    def __init__(self, in_dim: int, num_classes: int, hidden_layers: int, hidden_dim: int, dropout: float,
                 num_attributes: int = 0):
        super().__init__()
        widths = [in_dim, in_dim] + [hidden_dim] * hidden_layers
        blocks = [
            nn.Sequential(nn.Linear(a, b), nn.LayerNorm(b), nn.GELU(), nn.Dropout(dropout))
            for a, b in zip(widths[:-1], widths[1:])
        ]
        self.layers = nn.Sequential(*blocks)
        self.output = nn.Linear(widths[-1], num_classes)
        self.attributes = nn.Linear(widths[-1], num_attributes) if num_attributes else None

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """c (B, C) → logits (B, n_classes), attributes (B, A) in [0, 1] or None."""
        hidden = self.layers(c)
        attributes = torch.sigmoid(self.attributes(hidden)) if self.attributes is not None else None
        return self.output(hidden), attributes


@dataclass
class DMHAOutput:
    """Logits, and on request the attention weights of both stages (for plots)."""

    logits: torch.Tensor  # (B, n_classes)
    attention: dict[str, torch.Tensor] = field(default_factory=dict)
    attributes: torch.Tensor | None = None  # (B, A) in [0, 1], when the head predicts attributes


@dataclass(frozen=True)
class HeadDims:
    """What the head's shapes follow (whisper's ModelDimensions): the speech encoder's hidden states and
    width, the text encoder's width (0: speech only) and the classes. config.json stores it as `head`."""

    speech_layers: int
    speech_dim: int
    text_dim: int
    num_classes: int


class DMHA(nn.Module):
    """Speech layers → weighted sum; text last layer; project to D; concat; MHA; attention pooling; MLP."""

    def __init__(self, dims: HeadDims, config: ModelConfig):
        super().__init__()
        self.dims = dims  # what the model directory records to rebuild it
        speech_layers, speech_dim, text_dim, num_classes = (dims.speech_layers, dims.speech_dim, dims.text_dim,
                                                            dims.num_classes)
        dim = config.dim or speech_dim
        self.speech_norm = FeatureNorm(config.feature_norm, (speech_layers, speech_dim), config.speaker_prior_frames)
        # Transcripts say nothing of the speaker's voice: text features are standardised, not per speaker.
        # text_dim = 0: a speech-only model (encoders.text = "none"), no text branch at all.
        self.text_norm = FeatureNorm("standardize" if config.feature_norm == "speaker" else config.feature_norm,
                                     (text_dim,)) if text_dim else None
        self.layer_sum = LayerWeightedSum(speech_layers)
        # Projection only where a width differs from D (the paper: both 1024, no projection).
        self.speech_proj = nn.Linear(speech_dim, dim) if speech_dim != dim else nn.Identity()
        self.text_proj = (nn.Linear(text_dim, dim) if text_dim != dim else nn.Identity()) if text_dim else None
        if config.attention == "standard":
            self.first = StandardMHA(dim, config.heads)
            pooled_dim = dim
        else:
            self.first = SubVectorMHA(dim, config.heads, config.query_init)
            pooled_dim = dim // config.heads
        self.pooling = AttentionPooling(pooled_dim, config.query_init)
        self.attribute_names = [t for t in config.targets if t != "category"]  # outputs beside the logits
        self.classifier = Classifier(pooled_dim, num_classes, config.hidden_layers, config.hidden_dim, config.dropout,
                                     len(self.attribute_names))
        # Partial fine-tuning (encoders.finetune_layers = N): the encoder's top N layers, trainable, recompute
        # hidden states L-N..L-1 from the cached state L-1-N (dmha.encoders.top_layers); None = frozen encoder.
        self.top: nn.Module | None = None
        # Probabilities are softmax(logits / temperature): 1 until calibrated (dmha.calibration, calibration.json)
        self.temperature = 1.0

    def forward(
        self,
        speech: torch.Tensor,
        speech_mask: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        return_attention: bool = False,
        speaker: dict[str, torch.Tensor] | None = None,
    ) -> DMHAOutput:
        """speech (B, L, T1, Ds), speech_mask (B, T1), text (B, T2, Dt), text_mask (B, T2) → logits (B, K).

        `speaker` (feature_norm=speaker): each item's speaker moments, speaker_frames (B,), speaker_total
        and speaker_squares (B, L, Ds) (dmha.speaker_norm.batch_moments); None: each item alone."""
        if self.top is not None:  # h_{L-N..L-1} = live top layers(h_{L-1-N}); the frozen ones below stay cached
            n = self.top.n
            live = self.top(speech[:, -n - 1].float(), speech_mask).to(speech.dtype)  # (B, N, T1, Ds)
            speech = torch.cat([speech[:, :-n], live], dim=1)  # (B, L, T1, Ds)
        s = self.layer_sum(speech, self.speech_norm, speech_mask, speaker)  # Σ_l w_l·norm(h_l): (B, T1, Ds)
        s = self.speech_proj(s)  # (B, T1, D)
        if self.text_proj is not None:
            x = torch.cat([s, self.text_proj(self.text_norm(text))], dim=1)  # early fusion: (B, T1+T2, D)
            mask = torch.cat([speech_mask, text_mask], dim=1)  # (B, T)
        else:  # speech only: (B, T1, D)
            x, mask, text_mask = s, speech_mask, text_mask[:, :0]
        if return_attention and isinstance(self.first, StandardMHA) and mask.shape[1] > max_attention_positions():
            raise AttentionTooLong(
                f"attention weights of standard MHA over {mask.shape[1]} positions would take "
                f"{self.first.heads * mask.shape[1] ** 2 * 4 / 2 ** 30:.1f} GiB per item; they are given for inputs "
                f"up to {max_attention_positions()} positions (about 80 s at 4096): predict without them, or use segments")
        c, c_mask, first_weights = self.first(x, mask, need_weights=return_attention)  # (B, L, C)
        pooled, pool_weights = self.pooling(c, c_mask)  # (B, C)
        logits, attributes = self.classifier(pooled)  # (B, K), (B, A) or None
        out = DMHAOutput(logits, attributes=attributes)
        if return_attention:
            out.attention = {
                "first": first_weights,  # standard: (B, H, T, T); subvector: (B, H, T)
                "pooling": pool_weights,  # standard: (B, T); subvector: (B, H)
                "is_speech": torch.cat([speech_mask, torch.zeros_like(text_mask)], dim=1),  # (B, T)
                "mask": mask,
            }
        return out

    @torch.no_grad()
    def set_feature_stats(self, stats: dict[str, torch.Tensor]) -> None:
        """The training features' statistics for `feature_norm=standardize` (and `speaker`, whose prior they
        are): speech_mean/std (L, Ds), text_mean/std (Dt,). Buffers, so they travel in model.safetensors."""
        self.speech_norm.mean.copy_(stats["speech_mean"]), self.speech_norm.std.copy_(stats["speech_std"])
        if self.text_norm is not None:
            self.text_norm.mean.copy_(stats["text_mean"]), self.text_norm.std.copy_(stats["text_std"])

    @torch.inference_mode()
    def predict_proba(self, batch: dict, return_attention: bool = False):
        """Class probabilities (B, K) for a collated batch, and the attention weights on request."""
        probs, _, attention = self.predict_all(batch, return_attention)
        return probs, attention

    @torch.inference_mode()
    def predict_all(self, batch: dict, return_attention: bool = False):
        """Class probabilities (B, K), attributes (B, A) in [0, 1] (None without attribute outputs) and
        the attention weights on request, for a collated batch."""
        out = self(batch["speech"], batch["speech_mask"], batch["text"], batch["text_mask"], return_attention,
                   batch_speaker_moments(batch))
        attributes = out.attributes.float() if out.attributes is not None else None
        return torch.softmax(out.logits.float() / self.temperature, dim=-1), attributes, out.attention

    @torch.inference_mode()
    def logits(self, batch: dict) -> torch.Tensor:
        """The raw logits (B, K) of a collated batch, before any temperature (what calibration fits)."""
        return self(batch["speech"], batch["speech_mask"], batch["text"], batch["text_mask"],
                    speaker=batch_speaker_moments(batch)).logits.float()


def unpad_attention(attention: dict, i: int, t1: int, t2: int, t1_pad: int) -> dict[str, np.ndarray]:
    """Item i's attention weights with padding removed (positions: speech frames, then text tokens)."""
    keep = torch.cat([torch.arange(t1), t1_pad + torch.arange(t2)])
    first, pooling = attention["first"][i], attention["pooling"][i]
    if first.dim() == 3:  # standard MHA: (H, T, T) weights, pooling over its T outputs
        first, pooling = first[:, keep][:, :, keep], pooling[keep]
    else:  # sub-vector MHA: (H, T) weights, pooling over its H head vectors
        first = first[:, keep]
    return {"first": first.float().cpu().numpy(), "pooling": pooling.float().cpu().numpy(),
            "speech_frames": np.array(t1)}


def max_attention_positions() -> int:
    return MAX_ATTENTION_POSITIONS  # read at call time, so tests can lower the bound
