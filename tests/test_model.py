"""The DMHA head: shapes, the paper's equations, masking invariance, attention outputs."""
import math

import pytest
import torch

from helpers import head_inputs
from dmha.config import ModelConfig
from dmha.model import DMHA, HeadDims, AttentionPooling, FeatureNorm, LayerWeightedSum, StandardMHA, SubVectorMHA, masked_softmax



@pytest.mark.parametrize("attention", ["standard", "subvector"])
def test_padded_batch_equals_batch_of_one(attention):
    torch.manual_seed(0)
    model = DMHA(HeadDims(5, 24, 16, 8), ModelConfig(attention=attention, heads=4)).eval()
    speech, sm, text, tm = head_inputs()
    with torch.no_grad():
        batched = torch.softmax(model(speech, sm, text, tm).logits, -1)
        for i in range(3):
            t1, t2 = int(sm[i].sum()), int(tm[i].sum())
            # pad with garbage: masked positions must not matter
            single = model(speech[i : i + 1, :, :t1], sm[i : i + 1, :t1], text[i : i + 1, :t2], tm[i : i + 1, :t2])
            assert torch.allclose(torch.softmax(single.logits, -1), batched[i], atol=1e-4)
        garbage = speech.clone()
        garbage[~sm[:, None, :, None].expand_as(garbage)] = 1e3
        again = torch.softmax(model(garbage, sm, text, tm).logits, -1)
    assert torch.allclose(again, batched, atol=1e-4)


def test_layer_weights_start_uniform_and_sum_to_one():
    lws = LayerWeightedSum(7)
    assert torch.allclose(lws.weights, torch.full((7,), 1 / 7))
    x = torch.randn(2, 7, 5, 3) * torch.arange(1.0, 8.0)[None, :, None, None]
    assert torch.allclose(lws(x), x.mean(dim=1), atol=1e-6)


