"""Segmentation of long recordings: VAD on a stream, speech regions, 2-15 s segments, streamed audio."""
import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dmha.audio import AudioError, load_audio
from dmha.segment import (FRAME, SegmentPlanner, SileroVAD, SpeechDetector, _Window, plan_segments,
                          stream_audio)


def _close(segments, expected):
    assert len(segments) == len(expected), segments
    for (a, b), (c, d) in zip(segments, expected):
        assert a == pytest.approx(c, abs=1e-9) and b == pytest.approx(d, abs=1e-9), segments


# --- SegmentPlanner on hand-made speech regions (seconds) -------------------------------------

def test_long_region_is_cut_into_equal_pieces_within_max():
    third = 40 / 3
    expected = [(1, 1 + third), (1 + third, 1 + 2 * third), (1 + 2 * third, 41)]
    _close(plan_segments([(1.0, 41.0)], 60, min_s=2, max_s=15), expected)
    _close(plan_segments([(0.0, 30.0)], 30, min_s=2, max_s=15), [(0, 15), (15, 30)])  # exactly 2 × max_s


def test_short_neighbours_are_merged_across_small_gaps():
    regions = [(10.0, 10.5), (11.0, 11.8), (12.5, 13.0)]  # 0.5 + 0.8 + 0.5 s of speech, gaps 0.5 and 0.7 s
    _close(plan_segments(regions, 60, min_s=2, max_s=15, max_gap_s=1.0), [(10.0, 13.0)])


def test_long_neighbours_stay_apart_and_far_short_ones_are_widened():
    regions = [(0.0, 3.0), (3.2, 6.0), (20.0, 21.0)]  # two utterances, then an isolated 1 s one
    _close(plan_segments(regions, 60, min_s=2, max_s=15, max_gap_s=1.0), [(0, 3), (3.2, 6), (19.5, 21.5)])


def test_a_short_region_joins_the_previous_long_one_when_it_fits():
    _close(plan_segments([(0.0, 5.0), (5.5, 6.0)], 60, min_s=2, max_s=15), [(0.0, 6.0)])


def test_widening_stops_at_the_recording_edges_and_neighbours():
    _close(plan_segments([(0.2, 0.8)], 30, min_s=2, max_s=15), [(0.0, 2.0)])  # start of the file
    _close(plan_segments([(29.5, 29.9)], 30, min_s=2, max_s=15), [(28.0, 30.0)])  # end of the file
    _close(plan_segments([(0.0, 1.0)], 1.5, min_s=2, max_s=15), [(0.0, 1.5)])  # the whole file is shorter
    # Joining would exceed max_s, and the neighbours leave only 0.2 s before and 0.5 s after.
    _close(plan_segments([(0.0, 14.8), (15.0, 15.5)], 16.0, min_s=2, max_s=15), [(0.0, 14.8), (14.8, 16.0)])


def test_bad_bounds_are_errors():
    with pytest.raises(ValueError, match="0 < min_s <= max_s"):
        SegmentPlanner(min_s=5, max_s=2)
    with pytest.raises(ValueError, match="max_gap_s"):
        SegmentPlanner(max_gap_s=-1)


@st.composite
def _regions(draw):
    """Sorted, disjoint speech regions in a recording, as a VAD would report them."""
    t, regions = draw(st.floats(0, 5)), []
    for _ in range(draw(st.integers(0, 25))):
        start = t + draw(st.floats(0.05, 8))
        end = start + draw(st.floats(0.1, 40))
        regions.append((start, end))
        t = end
    return regions, t + draw(st.floats(0, 5))


