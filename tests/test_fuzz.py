"""Fuzzing the audio loader and the manifest parser (hypothesis; atheris where installed), bounded for CI.

The only acceptable outcomes: a valid result, or an AudioError / ManifestError with a one-line message
naming the file. Anything else (another exception, a NaN in a result, a multi-line message) is a bug.
"""
from __future__ import annotations

import csv
import io
import os
import re
import resource
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dmha.audio import AUDIO_EXTENSIONS, AudioError, audio_duration, load_audio, load_audio_array
from dmha.data.manifest import Item, ManifestError, read_manifest, write_manifest

# database=None: nothing is written outside pytest's tmp dirs; deadline=None: libsndfile's first call is slow.
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SR = 16000


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check_audio_outcome(call, path: Path | str, name: str | None = None) -> None:
    """A finite, non-empty float32 (n,) array (or a positive duration), or a one-line AudioError."""
    try:
        out = call(path)
    except AudioError as err:
        message = str(err)
        assert "\n" not in message and "\r" not in message, message
        assert err.path == str(name if name is not None else path)
        assert message.startswith(f"{err.path}: ") and err.reason, message
        return
    if isinstance(out, float):
        assert np.isfinite(out) and out > 0
    else:
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.ndim == 1, (type(out), out)
        assert out.size > 0 and np.isfinite(out).all()


def check_file(path: Path) -> None:
    for call in (load_audio, audio_duration):
        check_audio_outcome(call, path)


# ---- audio files ----

@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".wav", ".flac", ".mp3", ".ogg", ".aiff", ".bin"]))
@example(data=b"", suffix=".wav")
@example(data=b"RIFF\x00\x00\x00\x00WAVE", suffix=".wav")
@example(data=b"fLaC", suffix=".flac")
@example(data=b"ID3\x04\x00\x00\x00\x00\x00\x00", suffix=".mp3")
def test_random_bytes(work: Path, data: bytes, suffix: str) -> None:
    path = work / f"random{suffix}"
    path.write_bytes(data)
    check_file(path)


def wav_file(fmt_tag: int, channels: int, rate: int, bits: int, payload: bytes, data_size: int | None,
             byte_rate: int | None, block_align: int | None, extra: bytes) -> bytes:
    """A RIFF/WAVE file from its header fields; None = the value consistent with the others."""
    align = block_align if block_align is not None else (channels * bits // 8) & 0xFFFF
    rate_bytes = byte_rate if byte_rate is not None else (rate * align) & 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate_bytes, align, bits)
    size = data_size if data_size is not None else len(payload)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra + b"data" + struct.pack("<I", size) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
float_samples = hnp.arrays(np.float32, st.integers(0, 800)).map(lambda a: a.tobytes())


@FUZZ
@given(fmt_tag=st.sampled_from([1, 3, 0xFFFE, 0, 2, 6, 7]) | u16,
       channels=st.sampled_from([1, 2, 6]) | u16,
       rate=st.sampled_from([8000, 16000, 44100, 96000, 1000, 999, 0]) | u32,
       bits=st.sampled_from([8, 16, 24, 32, 64]) | u16,
       payload=st.binary(max_size=3000) | float_samples,
       data_size=st.none() | u32, byte_rate=st.none() | u32, block_align=st.none() | u16,
       extra=st.sampled_from([b"", b"LIST\x04\x00\x00\x00INFO", b"fact\x04\x00\x00\x00\xff\xff\xff\xff",
                              b"junk\xff\xff\xff\xff"]))
def test_wav_headers_with_mutated_fields(work: Path, fmt_tag, channels, rate, bits, payload, data_size,
                                         byte_rate, block_align, extra) -> None:
    path = work / "mutated header.wav"
    path.write_bytes(wav_file(fmt_tag, channels, rate, bits, payload, data_size, byte_rate, block_align, extra))
    check_file(path)


