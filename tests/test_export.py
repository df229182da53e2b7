"""`dmha export`: the head as ONNX gives torch's probabilities on cached features (≤ 1e-4)."""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dmha.cli import main
from dmha.data.manifest import read_manifest
from dmha.ensemble import make_ensemble
from dmha.export import ExportError, export_onnx
from dmha.batches import collate
from dmha.modeldir import load_model_dir
from dmha.extraction import features_for
from helpers import train_tone_model


@pytest.fixture(scope="module")
def trained(tiny_encoders, tmp_path_factory):
    """Both attention variants, trained on the same tone corpus."""
    root = tmp_path_factory.mktemp("export")
    variants = ("standard", "subvector")
    return root, {a: train_tone_model(tiny_encoders, root / a, f"model.attention={a}") for a in variants}


@pytest.fixture(scope="module")
def models(trained):
    """Each variant exported once (about 10 s each: torch.export traces and decomposes the graph)."""
    root, model_dirs = trained
    exported = {}
    for attention, model_dir in model_dirs.items():
        out = root / f"{attention}.onnx"
        if attention == "standard":  # one through the CLI, one through the API
            assert main(["export", str(model_dir), "--format", "onnx", "--out", str(out)]) == 0
        else:
            assert export_onnx(model_dir, out) == out.with_suffix(".json")
        exported[attention] = (model_dir, out)
    return root, exported


def _cached_batch(root, attention, picks):
    """A padded batch of cached features (fp16 store → float32), items of different lengths."""
    bundle = load_model_dir(root / attention / "run" / "model")
    items = read_manifest(root / attention / "corpus" / "manifest.csv")
    data = features_for(items, bundle.config, norm=bundle.norm, progress=False)
    assert data.speech_computed == 0  # training cached them all
    refs = [data.refs[i] for i in picks]
    batch = collate([{"speech": r.speech().float(), "text": r.text().float()} for r in refs])
    return bundle, batch


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["standard", "subvector"])
@pytest.mark.parametrize("picks", [[0, 5, 9], [3], [1, 2, 4, 6, 7, 8, 10, 11]])
def test_onnx_runtime_matches_torch_on_cached_features(models, attention, picks):
    root, exported = models
    bundle, batch = _cached_batch(root, attention, picks)
    lengths = batch["speech_mask"].sum(1)
    if len(picks) > 1:
        assert len(set(lengths.tolist())) > 1 and not batch["speech_mask"].all()  # padding is exercised
    assert batch["speech"].shape[2] != 13 and batch["text"].shape[1] != 7  # not the export example's sizes
    reference = bundle.model.predict_proba(batch)[0].numpy()  # (B, K)
    session = ort.InferenceSession(str(exported[attention][1]), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {k: batch[k].numpy() for k in ("speech", "speech_mask", "text", "text_mask")})
    assert probs.shape == reference.shape == (len(picks), 2)
    assert np.abs(probs - reference).max() <= 1e-4
    assert np.allclose(probs.sum(1), 1, atol=1e-5)


@pytest.mark.slow
def test_the_sidecar_and_the_graph_describe_the_inputs(models):
    root, exported = models
    model_dir, out = exported["standard"]
    bundle = load_model_dir(model_dir)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["labels"] == bundle.labels == ["high", "low"]
    assert sidecar["inputs"]["speech"]["shape"] == ["batch", bundle.speech.num_layers, "speech_frames", 32]
    assert sidecar["inputs"]["text"]["shape"] == ["batch", "text_tokens", 24]
    assert sidecar["speech_encoder"]["identity"] == bundle.speech.identity and sidecar["attention"] == "standard"
    assert sidecar["waveform_normalization"]["std"] == pytest.approx(bundle.norm.std)
    graph = onnx.load(str(out))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta["labels"]) == bundle.labels and json.loads(meta["dmha"]) == sidecar
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert inputs["speech"][1:] == [bundle.speech.num_layers, inputs["speech_mask"][1], 32]
    assert isinstance(inputs["speech"][0], str) and isinstance(inputs["text"][1], str)  # dynamic axes


def test_ensembles_are_refused_with_their_members_named(trained, tmp_path, capsys):
    _, model_dirs = trained
    ensemble = tmp_path / "ens"
    make_ensemble([model_dirs["standard"], model_dirs["subvector"]], ensemble)
    code = main(["export", str(ensemble), "--out", str(tmp_path / "e.onnx")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "is an ensemble" in err and "members" in err
    assert not (tmp_path / "e.onnx").exists()


def test_missing_export_extra_is_a_clear_error(trained, tmp_path, monkeypatch):
    _, model_dirs = trained
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(ExportError, match=r"needs onnxscript: pip install 'dmha\[export\]'"):
        export_onnx(model_dirs["standard"], tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
