"""configs/paper: one complete config per system of the paper's Tables 1-2, each built at full size.

The slow test builds every system as the paper ran it (24-layer 1024-d speech encoder, BERT large,
4-head DMHA) from hand-written architecture configs with random weights, so no download is needed,
and takes one training step: frozen encoders → 25 hidden states + BERT's last layer → head → loss
→ AdamW. Each encoder is built once per module and dropped when the next one is needed.
"""
from __future__ import annotations

import gc
import time
import tomllib
from pathlib import Path

import pytest
import torch
from paper_arch import SPEECH, TEXT, build_frozen, num_params

from dmha.config import Config, load, to_dict
from dmha.batches import collate
from dmha.losses import build_loss
from dmha.modeldir import EncoderSpec, build_model, head_dims

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "paper"
PREFIXES = {"wav2vec2-lv60k": "facebook/wav2vec2-large-lv60", "xlsr300m": "facebook/wav2vec2-xls-r-300m",
            "hubert-large": "facebook/hubert-large-ll60k", "wavlm-large": "microsoft/wavlm-large"}
PAPER_FILES = [f"{prefix}-{loss}-{attention}.toml" for prefix in PREFIXES for loss in ("wce", "focal")
               for attention in ("standard", "subvector")]  # grouped by encoder: each is built once
# One full-size training step per paper encoder (each encoder costs ~1.3 GB and seconds to build),
# cycling loss and attention so every variant of both also runs at full size; the other twelve
# systems differ from these only in the two keys that test_config_is_complete_and_names_its_system checks.
FULL_SIZE_FILES = [f"{prefix}-{loss}-{attention}.toml" for prefix, (loss, attention) in zip(
    PREFIXES, [("wce", "standard"), ("focal", "subvector"), ("focal", "standard"), ("wce", "subvector")])]
NUM_CLASSES = 8
SPEECH_LAYERS, DIM = 25, 1024  # 24 transformer layers + the input embedding; 1024-d speech and text
# Head sizes (D = 1024, H = 4, 25 layer weights, classifier C → C → 4 × 512 → 8 with LayerNorms):
#   standard:  25 + 4·H·D² (W^Q, W^K, W^V, W^O) + 1024 (u') + 2,372,616 (classifier, C = 1024)
#   subvector: 25 + 1024 (u_j, H × D/H) + 256 (u') + 994,056 (classifier, C = D/H = 256)
HEAD_PARAMS = {"standard": 19_150_881, "subvector": 995_361}
# Encoder sizes of these architectures (transformers' model classes, BERT with its pooler).
ENCODER_PARAMS = {"facebook/wav2vec2-large-lv60": 315_438_720, "facebook/wav2vec2-xls-r-300m": 315_438_720,
                  "facebook/hubert-large-ll60k": 315_435_136, "microsoft/wavlm-large": 315_453_120,
                  "bert-large-uncased": 335_141_888}
CLASS_COUNTS = [120, 300, 80, 20, 40, 60, 25, 500]  # imbalanced, like MSP-Podcast's train split


def _flat_keys(tree: dict, prefix: str = "") -> set[str]:
    """{'a': {'b': 1}} → {'a.b'}."""
    keys: set[str] = set()
    for key, value in tree.items():
        keys |= _flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"}
    return keys