@settings(max_examples=200, deadline=None)
@given(_regions(), st.floats(0.5, 4), st.floats(2, 6), st.floats(0, 3))
def test_segments_are_ordered_cover_the_speech_and_respect_the_bounds(data, min_s, ratio, max_gap_s):
    regions, duration = data
    max_s = min_s * ratio  # max_s >= 2·min_s: then only neighbours and the file's ends can keep one short
    segments = plan_segments(regions, duration, min_s, max_s, max_gap_s)
    eps = 1e-6
    for k, (start, end) in enumerate(segments):
        assert 0 <= start < end <= duration + eps and end - start <= max_s + eps
        prev_end = segments[k - 1][1] if k else 0.0
        next_start = segments[k + 1][0] if k + 1 < len(segments) else duration
        assert start >= prev_end - eps
        if end - start < min_s - eps:  # widened as far as it could go
            assert abs(start - prev_end) < eps and abs(end - next_start) < eps
    for start, end in regions:  # every moment of speech lies in a segment
        for t in (start, (start + end) / 2, end):
            assert any(a - eps <= t <= b + eps for a, b in segments)
    # Streaming with the VAD's guarantee (no region before the next one's start) gives the same.
    # keep_from promises that no later segment starts before it (the audio window relies on it).
    planner, streamed, floors = SegmentPlanner(min_s, max_s, max_gap_s), [], []
    for start, end in regions:
        streamed += planner.advance(start)
        floors.append((len(streamed), planner.keep_from(start)))
        streamed += planner.push(start, end)
    streamed += planner.finish(duration)
    assert streamed == segments
    for first, floor in floors:
        assert all(a >= floor - eps for a, _ in streamed[first:])


def test_streaming_planner_emits_early_without_changing_the_result():
    regions = [(1.0, 4.0), (4.3, 4.6), (30.0, 31.0), (60.0, 75.0)]
    planner, got = SegmentPlanner(2, 15, 1.0), []
    for start, end in regions:
        got += planner.advance(start)  # the VAD's promise: no speech before `start`
        got += planner.push(start, end)
    assert got == [(1.0, 4.6), (29.5, 31.5)]  # out before the end; the last one waits for more audio
    assert planner.advance(75.5) == [] and planner.advance(76.1) == [(60.0, 75.0)]
    assert got + [(60.0, 75.0)] == plan_segments(regions, 80.0, 2, 15, 1.0)


# --- SpeechDetector on hand-made probabilities -----------------------------------------------

def test_detector_hysteresis_min_silence_min_speech():
    probs = [0, 0, .9, .9, .9, .4, .9, .1, .1, .1, .1, .9, 0, 0, 0, .8, .8, .8]
    detector = SpeechDetector(frame_s=0.1, pad_s=0.0, min_silence_s=0.3, min_speech_s=0.25)
    regions = detector.push(probs) + detector.finish(1.8)
    # 0.4 lies between the thresholds (0.35, 0.5) and does not end speech; the 0.1 s blip at 1.1 s is dropped
    _close(regions, [(0.2, 0.7), (1.5, 1.8)])


def test_detector_pads_without_overlap_and_is_chunk_invariant():
    rng = np.random.default_rng(0)
    probs = np.repeat(rng.random(60) > 0.5, rng.integers(1, 12, 60)).astype(float)
    whole = SpeechDetector(pad_s=0.05)
    expected = whole.push(probs) + whole.finish(len(probs) * 0.032)
    chunked = SpeechDetector(pad_s=0.05)
    got = []
    for i in range(0, len(probs), 7):
        horizon = chunked.horizon
        new = chunked.push(probs[i:i + 7])
        assert all(start >= horizon - 1e-9 for start, _ in new)  # the horizon promise holds
        got += new
    got += chunked.finish(len(probs) * 0.032)
    assert got == expected and len(got) > 3
    assert all(a[1] <= b[0] for a, b in zip(got, got[1:]))


def test_detector_closes_endless_speech_at_max_region():
    detector = SpeechDetector(frame_s=0.1, pad_s=0.0, max_region_s=1.0)
    regions = detector.push([0.9] * 25) + detector.finish(2.5)
    _close(regions, [(0.0, 1.0), (1.0, 2.0), (2.0, 2.5)])


# --- SileroVAD --------------------------------------------------------------------------------