@pytest.fixture(scope="module")
def originals(work: Path) -> dict[str, bytes]:
    """Valid 0.3 s files of each format the loader reads, as bytes to mutate."""
    t = np.arange(int(0.3 * SR)) / SR
    wave = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    formats = {".wav": "PCM_16", ".flac": "PCM_16", ".ogg": "VORBIS", ".aiff": "PCM_16"}
    if "MP3" in sf.available_formats():
        formats[".mp3"] = "MPEG_LAYER_III"
    result = {}
    for suffix, subtype in formats.items():
        sf.write(work / f"original{suffix}", wave, SR, subtype=subtype)
        result[suffix] = (work / f"original{suffix}").read_bytes()
    return result


MUTATED_SUFFIXES = [".wav", ".flac", ".ogg", ".aiff"] + ([".mp3"] if "MP3" in sf.available_formats() else [])


def _writes_mp3() -> bool:
    """Whether this libsndfile really encodes MP3 (tried, not read from its list of formats)."""
    try:
        sf.write(io.BytesIO(), np.zeros(SR // 10, np.float32), SR, format="MP3", subtype="MPEG_LAYER_III")
    except (sf.LibsndfileError, TypeError, ValueError, RuntimeError):
        return False
    return True


def test_the_mutation_fuzz_starts_from_valid_files_of_every_format(originals, tmp_path):
    """Every format the mutations draw is one the loader reads and the fixture made a valid file of (the tone
    decodes back: 0.3 s at 440 Hz), MP3 included wherever this libsndfile can encode it; else the fuzz would
    mutate garbage, or skip a format, and still pass."""
    assert set(MUTATED_SUFFIXES) <= AUDIO_EXTENSIONS and set(originals) == set(MUTATED_SUFFIXES)
    for suffix in MUTATED_SUFFIXES:
        path = tmp_path / f"original{suffix}"
        path.write_bytes(originals[suffix])
        wave = load_audio(path)
        assert abs(wave.size / SR - 0.3) < 0.1, (suffix, wave.size)  # mp3 pads a frame or two
        peak = np.fft.rfftfreq(wave.size, 1 / SR)[np.abs(np.fft.rfft(wave)).argmax()]
        assert abs(peak - 440) < 10, (suffix, peak)
    if not _writes_mp3():
        pytest.skip("this libsndfile has no MP3 encoder: mutated MP3 files are not fuzzed here")
    assert ".mp3" in MUTATED_SUFFIXES


@FUZZ
@given(suffix=st.sampled_from(MUTATED_SUFFIXES),
       edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
       header_edits=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), max_size=4),
       keep=st.none() | st.floats(0, 1))
def test_mutated_real_files(work: Path, originals, suffix, edits, header_edits, keep) -> None:
    raw = bytearray(originals[suffix])
    for where, value in edits:
        raw[int(where * len(raw))] = value
    for offset, value in header_edits:  # headers are where lengths and rates live
        raw[offset] = value
    data = bytes(raw if keep is None else raw[: int(keep * len(raw))])
    path = work / f"mutated{suffix}"
    path.write_bytes(data)
    check_file(path)


# ---- in-memory arrays ----

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
          np.bool_, np.complex64]
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40)))
odd_inputs = st.one_of(st.lists(st.floats(), max_size=20), st.lists(st.lists(st.floats(), max_size=3), max_size=5),
                       st.text(max_size=5), st.none(), st.just([[1.0, 2.0], [3.0]]))
rates = st.one_of(st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 96000]),
                  st.integers(-2, 2**70), st.floats(), st.just(True), st.just(np.int64(16000)), st.just("16000"))


@FUZZ
@given(wave=arrays | odd_inputs, rate=rates)
@example(wave=np.array([1e300, -1e300]), rate=16000)
@example(wave=np.full((10, 2), np.finfo(np.float32).max, np.float32), rate=44100)
@example(wave=np.zeros((3, 0), np.float32), rate=16000)
@example(wave=np.array([0.5], np.float32), rate=1_000_000)
def test_arrays(wave, rate) -> None:
    check_audio_outcome(lambda w: load_audio_array(w, rate, name="fuzzed upload"), wave, name="fuzzed upload")