def test_one_file_per_system() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.toml")) == sorted(PAPER_FILES)
    readme = (CONFIGS / "README.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in readme for name in PAPER_FILES)


@pytest.mark.parametrize("name", PAPER_FILES)
def test_config_is_complete_and_names_its_system(name: str) -> None:
    prefix, loss, attention = name.removesuffix(".toml").rsplit("-", 2)
    raw = tomllib.loads((CONFIGS / name).read_text(encoding="utf-8"))
    assert _flat_keys(raw) == _flat_keys(to_dict(Config()))  # every key set: no inheritance, no gaps
    config = load(CONFIGS / name)
    assert (config.encoders.speech, config.loss, config.model.attention) == (PREFIXES[prefix], loss, attention)
    assert (config.encoders.text, config.encoders.asr) == ("bert-large-uncased", "base")
    assert (config.model.heads, config.model.hidden_layers, config.model.hidden_dim) == (4, 4, 512)
    assert (config.train.batch_size, config.train.max_epochs, config.train.crop_s, config.train.lr) == (
        32, 20, 5.5, 5e-4)
    assert (config.aug.enabled, config.aug.p, config.aug.techniques) == (True, 0.5, ["speed", "reverb", "noise"])


def test_subvector_head_is_far_smaller() -> None:
    sizes = {}
    for attention in HEAD_PARAMS:
        config = load(CONFIGS / f"xlsr300m-wce-{attention}.toml")
        speech = EncoderSpec("s", "s", SPEECH_LAYERS, DIM)
        model = build_model(config, head_dims(speech, EncoderSpec("t", "t", 1, DIM), NUM_CLASSES), speech)
        sizes[attention] = num_params(model)
    print(f"\nDMHA head parameters: {sizes}")
    assert sizes == HEAD_PARAMS
    assert sizes["subvector"] * 10 < sizes["standard"]


class FrozenEncoders:
    """Each paper encoder built and run once, lazily; one speech model alive at a time (~1.3 GB in fp32).

    Like dmha's feature cache, the encoders' outputs for the test batch are computed once per
    encoder and reused by the four heads (2 losses × 2 attentions) trained on them.
    """

    def __init__(self) -> None:
        self._speech: tuple[str, torch.nn.Module, list[torch.Tensor]] | None = None
        self._text: dict[str, tuple[torch.nn.Module, list[torch.Tensor]]] = {}
        self.seconds: dict[str, float] = {}  # build + encode, per encoder

    def speech(self, hf_id: str) -> tuple[torch.nn.Module, list[torch.Tensor]]:
        if self._speech is None or self._speech[0] != hf_id:
            self._speech = None
            gc.collect()  # free the previous model before building the next
            start = time.perf_counter()
            model = self._build(hf_id, SPEECH)
            self._speech = (hf_id, model, _speech_features(model))
            self.seconds[hf_id] = time.perf_counter() - start
        return self._speech[1], self._speech[2]

    def text(self, hf_id: str) -> tuple[torch.nn.Module, list[torch.Tensor]]:
        if hf_id not in self._text:
            start = time.perf_counter()
            model = self._build(hf_id, TEXT)
            self._text[hf_id] = (model, _text_features(model))
            self.seconds[hf_id] = time.perf_counter() - start
        return self._text[hf_id]

    @staticmethod
    def _build(hf_id: str, archs: dict) -> torch.nn.Module:
        model = build_frozen(archs[hf_id])
        assert num_params(model) == ENCODER_PARAMS[hf_id], hf_id
        return model

    def close(self) -> None:
        self._speech, self._text = None, {}
        gc.collect()


@pytest.fixture(scope="module")
def encoders():
    holder = FrozenEncoders()
    yield holder
    print(f"\nencoder build + encode seconds: { {k: round(v, 1) for k, v in holder.seconds.items()} }")
    print(f"encoder parameters: { {k: f'{ENCODER_PARAMS[k]:,}' for k in holder.seconds} }")
    holder.close()


def _speech_features(model: torch.nn.Module, seconds=(1.0, 0.8)) -> list[torch.Tensor]:
    """Random audio of these lengths → one (25, T_i, 1024) tensor each, as the feature cache holds them."""
    lengths = [int(16000 * s) for s in seconds]
    waves = torch.zeros(len(lengths), max(lengths))  # (B, samples)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    generator = torch.Generator().manual_seed(1)
    for i, n in enumerate(lengths):
        waves[i, :n] = torch.randn(n, generator=generator)
        mask[i, :n] = 1
    with torch.no_grad():
        out = model(waves, attention_mask=mask, output_hidden_states=True)
    states = torch.stack(out.hidden_states, dim=1)  # (B, 25, T1, 1024)
    frames = model._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist()
    return [states[i, :, :t] for i, t in enumerate(frames)]  # (25, T_i, 1024) each


def _text_features(model: torch.nn.Module, lengths=(8, 5)) -> list[torch.Tensor]:
    """Random WordPiece ids framed by [CLS] … [SEP] → BERT's last layer, (T_i, 1024) each."""
    generator = torch.Generator().manual_seed(2)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)  # (B, T2), [PAD] = 0
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.cat([torch.tensor([101]), torch.randint(1996, 29612, (n - 2,), generator=generator),
                                torch.tensor([102])])
        mask[i, :n] = 1
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T2, 1024)
    return [hidden[i, :n] for i, n in enumerate(lengths)]  # (T_i, 1024) each


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")  # inside transformers' WavLM
@pytest.mark.parametrize("name", FULL_SIZE_FILES)
def test_one_training_step_at_full_size(name: str, encoders: FrozenEncoders) -> None:
    config = load(CONFIGS / name)
    (speech_model, speech), (text_model, text) = encoders.speech(config.encoders.speech), encoders.text(
        config.encoders.text)
    batch = collate([{"speech": s, "text": t, "target": k} for s, t, k in zip(speech, text, (0, 3))])
    assert batch["speech"].shape == (2, SPEECH_LAYERS, 49, DIM)  # 1.0 s → 49 frames; 0.8 s → 39, padded
    assert batch["speech_mask"].sum(1).tolist() == [49, 39] and batch["text"].shape == (2, 8, DIM)

    torch.manual_seed(0)
    speech = EncoderSpec(config.encoders.speech, f"random-init|{config.encoders.speech}", SPEECH_LAYERS, DIM)
    model = build_model(config, head_dims(speech, EncoderSpec(config.encoders.text, "random-init|bert-large-uncased",
                                                              1, DIM), NUM_CLASSES), speech)
    assert num_params(model) == HEAD_PARAMS[config.model.attention]
    loss_fn = build_loss(config.loss, CLASS_COUNTS, config.train.focal_gamma)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    start = time.perf_counter()
    logits = model(batch["speech"], batch["speech_mask"], batch["text"], batch["text_mask"]).logits
    assert logits.shape == (2, NUM_CLASSES)
    loss = loss_fn(logits, batch["target"])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    step_s = time.perf_counter() - start

    assert torch.isfinite(loss)
    assert [n for n, p in model.named_parameters() if torch.equal(p, before[n])] == []
    for encoder in (speech_model, text_model):
        assert not any(p.requires_grad or p.grad is not None for p in encoder.parameters())
        assert not encoder.training
    print(f"\n{name}: head {num_params(model):,} params, loss {loss.item():.3f}, head step {step_s:.2f} s")