def _test_signal(seconds=6.0, sr=16000):
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))) * (np.sin(2 * np.pi * 0.5 * t) > 0)
    return (wave + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def test_vad_on_a_stream_equals_silero_torchscript_on_the_whole_signal():
    from silero_vad import load_silero_vad

    wave = _test_signal()
    reference = load_silero_vad().audio_forward(torch.from_numpy(wave), 16000).numpy().reshape(-1)  # (frames,)
    vad = SileroVAD(max_frames=50)
    probs = []
    for i in range(0, wave.size, 3001):  # blocks that cut frames anywhere
        probs.append(vad.push(wave[i:i + 3001]))
    probs = np.concatenate(probs + [vad.finish()])
    assert probs.shape == reference.shape == (int(np.ceil(wave.size / FRAME)),)
    assert np.abs(probs - reference).max() < 1e-4
    vad.reset()
    assert np.array_equal(np.concatenate([vad.push(wave), vad.finish()]), probs)


# --- streamed audio ---------------------------------------------------------------------------

def test_stream_of_a_16k_file_is_the_file(tmp_path):
    wave = _test_signal(5.0)
    sf.write(tmp_path / "a.wav", wave, 16000, subtype="FLOAT")
    stream = stream_audio(tmp_path / "a.wav", block_s=0.7)
    blocks = list(stream.blocks)
    assert len(blocks) == 8 and stream.duration == pytest.approx(5.0) and stream.name.endswith("a.wav")
    assert np.array_equal(np.concatenate(blocks), load_audio(tmp_path / "a.wav"))


def test_stream_resamples_and_mixes_like_load_audio(tmp_path):
    wave = _test_signal(4.0, sr=44100)
    sf.write(tmp_path / "b.flac", np.stack([wave, 0.5 * wave], axis=1), 44100)
    streamed = np.concatenate(list(stream_audio(tmp_path / "b.flac", block_s=0.3).blocks))
    whole = load_audio(tmp_path / "b.flac")
    assert abs(streamed.size - whole.size) <= 1
    n = min(streamed.size, whole.size)
    assert np.abs(streamed[:n] - whole[:n]).max() < 1e-3  # soxr HQ, streamed vs one call


def test_stream_errors_name_the_input(tmp_path):
    with pytest.raises(AudioError, match="missing.wav: file not found"):
        stream_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really audio" * 10)
    with pytest.raises(AudioError, match="junk.wav: cannot decode audio"):
        stream_audio(tmp_path / "junk.wav")
    bad = _test_signal(1.0)
    bad[8000] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: contains NaN/Inf samples"):
        list(stream_audio(tmp_path / "nan.wav").blocks)
    with pytest.raises(ValueError, match="sample_rate is required"):
        stream_audio(np.zeros(16000, np.float32))
    with pytest.raises(ValueError, match="only for waveform arrays"):
        stream_audio(tmp_path / "nan.wav", sample_rate=16000)


def test_stream_refuses_audio_over_max_seconds(tmp_path):
    sf.write(tmp_path / "three.wav", _test_signal(3.0), 16000)
    assert sum(b.size for b in stream_audio(tmp_path / "three.wav", max_seconds=3.5).blocks) == 48000
    with pytest.raises(AudioError, match=r"three.wav: audio lasts 3.0 s, more than the limit of 2 s"):
        stream_audio(tmp_path / "three.wav", max_seconds=2)
    with pytest.raises(AudioError, match=r"<array>: audio lasts 3.0 s"):
        stream_audio(_test_signal(3.0), 16000, max_seconds=2)


def test_window_slices_across_blocks_and_refuses_trimmed_samples():
    window = _Window()
    for k in range(5):
        window.append(np.arange(k * 10, k * 10 + 10, dtype=np.float32))
    assert np.array_equal(window.slice(7, 23), np.arange(7, 23))
    window.trim(25)  # drops the two blocks that end at or before 25 only
    assert window.start == 20 and np.array_equal(window.slice(20, 50), np.arange(20, 50))
    with pytest.raises(RuntimeError, match="trimmed too early"):
        window.slice(15, 30)
