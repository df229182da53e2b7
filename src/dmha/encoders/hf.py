"""Any transformers speech model (wav2vec2, XLS-R, HuBERT, WavLM, Whisper) or BERT-like text model, frozen."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoTokenizer, WhisperModel

from dmha.encoders.base import SAMPLE_RATE, EncoderInfo
from dmha.batching import length_sorted_batches
from dmha.encoders.windows import even_windows
from dmha.trust import explain_missing_safetensors, weights_kwargs
from dmha.encoders.fingerprint import weights_id
from dmha.encoders.whisper import WhisperSpeechEncoder
from dmha.encoders.whisper_mel import WhisperMel

logger = logging.getLogger(__name__)

_HUGE_MAX_LENGTH = 1_000_000  # tokenizers without a limit report int(1e30)


def _label(name_or_path: str | Path, name: str | None) -> str:
    """The name reported in EncoderInfo: the caller's, else what was given."""
    return name or str(name_or_path)


def _pretrained(cls, name_or_path: str | Path, revision: str | None) -> torch.nn.Module:
    """Weights from safetensors only, no remote code (see trust.py). transformers' per-load progress bar
    ("Loading weights") is shown only when dmha logs details (-v): a predict of one file prints results."""
    if not logger.isEnabledFor(logging.INFO):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(name_or_path, revision=revision, **weights_kwargs())
    except OSError as err:
        raise explain_missing_safetensors(name_or_path, err) from None


