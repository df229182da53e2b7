"""The small owners the redesign made: output writers, the store layout, model names, config rules, WaveNorm."""
from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest
import soundfile as sf

from dmha.audio import WaveNorm, compute_wave_norm
from dmha.config import ConfigError, rule
from dmha.inference import Prediction
from dmha.layout import StoreRoot, copy_key, speech_key
from dmha.outputs import PredictionWriter, SegmentWriter, SkippedItems, error_line
from dmha.timeline import Segment, Timeline

LABELS = ["happy", "sad"]


def _prediction(path="a.wav"):
    return Prediction("sad", {"happy": 0.25, "sad": 0.75}, "so sad", path)


def test_prediction_writer_formats_and_refusal():
    for fmt, check in [("jsonl", lambda t: json.loads(t)["label"] == "sad"),
                       ("csv", lambda t: list(csv.reader(io.StringIO(t)))[1] == ["a.wav", "sad", "0.250000", "0.750000", "so sad",
                                                                              ""]),
                       ("table", lambda t: t.startswith("a.wav\tsad\tsad 0.75  happy 0.25")),
                       ("challenge", lambda t: t.splitlines()[0] == "FileName,EmoClass")]:
        out = io.StringIO()
        PredictionWriter(out, LABELS, fmt).write(_prediction())
        assert check(out.getvalue()), (fmt, out.getvalue())
    with pytest.raises(ValueError, match="unknown prediction format 'xml'"):
        PredictionWriter(io.StringIO(), LABELS, "xml")


def test_an_input_given_no_emotion_is_written_with_its_reason():
    refused = Prediction(None, {}, "", "hum.wav", reason="no speech found (0.00 s of voice activity, peak 0.01)")
    for fmt, check in [("jsonl", lambda t: json.loads(t) == {"path": "hum.wav", "label": None, "probs": {},
                                                             "transcript": "", "reason": refused.reason}),
                       ("csv", lambda t: list(csv.reader(io.StringIO(t))) == [
                           ["path", "label", "p_happy", "p_sad", "transcript", "reason"],
                           ["hum.wav", "", "", "", "", refused.reason]]),
                       ("table", lambda t: t.split("\t")[:3] == ["hum.wav", "-", f"no emotion: {refused.reason}"])]:
        out = io.StringIO()
        PredictionWriter(out, LABELS, fmt).write(refused)
        assert check(out.getvalue()), (fmt, out.getvalue())


def test_segment_writer_formats_unique_stems_and_refusal(tmp_path):
    timeline = Timeline("talk.wav", 10.0, [Segment(0.0, 2.5, "happy", {"happy": 0.9, "sad": 0.1}, "hi")], LABELS)
    for fmt in ("csv", "table", "jsonl"):
        out = io.StringIO()
        writer = SegmentWriter(out, LABELS, fmt, tmp_path / fmt)
        first, second = writer.write(timeline, source="dir1/talk.wav"), writer.write(timeline, source="dir2/talk.wav")
        assert [p.name for p in first] == ["talk.csv", "talk.json", "talk.png"]
        assert [p.name for p in second] == ["talk-2.csv", "talk-2.json", "talk-2.png"] and writer.segments == 2
        text = out.getvalue()
        if fmt == "csv":
            assert list(csv.reader(io.StringIO(text)))[1][:4] == ["talk.wav", "0.000", "2.500", "happy"]
        elif fmt == "table":
            assert text.startswith("talk.wav\t    0.00-    2.50\thappy\thappy 0.90  sad 0.10")
        else:
            assert json.loads(text.splitlines()[0])["end"] == 2.5
    with pytest.raises(ValueError, match="unknown segment format 'challenge'"):
        SegmentWriter(io.StringIO(), LABELS, "challenge", tmp_path)


