"""Timeline records, CSV, JSON and the PNG plot."""
import csv
import json

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.image import imread

from dmha.timeline import Segment, Timeline, _clock, timeline_figure

LABELS = ["neutral", "happy", "sad", "angry"]


def _timeline(n=6, duration=3700.0):
    rng = np.random.default_rng(0)
    segments = []
    for k in range(n):
        p = rng.dirichlet(np.ones(len(LABELS)))
        probs = {l: float(v) for l, v in zip(LABELS, p)}
        start = k * duration / n + 1.23456
        segments.append(Segment(start, start + 2 + 10 * rng.random(), LABELS[int(p.argmax())], probs, f"words {k}"))
    return Timeline("rec/meeting.flac", duration, segments, LABELS)


def test_segment_record_is_the_jsonl_contract():
    s = Segment(1.23456, 3.5, "sad", {"sad": 0.7, "happy": 0.3}, "oh no")
    assert s.to_dict("a.wav") == {"path": "a.wav", "start": 1.235, "end": 3.5, "label": "sad",
                                  "probs": {"sad": 0.7, "happy": 0.3}, "transcript": "oh no"}
    assert Segment(0, 1, "x", {"x": 1.0}, "", votes={"m1": "x"}).to_dict()["votes"] == {"m1": "x"}


def test_timeline_dict_and_json_round_trip(tmp_path):
    timeline = _timeline()
    payload = timeline.to_dict()
    assert list(payload) == ["path", "duration", "segments"] and payload["path"] == "rec/meeting.flac"
    assert len(payload["segments"]) == 6
    assert list(payload["segments"][0]) == ["start", "end", "label", "probs", "transcript"]
    timeline.write_json(tmp_path / "t.json")
    again = json.loads((tmp_path / "t.json").read_text())
    assert again == payload
    back = Timeline.from_dict(again, LABELS)
    assert [s.label for s in back.segments] == [s.label for s in timeline.segments]
    assert back.segments[2].start == pytest.approx(timeline.segments[2].start, abs=1e-3)


def test_csv_has_one_row_per_segment_in_label_order(tmp_path):
    timeline = _timeline()
    timeline.write_csv(tmp_path / "t.csv")
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "start", "end", "label", "p_neutral", "p_happy", "p_sad", "p_angry", "transcript"]
    assert len(rows) == 7
    first = timeline.segments[0]
    assert rows[1][:4] == ["rec/meeting.flac", f"{first.start:.3f}", f"{first.end:.3f}", first.label]
    assert [float(v) for v in rows[1][4:8]] == pytest.approx([first.probs[l] for l in LABELS], abs=1e-6)
    assert rows[1][8] == "words 0"


def test_labels_default_to_the_segments_probabilities():
    timeline = Timeline("x", 10.0, [Segment(0, 2, "b", {"a": 0.4, "b": 0.6}, "")])
    assert timeline.labels == ["a", "b"]


def test_plot_writes_a_readable_png(tmp_path):
    timeline = _timeline(n=400)
    paths = timeline.write_all(tmp_path / "out", "meeting")
    assert [p.name for p in paths] == ["meeting.csv", "meeting.json", "meeting.png"]
    image = imread(paths[2])
    assert image.shape[1] >= 1200 and image.shape[0] >= 400  # 12 in wide at 110 dpi
    assert image[..., :3].std() > 0.05  # something was drawn
    figure = timeline_figure(timeline)
    top, bottom = figure.axes[:2]
    rows = {t.get_text().split()[0]: y for t, y in zip(top.get_yticklabels(), top.get_yticks())}
    assert sorted(rows, key=rows.get, reverse=True) == LABELS  # the model's first label on top
    shares = [float(t.get_text().split()[1].rstrip("%")) for t in top.get_yticklabels()]
    assert sum(shares) == pytest.approx(100, abs=2)  # share of speech time per label
    assert bottom.get_xlim() == (0, 3700.0)
    assert {t.get_text() for t in bottom.get_legend().get_texts()} == set(LABELS)


def _picture(timeline, path):
    """The PNG Timeline.plot writes (RGB in [0, 1]) and where a data point of each axis lands in it: a function
    (axis 0 = labels, 1 = probabilities; x in s, y) -> (row, column), from the same figure laid out at 110 dpi."""
    timeline.plot(path)
    image = imread(path)[..., :3]
    figure = timeline_figure(timeline)
    figure.set_dpi(110)
    figure.canvas.draw()

    def pixel(axis, x, y):
        px, py = figure.axes[axis].transData.transform((x, y))
        return int(round(image.shape[0] - py)), int(round(px))

    return image, pixel, figure


def _inside(image, figure, axis):
    """The pixels strictly inside an axis's frame (spines left out)."""
    box = figure.axes[axis].get_window_extent()
    height = image.shape[0]
    return image[int(height - box.y1) + 3: int(height - box.y0) - 3, int(box.x0) + 3: int(box.x1) - 3]


def _coloured(pixels):
    """Pixels with a hue (not white, grey or black): bars, not grid lines or text."""
    return pixels.max(-1) - pixels.min(-1) > 0.1


TAB10 = [np.array(colormaps["tab10"](k)[:3]) for k in range(len(LABELS))]  # the labels' colours, in order


def test_plot_draws_each_segment_in_its_labels_colour_on_its_row(tmp_path):
    def certain(label):  # probability 1: an opaque bar, one colour in the stack
        return {other: float(other == label) for other in LABELS}

    timeline = Timeline("x.wav", 100.0, [Segment(10, 30, "happy", certain("happy"), ""),
                                         Segment(60, 80, "angry", certain("angry"), "")], LABELS)
    image, pixel, figure = _picture(timeline, tmp_path / "two.png")
    assert image.shape == (int((1.6 + 0.32 * len(LABELS) + 2.2) * 110), 12 * 110, 3)  # 12 in wide at 110 dpi
    rows = {label: len(LABELS) - 1 - k for k, label in enumerate(LABELS)}  # the first label on top
    for x, drawn in ((23, "happy"), (73, "angry"), (47, None), (93, None)):  # inside the segments, in the gaps
        for label in LABELS:
            colour = image[pixel(0, x, rows[label])]
            expected = TAB10[LABELS.index(label)] if label == drawn else np.ones(3)
            assert np.abs(colour - expected).max() < 0.02, (x, label, colour)
        stacked = image[pixel(1, x, 0.5)]  # probability 1 of the segment's label: the whole column its colour
        assert np.abs(stacked - (TAB10[LABELS.index(drawn)] if drawn else np.ones(3))).max() < 0.02, (x, stacked)


def test_plot_of_an_empty_timeline(tmp_path):
    """No segments: the same picture, with its axes and legend but nothing drawn inside them."""
    image, _, figure = _picture(Timeline("silence.wav", 60.0, [], LABELS), tmp_path / "empty.png")
    assert image.shape == (int((1.6 + 0.32 * len(LABELS) + 2.2) * 110), 12 * 110, 3)
    for axis in (0, 1):
        inside = _inside(image, figure, axis)
        assert inside.size and not _coloured(inside).any(), f"axis {axis} has coloured pixels"
    for colour in TAB10:  # the legend still names every label in its colour
        assert (np.abs(image - colour).max(-1) < 0.02).any(), colour
    assert (image.max(-1) < 0.3).sum() > 500  # the title, tick labels and axis labels (dark text)


def test_clock_ticks():
    assert _clock(0) == "0:00" and _clock(75) == "1:15" and _clock(3725) == "1:02:05"