# ---- manifests ----

def check_manifest_outcome(path: Path, **kwargs) -> list[Item] | None:
    """Items that satisfy the schema, or a one-line ManifestError naming the manifest."""
    try:
        items = read_manifest(path, **kwargs)
    except ManifestError as err:
        message = str(err)
        assert "\n" not in message and "\r" not in message, message
        assert str(path) in message, message
        return None
    assert items
    for item in items:
        assert item.path.is_absolute() and re.fullmatch(r"[A-Za-z0-9_-]+", item.split)
        assert kwargs.get("require_label") is False or item.label
        assert item.transcript is None or item.transcript.strip() == item.transcript != ""
    return items


CELL_CHARS = st.sampled_from(list(",;\t|\"' \n\r~/.\\\x00\ufeffaZ9_-é日🎤") + ["path", "label", "split", "a.wav"])
cells = st.lists(CELL_CHARS, max_size=8).map("".join)
COLUMNS = ["path", "label", "split", "speaker", "transcript", "duration_s"]


@st.composite
def csv_texts(draw) -> bytes:
    """CSV-ish files: random columns (mostly the real ones), delimiters, quoting, endings, BOM, encoding."""
    header = draw(st.lists(st.sampled_from(COLUMNS) | cells, min_size=0, max_size=7))
    rows = draw(st.lists(st.lists(cells, max_size=8), max_size=6))
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONE]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, quoting=quoting, escapechar="\\",
                        lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])))
    try:
        for record in [header, *rows]:
            writer.writerow(record)
    except csv.Error:  # QUOTE_NONE cannot write some records (a lone empty field): not a manifest
        assume(False)
    text = draw(st.sampled_from(["", "\ufeff"])) + buffer.getvalue()
    return text.encode(draw(st.sampled_from(["utf-8", "utf-16", "utf-8", "latin-1"])), errors="replace")


@FUZZ
@given(data=csv_texts() | st.binary(max_size=400) | st.text(max_size=300).map(str.encode))
@example(data=b"path,label,split\n\"a\nb.wav\",x,train\n")
@example(data=b"path,label,split\n~nosuchuser/x.wav,x,train\n")
@example(data=b"path,label,split\n" + b"n" * 300 + b".wav,x,train\n")
@example(data=b"path,label,split,transcript\na.wav,x,train," + b"w" * 140_000 + b"\n")
def test_manifest_parser(work: Path, data: bytes) -> None:
    folder = work / "manifests"
    folder.mkdir(exist_ok=True)
    path = folder / "fuzzed manifest.csv"
    path.write_bytes(data)
    for kwargs in ({}, {"check_files": False}, {"require_label": False, "check_files": False}):
        check_manifest_outcome(path, **kwargs)


names = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"]), min_size=1,
                max_size=12).filter(lambda n: n.strip() and n not in (".", ".."))
texts = st.none() | st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=30)


@FUZZ
@given(rows=st.lists(st.tuples(names, texts, st.sampled_from(["train", "dev", "test", "x_1-2"]), texts, texts),
                     min_size=1, max_size=5, unique_by=lambda r: r[0]),
       extra=st.dictionaries(st.sampled_from(["gender", "duration_s", "ünï"]), texts.map(lambda t: t or ""),
                             max_size=2))