def test_skipped_items_stream_to_the_file_and_list_on_stderr(tmp_path):
    err = io.StringIO()
    with SkippedItems(tmp_path / "sub" / "errors.tsv", stderr=err) as skipped:
        skipped.add("bad\tname.wav", "not audio\nat all")
        assert (tmp_path / "sub" / "errors.tsv").read_text() == error_line("bad\tname.wav", "not audio\nat all")
    assert (tmp_path / "sub" / "errors.tsv").read_text() == "bad\\tname.wav\tnot audio\\nat all\n"
    assert err.getvalue().splitlines()[0] == "skipped 1 bad file(s):" and "wrote" in err.getvalue()


def test_the_layout_names_every_folder_and_refuses_unknown_kinds(tmp_path):
    root = StoreRoot(tmp_path)
    speech, text = root.store("speech", "enc-a"), root.store("text", "enc-b")
    assert root.store("speech", "enc-a") is speech  # one handle per store and process
    transcript = root.transcript_path("asr:tiny.en", "ab" * 32)
    assert transcript.parent.is_dir() and transcript.name == "ab" * 32 + ".txt"
    assert [(kind, folder) for kind, folder in root.folders()] == [
        ("asr", root.folder("asr", "asr:tiny.en")), ("speech", speech.folder), ("text", text.folder)]
    with pytest.raises(ValueError, match="unknown store kind 'video'"):
        root.folder("video", "x")
    norm = WaveNorm(per_utterance=True)
    assert copy_key("d" * 64, norm, "tag", 2) == speech_key("d" * 64, norm) + "-augtag-2"


def test_hub_errors_are_one_line(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import (HfHubHTTPError, IncompleteSnapshotError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    from dmha.hub import resolve_model
    from dmha.modeldir import ModelDirError

    class Response:  # what the error classes need of an HTTP response
        status_code, headers, url, request = 401, {}, "https://huggingface.co/api/models/lab/x", None

        def json(self):
            return {}

    cases = [(RepositoryNotFoundError("no repo", response=Response()), "nor a repository on the Hugging Face Hub"),
             (RevisionNotFoundError("no rev", response=Response()), "no such revision"),
             (IncompleteSnapshotError("partial", snapshot_path="/x"), "cached copy is incomplete"),
             (HfHubHTTPError("403 Forbidden\nmore", response=Response()), "refused it (403 Forbidden)"),
             (OSError("disk gone"), "could not be fetched from the Hugging Face Hub (disk gone)")]
    for error, message in cases:
        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
        with pytest.raises(ModelDirError, match=re.escape(message)) as caught:
            resolve_model("lab/x", revision="v1")
        assert str(caught.value).startswith("lab/x@v1: ") and "\n" not in str(caught.value)


def test_config_rules_name_their_bound():
    from dmha.config import _check_rule

    for rules, value, wanted in [(rule(1.0, at_most=2.0).metadata, 3.0, "<= 2"), (rule(1.0, below=2.0).metadata, 2.0, "< 2"),
                                 (rule(1, above=0, note="0 = off").metadata, 0, "> 0 (0 = off)")]:
        with pytest.raises(ConfigError, match=f"must be {wanted.replace('(', '[(]').replace(')', '[)]')}, got"):
            _check_rule("k", value, rules)
        _check_rule("k", 1.5 if "2" in wanted else 1, rules)  # inside the bound: no error


def test_wave_norm_skips_unreadable_audio_and_needs_some(tmp_path, caplog):
    good, bad = tmp_path / "good.wav", tmp_path / "bad.wav"
    sf.write(good, np.array([0.5, -0.5, 0.5, -0.5], np.float32), 16000)
    bad.write_text("not audio")

    class Item:
        def __init__(self, path):
            self.path = path

    norm = compute_wave_norm([Item(good), Item(bad)], progress=False)
    assert norm.mean == pytest.approx(0.0) and norm.std == pytest.approx(0.5)
    assert "skipping in normalisation stats" in caplog.text
    with pytest.raises(ValueError, match="no readable training audio"):
        compute_wave_norm([Item(bad)], progress=False)
    assert WaveNorm(per_utterance=True).apply(np.zeros(0, np.float32)).size == 0