def test_feature_norm_modes():
    x = torch.randn(2, 7, 5, 3) * 100 + 7
    std = FeatureNorm("standardize", (7, 3))
    std.mean.copy_(x.mean(dim=(0, 2)))
    std.std.copy_(x.std(dim=(0, 2), unbiased=False))
    y = std(x)
    assert torch.allclose(y.mean(dim=(0, 2)), torch.zeros(7, 3), atol=1e-4)
    assert torch.allclose(y.std(dim=(0, 2), unbiased=False), torch.ones(7, 3), atol=1e-4)
    ln = FeatureNorm("layernorm", (7, 3))(x)
    expected = (x - x.mean(-1, keepdim=True)) / (x.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    assert torch.allclose(ln, expected, atol=1e-4)
    assert torch.equal(FeatureNorm("none", (7, 3))(x), x)


@pytest.mark.parametrize("mode", ["standardize", "layernorm", "none"])
def test_layer_sum_with_folded_norm_equals_normalising_first(mode):
    """The fused Σ_l h_l·(w_l·a_l) + Σ_l w_l·b_l gives what normalising each layer, then summing, gives,
    and the same gradients for the layer weights."""
    torch.manual_seed(0)
    x = torch.randn(2, 7, 5, 3) * 50 + 3
    norm = FeatureNorm(mode, (7, 3))
    norm.mean.normal_(), norm.std.uniform_(0.5, 20)
    fused, plain = LayerWeightedSum(7), LayerWeightedSum(7)
    with torch.no_grad():
        fused.logits.normal_()
        plain.logits.copy_(fused.logits)
    a = fused(x, norm)
    b = torch.einsum("l,bltd->btd", plain.weights, norm(x))
    assert torch.allclose(a, b, atol=1e-5)
    (a ** 2).sum().backward(), (b ** 2).sum().backward()
    assert torch.allclose(fused.logits.grad, plain.logits.grad, rtol=1e-4, atol=1e-4)


def test_standard_mha_matches_equations_1_2():
    torch.manual_seed(1)
    d, h, t = 8, 3, 5
    mha = StandardMHA(d, h)
    x = torch.randn(1, t, d)
    out, _, weights = mha(x, torch.ones(1, t, dtype=torch.bool))
    heads = []
    for j in range(h):
        wq = mha.w_q.weight[j * d : (j + 1) * d].T  # W_j^Q: (D, D)
        wk = mha.w_k.weight[j * d : (j + 1) * d].T
        wv = mha.w_v.weight[j * d : (j + 1) * d].T
        a = torch.softmax((x[0] @ wq) @ (x[0] @ wk).T / math.sqrt(d), dim=-1)
        assert torch.allclose(a, weights[0, j], atol=1e-6)
        heads.append(a @ x[0] @ wv)
    expected = torch.cat(heads, dim=-1) @ mha.w_o.weight.T  # concat(head_1..H) W^O, W^O: (HD, D)
    assert out.shape == (1, t, d)
    assert torch.allclose(out[0], expected, atol=1e-5)
    assert mha.w_o.weight.shape == (d, h * d)


def test_standard_mha_without_weights_is_the_same_attention():
    """The fused path (no T×T weights) equals equations 1-2, padding included, and so does the head."""
    torch.manual_seed(2)
    mha = StandardMHA(16, 4)
    x = torch.randn(3, 40, 16)
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[1, 25:], mask[2, 3:] = False, False
    with_weights, _, weights = mha(x, mask)
    fused, _, none = mha(x, mask, need_weights=False)
    assert none is None and weights.shape == (3, 4, 40, 40)
    assert torch.allclose(fused[mask], with_weights[mask], atol=1e-5)
    model = DMHA(HeadDims(5, 24, 16, 8), ModelConfig(heads=4)).eval()
    inputs = head_inputs()
    with torch.no_grad():
        assert torch.allclose(model(*inputs).logits, model(*inputs, return_attention=True).logits, atol=1e-5)


def test_subvector_mha_matches_equations_3_4():
    torch.manual_seed(2)
    d, h, t = 12, 4, 6
    sv = SubVectorMHA(d, h)
    x = torch.randn(1, t, d)
    pooled, mask, weights = sv(x, torch.ones(1, t, dtype=torch.bool))
    assert pooled.shape == (1, h, d // h) and mask.all() and weights.shape == (1, h, t)
    for j in range(h):
        hj = x[0, :, j * 3 : (j + 1) * 3]  # h_tj: (T, D/H)
        w = torch.softmax(hj @ sv.queries[j] / math.sqrt(3), dim=0)
        assert torch.allclose(w, weights[0, j], atol=1e-6)
        assert torch.allclose(pooled[0, j], (w[:, None] * hj).sum(0), atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        SubVectorMHA(10, 4)


def test_attention_pooling_matches_equations_5_6():
    torch.manual_seed(3)
    pool = AttentionPooling(6)
    c = torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    out, w = pool(c, mask)
    assert w[0, 3] == 0 and torch.allclose(w.sum(-1), torch.ones(2))
    expected = torch.softmax(c[1] @ pool.query / math.sqrt(6), 0)
    assert torch.allclose(w[1], expected, atol=1e-6)
    assert torch.allclose(out[1], (expected[:, None] * c[1]).sum(0), atol=1e-6)


def test_masked_softmax_zeroes_masked_entries():
    s = torch.randn(2, 5)
    m = torch.tensor([[1, 1, 0, 0, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    p = masked_softmax(s, m)
    assert (p[~m] == 0).all() and torch.allclose(p.sum(-1), torch.ones(2))


def test_projection_only_when_widths_differ_and_classifier_shape():
    same = DMHA(HeadDims(3, 16, 16, 8), ModelConfig(dim=0))  # D = the speech width, as in the paper
    assert isinstance(same.speech_proj, torch.nn.Identity) and isinstance(same.text_proj, torch.nn.Identity)
    default = DMHA(HeadDims(3, 16, 16, 8), ModelConfig())  # dmha's default D = 128: both project
    assert (default.speech_proj.out_features, default.text_proj.out_features) == (128, 128)
    diff = DMHA(HeadDims(3, 16, 12, 8), ModelConfig(dim=0))
    assert isinstance(diff.speech_proj, torch.nn.Identity) and isinstance(diff.text_proj, torch.nn.Linear)
    # input layer (C→C) + 4 hidden layers of 512, each Linear+LayerNorm+GELU+Dropout(0.1), then output
    blocks = list(diff.classifier.layers)
    assert len(blocks) == 5
    assert [b[0].out_features for b in blocks] == [16, 512, 512, 512, 512]
    assert all(isinstance(b[1], torch.nn.LayerNorm) and isinstance(b[2], torch.nn.GELU) for b in blocks)
    assert all(b[3].p == 0.1 for b in blocks)
    assert diff.classifier.output.out_features == 8


def test_subvector_is_far_smaller_and_attention_returned():
    std = DMHA(HeadDims(5, 64, 64, 8), ModelConfig(attention="standard"))
    sub = DMHA(HeadDims(5, 64, 64, 8), ModelConfig(attention="subvector"))
    count = lambda m: sum(p.numel() for p in m.first.parameters())
    assert count(sub) < count(std) / 100
    speech, sm, text, tm = head_inputs(ds=64, dt=64)
    out = std(speech, sm, text, tm, return_attention=True)
    t = speech.shape[2] + text.shape[1]
    assert out.attention["first"].shape == (3, 4, t, t) and out.attention["pooling"].shape == (3, t)
    assert out.attention["is_speech"][0, :20].all() and not out.attention["is_speech"][0, 20:].any()
    out = sub(speech, sm, text, tm, return_attention=True)
    assert out.attention["first"].shape == (3, 4, t) and out.attention["pooling"].shape == (3, 4)


def test_gradients_reach_every_parameter():
    model = DMHA(HeadDims(4, 16, 12, 5), ModelConfig(attention="standard", hidden_layers=2))
    speech, sm, text, tm = head_inputs(layers=4, ds=16, dt=12)
    model(speech, sm, text, tm).logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