@pytest.mark.parametrize("name, targets, criterion", [
    ("wavlm-large-task2.toml", ["arousal", "valence", "dominance"], "ccc"),
    ("wavlm-large-multitask.toml", ["category", "arousal", "valence", "dominance"], "sum")])
def test_task2_and_multitask_variants_are_complete(name: str, targets: list, criterion: str) -> None:
    """Challenge Task 2 (and both tasks at once) on the paper's wavLM system: MSP-Podcast's attribute
    columns on their 1-7 scales, everything else as the Task 1 file."""
    path = CONFIGS / "task2" / name
    config = load(path)  # every key set (a missing one would appear here as its default only)
    assert _flat_keys(tomllib.loads(path.read_text(encoding="utf-8"))) == _flat_keys(to_dict(config))
    base = load(CONFIGS / "wavlm-large-wce-standard.toml")
    assert (config.model.targets, config.train.dev_criterion) == (targets, criterion)
    assert config.model.attribute_columns == {"arousal": "EmoAct", "valence": "EmoVal", "dominance": "EmoDom"}
    assert set(map(tuple, config.model.attribute_ranges.values())) == {(1.0, 7.0)}
    assert (config.encoders, config.features, config.aug) == (base.encoders, base.features, base.aug)
    assert name in (CONFIGS / "README.md").read_text(encoding="utf-8")