def _frozen(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """Inference-only copy on `device`: eval mode, no gradients."""
    return model.to(device).eval().requires_grad_(False)


def _hf_whisper(name_or_path: str | Path, device: str, *, name: str | None, revision: str | None,
                pad_to_s: float, max_window_s: float, batch_size: int) -> WhisperSpeechEncoder:
    """Encoder of a transformers Whisper checkpoint, run by the same true-length code as the CT2 rebuild."""
    model = _pretrained(WhisperModel, name_or_path, revision)
    try:
        mel = WhisperMel.from_feature_extractor(AutoFeatureExtractor.from_pretrained(name_or_path, revision=revision))
    except OSError:  # checkpoint saved without preprocessor_config.json
        logger.warning("%s has no feature extractor config; using Whisper's default front end", name_or_path)
        mel = WhisperMel.default(model.config.num_mel_bins)
    return WhisperSpeechEncoder(
        model.get_encoder(),
        mel,
        name=_label(name_or_path, name),
        weights_id=weights_id("hf", name_or_path, label=name, revision=revision),
        device=device,
        pad_to_s=pad_to_s,
        max_window_s=max_window_s,
        batch_size=batch_size,
    )


class HFSpeechEncoder:
    """Frozen transformers speech model returning all hidden states of each utterance.

    Parameters: name_or_path (HF id or local dir), device, name (reported in EncoderInfo),
    revision (hub revision), pad_to_s (Whisper only: 0 = true length, 30 = padded window),
    max_window_s (longer audio is encoded in windows of at most this length, frames joined;
    Whisper caps it at 30 s), batch_size.
    Returns from `encode`: one (L, T_i, D) float32 CPU tensor per wave.
    Example: `HFSpeechEncoder("microsoft/wavlm-large").encode([wave])[0].shape  # (25, T, 1024)`.
    """

    def __init__(self, name_or_path: str | Path, device: str = "cpu", *, name: str | None = None,
                 revision: str | None = None, pad_to_s: float = 0.0, max_window_s: float = 30.0,
                 batch_size: int = 8) -> None:
        config = AutoConfig.from_pretrained(name_or_path, revision=revision)
        self._whisper: WhisperSpeechEncoder | None = None
        if config.model_type == "whisper":
            self._whisper = _hf_whisper(name_or_path, device, name=name, revision=revision,
                                        pad_to_s=pad_to_s, max_window_s=max_window_s, batch_size=batch_size)
            self.model, self.info = self._whisper.encoder, self._whisper.info
            return
        if pad_to_s:
            raise ValueError(f"pad_to_s applies to Whisper models only, not {config.model_type}")
        if max_window_s <= 0:
            raise ValueError(f"max_window_s must be > 0, got {max_window_s}")
        self.extractor = AutoFeatureExtractor.from_pretrained(name_or_path, revision=revision)
        self.model = _frozen(_pretrained(AutoModel, name_or_path, revision), device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_window = int(max_window_s * SAMPLE_RATE)
        # Group-norm feature encoders (wav2vec2-base style) normalise over time, padding included,
        # and ignore the attention mask: only batch size 1 gives the unpadded result.
        self.masked = getattr(config, "feat_extract_norm", "layer") == "layer"
        self._kernels, self._strides = list(config.conv_kernel), list(config.conv_stride)
        self.info = EncoderInfo(
            name=_label(name_or_path, name),
            identity=f"{weights_id('hf', name_or_path, label=name, revision=revision)}|max_window_s={max_window_s:g}",
            num_layers=config.num_hidden_layers + 1,
            dim=config.hidden_size,
            frame_rate=SAMPLE_RATE / math.prod(self._strides),
        )

    def _num_frames(self, num_samples: int) -> int:
        """Frames the convolutional feature encoder makes of `num_samples` (no padding, so floor)."""
        for kernel, stride in zip(self._kernels, self._strides):
            num_samples = (num_samples - kernel) // stride + 1
        return num_samples

    def _min_samples(self) -> int:
        """Receptive field of one output frame; shorter inputs are zero-padded up to it."""
        field = 1
        for kernel, stride in reversed(list(zip(self._kernels, self._strides))):
            field = (field - 1) * stride + kernel
        return field

    def _encode_batch(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        """Pad, run the model with its attention mask when it honours one, cut each back to its frames."""
        inputs = self.extractor(waves, sampling_rate=SAMPLE_RATE, padding=True, return_attention_mask=True,
                                return_tensors="pt")
        kwargs = {"attention_mask": inputs["attention_mask"].to(self.device)} if self.masked else {}
        out = self.model(inputs["input_values"].to(self.device), output_hidden_states=True, **kwargs)
        states = torch.stack(out.hidden_states)  # (L, B, T, D)
        return [states[:, b, : self._num_frames(len(w))].float().cpu().clone() for b, w in enumerate(waves)]

    def encode(self, waves: Sequence[np.ndarray], batch_size: int | None = None) -> list[torch.Tensor]:
        """16 kHz mono waveforms → one (L, T_i, D) float32 tensor per wave."""
        if self._whisper is not None:
            return self._whisper.encode(waves, batch_size)
        min_samples = self._min_samples()
        segments = []  # (wave index, window samples)
        for i, wave in enumerate(waves):
            wave = np.asarray(wave, dtype=np.float32)
            if len(wave) < min_samples:
                wave = np.pad(wave, (0, min_samples - len(wave)))  # (min_samples,)
            segments += [(i, wave[s:e]) for s, e in even_windows(len(wave), self.max_window)]
        outputs: list[torch.Tensor | None] = [None] * len(segments)
        size = (batch_size or self.batch_size) if self.masked else 1
        with torch.inference_mode():
            for batch in length_sorted_batches([len(w) for _, w in segments], size):
                for i, out in zip(batch, self._encode_batch([segments[i][1] for i in batch])):
                    outputs[i] = out
        per_wave: list[list[torch.Tensor]] = [[] for _ in waves]
        for (i, _), out in zip(segments, outputs):
            per_wave[i].append(out)
        # Joined outside inference mode: callers may train on these, which inference tensors forbid.
        return [torch.cat(parts, dim=1) for parts in per_wave]  # (L, T_i, D)


class HFTextEncoder:
    """Frozen BERT-like model returning the last hidden layer, special tokens kept.

    Parameters: name_or_path (HF id or local dir), device, name (reported in EncoderInfo),
    revision, batch_size. Texts longer than the model's maximum are truncated with a warning.
    Returns from `encode`: one (T_i, D) float32 CPU tensor per text ([CLS][SEP] for '').
    Example: `HFTextEncoder(minilm_dir()).encode(["kids are talking"])[0].shape  # (6, 384)`.
    """

    def __init__(self, name_or_path: str | Path, device: str = "cpu", *, name: str | None = None,
                 revision: str | None = None, batch_size: int = 32) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
        self.model = _frozen(_pretrained(AutoModel, name_or_path, revision), device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = self._max_length()
        weights = weights_id("hf-text", name_or_path, label=name, revision=revision)
        self.info = EncoderInfo(
            name=_label(name_or_path, name),
            identity=f"{weights}|max_length={self.max_length}",
            num_layers=1,
            dim=self.model.config.hidden_size,
            frame_rate=0.0,
        )

    def _max_length(self) -> int:
        """The tokenizer's limit when it states one, else the model's position table."""
        limit = self.tokenizer.model_max_length
        if limit and limit < _HUGE_MAX_LENGTH:
            return int(limit)
        return int(self.model.config.max_position_embeddings)

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> list[torch.Tensor]:
        """Texts → one (T_i, D) float32 tensor per text."""
        texts = list(texts)
        lengths = [len(ids) for ids in self.tokenizer(texts, verbose=False)["input_ids"]] if texts else []
        for text, n in zip(texts, lengths):
            if n > self.max_length:
                logger.warning("text of %d tokens truncated to %d: %.60r", n, self.max_length, text)
        outputs: list[torch.Tensor | None] = [None] * len(texts)
        with torch.inference_mode():
            for batch in length_sorted_batches(lengths, batch_size or self.batch_size):
                enc = self.tokenizer([texts[i] for i in batch], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state  # (B, T, D)
                for b, i in enumerate(batch):
                    outputs[i] = hidden[b][enc["attention_mask"][b].bool()].float().cpu()  # (T_i, D)
        return [out.clone() for out in outputs]  # normal tensors: inference tensors cannot enter autograd