def test_manifest_round_trip(work: Path, rows, extra) -> None:
    # whatever write_manifest writes, read_manifest reads back: paths exact, cells stripped (None when empty)
    folder = work / "round trip"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    items = []
    for name, label, split, speaker, transcript in rows:
        (folder / name).write_bytes(b"")
        items.append(Item((folder / name).resolve(), label, split, speaker, transcript, dict(extra)))
    manifest = write_manifest(items, folder / "m.csv")
    back = read_manifest(manifest, require_label=False)
    clean = lambda value: (value or "").strip() or None  # noqa: E731
    assert [i.path for i in back] == [i.path for i in items]
    for got, want in zip(back, items):
        assert (got.label, got.split, got.speaker, got.transcript) == (
            clean(want.label), want.split, clean(want.speaker), clean(want.transcript))
        assert got.extra == {k: v.strip() for k, v in want.extra.items()}


# ---- atheris: coverage-guided, in a bounded subprocess ----

ATHERIS_TARGET = textwrap.dedent("""
    import os, sys
    import atheris
    import numpy, soundfile, soxr  # not instrumented: only dmha's own code is
    with atheris.instrument_imports(include=["dmha"]):
        import dmha.audio, dmha.data.manifest
    from dmha.audio import AudioError, audio_duration, load_audio
    from dmha.data.manifest import ManifestError, read_manifest
    WORK = sys.argv[1]
    SUFFIXES = [".wav", ".flac", ".mp3", ".ogg", ".csv"]

    def one_line(err, name):
        message = str(err)
        if "\\n" in message or "\\r" in message or name not in message:
            raise AssertionError(f"bad message for {name!r}: {message!r}")

    def target(data: bytes) -> None:
        if not data:
            return
        suffix = SUFFIXES[data[0] % len(SUFFIXES)]
        path = os.path.join(WORK, "input" + suffix)
        with open(path, "wb") as handle:
            handle.write(data[1:])
        if suffix == ".csv":
            try:
                read_manifest(path, check_files=False)
            except ManifestError as err:
                one_line(err, path)
            return
        for call in (load_audio, audio_duration):
            try:
                out = call(path)
            except AudioError as err:
                one_line(err, path)
                continue
            if call is load_audio and (out.size == 0 or not bool((abs(out) < float("inf")).all())):
                raise AssertionError(f"{path}: invalid result {out!r}")

    atheris.Setup([sys.argv[0], f"-runs={sys.argv[2]}", "-max_len=4096", "-seed=1"] + sys.argv[3:], target)
    atheris.Fuzz()
""")


def test_atheris_loader_and_parser(work: Path, originals) -> None:
    pytest.importorskip("atheris", reason="atheris not installed (pip install atheris; it needs a CPython "
                                          "build it has wheels for)")
    corpus = work / "atheris_corpus"
    corpus.mkdir(exist_ok=True)
    suffixes = [".wav", ".flac", ".mp3", ".ogg", ".csv"]  # the target's first byte picks one
    for suffix, data in originals.items():  # seeds: each valid file, prefixed with its suffix byte
        if suffix in suffixes:
            (corpus / f"seed{suffix}").write_bytes(bytes([suffixes.index(suffix)]) + data[:4000])
    (corpus / "seed.csv").write_bytes(bytes([4]) + b"path,label,split\na.wav,x,train\n")
    scratch = work / "atheris_scratch"
    scratch.mkdir(exist_ok=True)
    # libFuzzer watches getrusage's peak RSS, and Linux hands a child the peak of the process that
    # started it (the parent's memory high-water mark survives fork/vfork + exec): late in a full
    # test run this pytest process has peaked near 2 GB, so libFuzzer's default 2 GB limit fired
    # on the first inputs ("out-of-memory" in CI, never in this file alone). Give the fuzzer its
    # own 2 GB on top of what it inherits.
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    done = subprocess.run([sys.executable, "-c", ATHERIS_TARGET, str(scratch), "10000",
                           f"-rss_limit_mb={inherited_mb + 2048}", f"-artifact_prefix={scratch}{os.sep}",
                           str(corpus)],
                          capture_output=True, text=True, timeout=300, cwd=work,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, tail
    assert "Done 10000 runs" in done.stderr, tail
