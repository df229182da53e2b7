#!/usr/bin/env python
"""Train the bundled models from the shared corpora and put them into the package (`make ready-model`).

For each model of MODELS: the corpora's manifests (`dmha prepare`, their own speaker splits), `dmha train`
with the model's config under configs/ready/ (resumable: a killed run resumes from its checkpoint), then
the model directory is copied into src/dmha/pretrained/<folder>/ with bundled.json (name, classes,
training data, licence), the licence notice, and MODEL_CARD.md written from measured figures only: the
run's own dev/test split, and the committed benchmark results of the same recipe (speaker cv per corpus,
cross-corpus, speed) where they exist; a figure not measured is said to be missing, never filled in.
Finally the example clips' probabilities under each model are written to tests/data/bundled_reference.json,
which tests compare every later load against.

    python tools/ready_model.py [--shared ../shared] [--only NAME] [--card-only]

--card-only rewrites the cards and references from the installed models and the committed results (after
new benchmark results, e.g. `python benchmarks/bundled_cv.py`), without training.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RUNS = ROOT / "runs" / "ready"
RESULTS = ROOT / "benchmarks" / "results"
PRETRAINED = ROOT / "src" / "dmha" / "pretrained"
REFERENCE = ROOT / "tests" / "data" / "bundled_reference.json"
MODEL_FILES = ("config.json", "model.safetensors", "labels.json", "calibration.json")

CORPORA = {
    "ravdess": {"importer": "ravdess", "folder": "ravdess",
                "cite": "Livingstone & Russo (2018), The Ryerson Audio-Visual Database of Emotional Speech and Song "
                        "(RAVDESS), PLoS ONE 13(5): e0196391, doi:10.1371/journal.pone.0196391",
                "licence": "CC BY-NC-SA 4.0 (attribution, non-commercial, share-alike)",
                "about": "24 actors (12 female, 12 male), North American English, two neutral sentences, 8 emotions "
                         "(neutral, calm, happy, sad, angry, fearful, disgust, surprised), 1440 clips"},
    "crema-d": {"importer": "crema-d", "folder": "crema-d",
                "cite": "Cao et al. (2014), CREMA-D: Crowd-sourced Emotional Multimodal Actors Dataset, IEEE Trans. "
                        "Affective Computing 5(4): 377-390, doi:10.1109/TAFFC.2014.2336244",
                "licence": "ODbL 1.0 (database) / DbCL 1.0 (contents): attribution, share-alike of the database",
                "about": "the shared copy's 40 of 91 actors (20 female, 20 male, aged 20-74, several ethnicities), "
                         "American English, 12 neutral sentences, 6 emotions (angry, disgust, fear, happy, neutral, "
                         "sad), 3268 clips"},
    "emospeech": {"importer": "emospeech", "folder": "emospeech",
                  "cite": "Banga et al. (2019), Indian EmoSpeech Command Dataset: A dataset for emotion based speech "
                          "recognition in the wild, arXiv:1910.13801",
                  "licence": "CC BY-NC-SA 4.0 (attribution, non-commercial, share-alike)",
                  "about": "the shared copy's 67 known users, Indian English and Hindi, one command keyword per clip "
                           "recorded on the user's own phone, 4 portrayed emotions (angry, calm as neutral, fear, "
                           "happy), 1393 clips"},
}


@dataclass
class Spec:
    """One bundled model: how it is trained and where its evidence lies (benchmark result files)."""

    name: str
    folder: str
    corpora: list[str]
    licence: str
    summary: str
    classes: tuple[str, ...] = ()  # the label set: each corpus's clips of other labels are left out (empty: all)
    cross_corpus: str = "cross_corpus/cross_corpus.json"
    speed: str = "ready_speed/speed.json"

    @property
    def config(self) -> Path:
        return ROOT / "configs" / "ready" / f"{self.name}.toml"


# The six emotions both corpora share (RAVDESS's "fearful" is prepared as "fear"). RAVDESS's calm and surprised
# are left out of the bundled models: CREMA-D has neither, so they would be learnt from 24 actors reading two
# sentences, and a ready model should offer only classes it saw from every corpus.
SIX = ("angry", "disgust", "fear", "happy", "neutral", "sad")

MODELS = [
    Spec("dmha-acted-en", "acted_en", ["ravdess", "crema-d"],
         "CC BY-NC-SA 4.0, inherited from RAVDESS (non-commercial use only; share-alike)",
         "6 emotions of acted English speech (RAVDESS + CREMA-D), speech only, calibrated", SIX),
    Spec("dmha-crema-en", "crema_en", ["crema-d"],
         "ODbL 1.0 / DbCL 1.0, inherited from CREMA-D (commercial use allowed, with attribution)",
         "6 emotions of acted English speech (CREMA-D only: usable commercially), speech only, calibrated", SIX),
]


def run(*command: str) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def manifests(shared: Path) -> dict[str, Path]:
    out = {}
    for corpus, info in CORPORA.items():
        path = RUNS / "manifests" / f"{corpus}.csv"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            run(sys.executable, "-m", "dmha.cli", "prepare", info["importer"], str(shared / "data" / info["folder"]),
                "--out", str(path))
        out[corpus] = path
    return out


def restricted(manifest: Path, classes: tuple[str, ...], name: str, every_class: bool = True) -> Path:
    """The manifest's rows whose label is one of `classes` (by canonical name: RAVDESS's `fearful` is `fear`),
    beside it (so its relative paths still hold); `every_class`: each class must have a clip (a corpus
    that offers fewer, as EmoSpeech's four, passes False)."""
    from dmha.corpora import canonical

    if not classes:
        return manifest
    with manifest.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [row for row in reader if canonical(row["label"]) in classes]
        fields = reader.fieldnames
    missing = set(classes) - {canonical(row["label"]) for row in rows}
    if missing and every_class:
        raise SystemExit(f"{manifest}: no clip labelled {', '.join(sorted(missing))} (classes of {name})")
    out = manifest.with_name(f"{manifest.stem}.{name}.csv")
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return out


def train(spec: Spec, paths: dict[str, Path]) -> tuple[Path, float]:
    """`dmha train` of the spec (resumes); the run folder and its wall time (0 when it was already done)."""
    out = RUNS / spec.name
    if (out / "metrics.json").is_file():
        return out, 0.0
    command = [sys.executable, "-m", "dmha.cli", "train", "--out", str(out), "--config", str(spec.config)]
    for corpus in spec.corpora:
        command += ["--manifest", str(restricted(paths[corpus], spec.classes, spec.name))]
    start = time.time()
    run(*command)
    seconds = time.time() - start
    (out / "wall_s.json").write_text(json.dumps({"wall_s": seconds}) + "\n")
    return out, seconds


def _portable_config(source: Path, spec: Spec) -> str:
    """config.json with the training manifests named by corpus, not by this machine's paths."""
    config = json.loads(source.read_text(encoding="utf-8"))
    meta = config.get("meta", {})
    if "train_manifest" in meta:
        meta["train_manifest"] = [f"{c}.csv (dmha prepare {CORPORA[c]['importer']})" for c in spec.corpora]
    return json.dumps(config, indent=2) + "\n"


def install(spec: Spec, run_dir: Path) -> Path:
    target = PRETRAINED / spec.folder
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    model = run_dir / "model"
    for name in MODEL_FILES:
        if name == "config.json":
            (target / name).write_text(_portable_config(model / name, spec), encoding="utf-8")
        else:
            shutil.copyfile(model / name, target / name)
    (target / "__init__.py").write_text(f'"""The bundled model {spec.name} (see MODEL_CARD.md)."""\n')
    return target


def _load(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


class Cite:
    """Figures of committed JSON files as links `[0.687](…/cv.json#summary.macro_f1.mean)` (tests/test_results.py
    checks each against its file); `dmha models NAME` and the service page show the number alone."""

    def __init__(self, card_dir: Path, results_link: str | None = None):
        self.card_dir = card_dir
        self.results_link = results_link  # how the citing page names benchmarks/results/ (e.g. ../results/)

    def __call__(self, data: dict | None, path: Path, key: str, digits: int = 3, sign: bool = False) -> str:
        value = data
        try:
            for part in key.split("."):
                value = value[int(part)] if isinstance(value, list) else value[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return "not measured"
        if value is None or (isinstance(value, float) and value != value):
            return "n/a"
        text = f"{value:+.{digits}f}".replace("-", "−") if sign else f"{value:.{digits}f}"
        if self.results_link is not None and RESULTS in path.parents:
            target = self.results_link + path.relative_to(RESULTS).as_posix()
        else:
            target = Path(shutil.os.path.relpath(path, self.card_dir)).as_posix()
        return f"[{text}]({target}#{key})"

    def interval(self, data: dict | None, path: Path, key: str) -> str:
        return (f"{self(data, path, key + '.mean')} [{self(data, path, key + '.ci95.0')}, "
                f"{self(data, path, key + '.ci95.1')}]")


def evidence(spec: Spec) -> dict[str, Path]:
    """The committed files a card is written from (benchmarks/bundled_cv.py, ready_speed.py, cross_corpus.py)."""
    folder = RESULTS / "bundled_cv" / spec.name
    return {"cv": folder / "cv.json", "peers": folder / "peers.json", "wall": folder / "wall_s.json",
            "heldout": folder / "heldout.json", "cross": RESULTS / spec.cross_corpus, "speed": RESULTS / spec.speed,
            "no_speech": RESULTS / "no_speech" / "no_speech.json"}


def card(spec: Spec, target: Path) -> str:
    """MODEL_CARD.md from committed, measured figures only (a missing one is said to be missing): the speaker
    cv of this model's own recipe first, then the model itself on its held-out speakers."""
    files = evidence(spec)
    data = {name: _load(path) for name, path in files.items()}
    cite = Cite(target)
    labels = json.loads((target / "labels.json").read_text(encoding="utf-8"))
    labels = labels["labels"] if isinstance(labels, dict) else labels
    lines = [f"# {spec.name}", "", f"{spec.summary}. A head of the Double Multi-Head Attention system (Costa, India, "
             "Hernando, Odyssey 2024) on dmha's embedded Whisper base encoder (frozen, a learned weighted sum of its "
             "layers), trained by dmha. Loaded by name: `dmha predict CLIP`, "
             f"`EmotionRecognizer.from_pretrained(\"{spec.name}\")`.", "",
             "## Intended use", "",
             "- Recognising which of its classes an **acted** emotion in a short English recording (2-5 s, one speaker, "
             "little noise) is closest to: research, teaching, demos, prototyping, and as a starting point for "
             "training on your own data.",
             *_calibration_claim(spec, data, files, cite), "",
             "## Out of scope", "",
             "- **Decisions about people**: hiring, assessment, health, policing, access to services, or anything "
             "that affects someone because of an inferred emotion. Emotion recognised from acted speech is not a "
             "measurement of what a person feels.",
             "- Spontaneous or conversational speech, other languages and accents, children, noisy or far-field "
             "audio, several speakers at once: the training data has none of these, and quality there is unknown "
             "(expect it to be much lower).",
             "- Long recordings without segmenting them (`dmha predict --segment`).", "",
             "## Classes", "", ", ".join(f"`{label}`" for label in labels), ""]
    lines += ["## Training data", ""]
    for corpus in spec.corpora:
        info = CORPORA[corpus]
        lines.append(f"- **{corpus}**: {info['about']}. {info['cite']}. Licence: {info['licence']}.")
    lines += ["", "Splits are those of `dmha prepare` (speaker-independent): the train speakers train, the dev "
              "speakers choose the checkpoint and fit the calibration, the test speakers are never seen in training.",
              "", "## Licence", "", f"This model: **{spec.licence}**. dmha's code is MIT; a model is a work derived from "
              "its training data and carries that data's terms (see NOTICE.md beside this card).", ""]
    lines += ["## Quality", "", "Macro-F1 (the mean of the per-class F1, so every class counts alike). **Alone**: each "
              "clip scored alone, as `dmha predict` sees one file (the figure to expect). **Grouped**: normalised with "
              "the test speaker's other, unlabelled recordings (transductive).", ""]
    lines += _cv_section(spec, data, files, cite)
    lines += _heldout_section(spec, data, files, cite, target)
    lines += _cross_section(data["cross"], files["cross"], cite)
    lines += _speed_section(spec, data["speed"], files["speed"], cite)
    lines += _no_speech_section(data["no_speech"], files["no_speech"], cite)
    lines += ["", "## Known failure modes", "",
              "- It has heard only acted, often exaggerated portrayals of fixed neutral sentences: quality on subtle, "
              "mixed or spontaneous emotion is unknown and expected to be much lower.",
              *_weak_points(data["heldout"], files["heldout"], cite),
              *_transfer_point(data["cross"]),
              "- Each clip alone is harder than grouped: when you have several recordings of one speaker, "
              "`dmha predict --same-speaker` or `--enrol` normalises by that speaker (models with speaker statistics).",
              "- Words are not used (speech-only): emotion carried only by what is said is invisible to it.", ""]
    lines += ["## Reproduce", "", "```bash", "make ready-model                        # python tools/ready_model.py",
              f"python benchmarks/bundled_cv.py --only {spec.name}   # the figures above (then --card-only)", "```", "",
              f"Config: `configs/ready/{spec.name}.toml`. Weights differ at the last digits between machines "
              "(floating-point order), the held-out figures by a little more; the cv figures are the ones to compare.", ""]
    return "\n".join(lines)


def summary_rows(results_link: str) -> list[str]:
    """One table row per bundled recipe and corpus (its own speaker cv, each clip alone, beside probe (b)) for the
    README and the Results page, its figures cited from the committed JSONs (`python tools/ready_model.py --rows`)."""
    rows = []
    for spec in MODELS:
        files = evidence(spec)
        cv, peers = _load(files["cv"]), _load(files["peers"])
        if not cv:
            continue
        cite = Cite(ROOT, results_link)
        for corpus in spec.corpora:
            key = lambda k: _corpus_key(spec, corpus, k)  # noqa: E731
            section = f"per_corpus.{corpus}." if len(spec.corpora) > 1 else ""
            rows.append(f"| {corpus} · bundled `{spec.name}` recipe ({len(cv['seeds'])}) | **{cite.interval(cv, files['cv'], key('macro_f1'))}** | "
                        f"{cite(cv, files['cv'], key('macro_f1_grouped.mean'))} | {cite(peers, files['peers'], section + 'peers.b.mean')} | "
                        f"{cite(peers, files['peers'], section + 'peers.b.difference.alone.mean', sign=True)} "
                        f"({cite(peers, files['peers'], section + 'peers.b.difference.alone.wins', digits=0)} of {cv['summary']['folds_done']}) | "
                        f"{cite(cv, files['cv'], 'summary.ece.mean')} |")
    return rows


PAGES = {"README.md": "benchmarks/results/", "docs/benchmarks/results.md": "../results/"}


def marker(link: str) -> str:
    return f"<!-- bundled rows: python tools/ready_model.py --card-only (--rows {link}) -->"


def fill_pages() -> None:
    """The README's and the Results page's table of the bundled recipes: after the marker, its two header lines,
    then summary_rows (the old rows replaced)."""
    for page, link in PAGES.items():
        path = ROOT / page
        head, tail = path.read_text(encoding="utf-8").split(marker(link) + "\n")
        lines = tail.split("\n")
        k = 2
        while k < len(lines) and lines[k].startswith("| "):
            k += 1
        path.write_text(head + marker(link) + "\n" + "\n".join([*lines[:2], *summary_rows(link), *lines[k:]]),
                        encoding="utf-8")


def _calibration_claim(spec: Spec, data: dict, files: dict, cite: Cite) -> list[str]:
    """What the probabilities are worth, worded by what was measured (ECE of this recipe's cv, each clip alone)."""
    cv, heldout = data["cv"], data["heldout"]
    if not cv:
        return ["- Probabilities are temperature-scaled on held-out (dev) speakers; how well calibrated they are "
                "has not been measured for this recipe."]
    own = (f", and {cite(heldout, files['heldout'], 'ece')} for these weights on their own test speakers"
           if heldout else "")
    return [f"- Probabilities are temperature-scaled on held-out (dev) speakers. Their expected calibration error "
            f"(15 bins, each clip alone) is {cite(cv, files['cv'], 'summary.ece.mean')} in this recipe's speaker cv{own}: "
            "there, a confidence of 0.8 is right roughly that often, **on speech like the training corpora**. On "
            "other recordings it has not been measured for this recipe, and models of acted speech were overconfident "
            "on corpora they never heard: read the probabilities as a ranking there, not as confidences."]


def _corpus_key(spec: Spec, corpus: str, key: str) -> str:
    return f"summary.per_corpus.{corpus}.{key}" if len(spec.corpora) > 1 else f"summary.{key}"


def _cv_section(spec: Spec, data: dict, files: dict, cite: Cite) -> list[str]:
    cv, peers = data["cv"], data["peers"]
    lines = ["### Speaker cross-validation of this recipe (mean [95% interval over folds])", ""]
    if not cv:
        return lines + ["Not measured yet (`python benchmarks/bundled_cv.py`).", ""]
    seeds, folds = cv["seeds"], cv["summary"]["folds_done"]
    short = (f" **{len(seeds)} seed{'s' if len(seeds) > 1 else ''} only**: dmha's protocol is 3, and "
             f"`python benchmarks/bundled_cv.py --only {spec.name}` adds them (it resumes)." if len(seeds) < 3 else "")
    lines += [f"`dmha cv` of this model's own recipe and classes ({folds} speaker folds within each corpus, "
              f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}: each fold's figure is its seeds' mean), "
              "and the linear probe (b) (logistic "
              "regression on one mean-pooled layer of the same frozen encoder, layer and C chosen on each fold's dev "
              "speakers) on exactly the same folds." + short, "",
              "| corpus | alone | grouped (transductive) | probe (b), alone | this − probe (b), alone |",
              "|---|---|---|---|---|"]
    for corpus in spec.corpora:
        key = lambda k: _corpus_key(spec, corpus, k)  # noqa: E731
        section = f"per_corpus.{corpus}." if len(spec.corpora) > 1 and peers and "per_corpus" in peers else ""
        probe = cite(peers, files["peers"], f"{section}peers.b.mean")
        diff = cite(peers, files["peers"], f"{section}peers.b.difference.alone.mean", sign=True)
        wins = cite(peers, files["peers"], f"{section}peers.b.difference.alone.wins", digits=0)
        lines.append(f"| {corpus} | {cite.interval(cv, files['cv'], key('macro_f1'))} | "
                     f"{cite.interval(cv, files['cv'], key('macro_f1_grouped'))} | {probe} | {diff} (better on {wins} of "
                     f"{folds} folds) |")
    wall = data["wall"]
    lines += ["", f"Calibration, each clip alone, over each fold's test clips{' of both corpora' if len(spec.corpora) > 1 else ''}: "
              f"ECE (15 bins) {cite.interval(cv, files['cv'], 'summary.ece')}, Brier {cite(cv, files['cv'], 'summary.brier.mean')}.",
              "", f"Sources: `benchmarks/results/bundled_cv/{spec.name}/` (`python benchmarks/bundled_cv.py --only "
              f"{spec.name}`: `dmha cv` then `benchmarks/cv_peers.py --only b`)"
              + (f"; wall time {cite(wall, files['wall'], 'minutes', digits=1)} min on the 2-core machine with `--jobs "
                 f"{wall.get('jobs', 1)}`, summed over the invocations that ran to their end (an interrupted one, whose "
                 "finished runs the next resumes, is not counted)." if wall else "."), ""]
    return lines


def _heldout_section(spec: Spec, data: dict, files: dict, cite: Cite, target: Path) -> list[str]:
    heldout, path = data["heldout"], files["heldout"]
    lines = ["### This model on its own test speakers", ""]
    if not heldout:
        return lines + ["Not measured yet (`python benchmarks/bundled_cv.py --heldout-only`).", ""]
    lines += ["`dmha evaluate` of the bundled weights on the test speakers of `dmha prepare`'s split (never seen in "
              "training), each clip alone: one split and one seed, so less certain than the cv above.", "",
              "| corpus | macro-F1 alone | UAR | ECE | Brier | n |", "|---|---|---|---|---|---|"]
    rows = heldout.get("per_corpus") or {"all": heldout}
    for corpus in rows:
        base = f"per_corpus.{corpus}." if "per_corpus" in heldout else ""
        lines.append(f"| {corpus} | {cite(heldout, path, base + 'macro_f1')} | {cite(heldout, path, base + 'uar')} | "
                     f"{cite(heldout, path, base + 'ece')} | {cite(heldout, path, base + 'brier')} | "
                     f"{cite(heldout, path, base + 'n', digits=0)} |")
    if "per_corpus" in heldout:
        lines.append(f"| all | {cite(heldout, path, 'macro_f1')} | {cite(heldout, path, 'uar')} | "
                     f"{cite(heldout, path, 'ece')} | {cite(heldout, path, 'brier')} | {cite(heldout, path, 'n', digits=0)} |")
    if "per_class" in heldout:
        lines += ["", "Per class (all test clips): " + ", ".join(
            f"`{label}` F1 {cite(heldout, path, f'per_class.{label}.f1', digits=2)}" for label in heldout["per_class"]) + "."]
    calibration_path = target / "calibration.json"
    calibration = _load(calibration_path)
    if calibration:
        lines += ["", f"Calibration: temperature {cite(calibration, calibration_path, 'temperature')}, fitted on the dev "
                  f"speakers' {cite(calibration, calibration_path, 'n', digits=0)} clips, each alone (ECE there "
                  f"{cite(calibration, calibration_path, 'ece_before')} before, "
                  f"{cite(calibration, calibration_path, 'ece_after')} after; `calibration.json`)."]
    return lines + [""]


def _cross_section(cross: dict | None, path: Path, cite: Cite) -> list[str]:
    lines = ["### Across corpora", ""]
    if not cross:
        return lines + ["Not measured."]
    lines += [f"`benchmarks/results/{path.relative_to(RESULTS).as_posix()}` (`benchmarks/cross_corpus.py`, seeds "
              f"{', '.join(map(str, cross['seeds']))}): **not this model's recipe**: dmha's default recipe (with its "
              "text branch) trained on one corpus's split and scored on every clip of the other, on the emotions both "
              "share. It says how a model of acted studio speech meets another studio; a leave-one-corpus-out "
              "measure of this recipe is not made yet.", "",
              "| trained on → tested on | dmha alone | dmha grouped | probe (b) |", "|---|---|---|---|"]
    for pair in cross["transfer"]:
        base = f"transfer.{pair}."
        lines.append(f"| {pair.replace('->', ' → ')} | {cite(cross, path, base + 'dmha.alone')} | "
                     f"{cite(cross, path, base + 'dmha.grouped')} | {cite(cross, path, base + 'probes.b')} |")
    return lines


def _speed_section(spec: Spec, speed: dict | None, path: Path, cite: Cite) -> list[str]:
    lines = ["", "## Speed", ""]
    if not speed or spec.name not in speed.get("models", {}):
        return lines + ["Not measured yet (`benchmarks/ready_speed.py`)."]
    base = f"models.{spec.name}."
    return lines + [
        f"On {speed['machine']}: `dmha predict CLIP` (a new process, loading included) gave its first result in "
        f"{cite(speed, path, base + 'first_result_s', digits=1)} s; real-time factor {cite(speed, path, base + 'rtf', digits=4)} "
        "(seconds of compute per second of audio, one clip at a time, after loading; no ASR: the model is speech-only). "
        + (f"ASR (faster-whisper tiny.en), which a multimodal model runs on every clip without a transcript, would add "
           f"a real-time factor of {cite(speed, path, 'asr_tiny_en_rtf')} on its own. " if speed.get("asr_tiny_en_rtf") else "")
        + f"Source: `benchmarks/results/{spec.speed}` (`benchmarks/ready_speed.py`)."]


def _no_speech_section(gate: dict | None, path: Path, cite: Cite) -> list[str]:
    """What the model says to an input with no speech (measured: benchmarks/no_speech.py)."""
    if not gate:
        return []
    answered = ", ".join(f"{name} {cite(gate, path, f'corpora.{corpus}.answered', digits=0)} of "
                         f"{cite(gate, path, f'corpora.{corpus}.clips', digits=0)}"
                         for corpus, name in (("ravdess", "RAVDESS"), ("crema-d", "CREMA-D"), ("emospeech", "EmoSpeech"))
                         if corpus in gate.get("corpora", {}))
    return ["", "## No speech, no emotion", "",
            "An input with no speech in it (silence, noise, a tone, clicks, music) is given no emotion and a reason "
            "(`reason` in the JSON, `no emotion: ...` in the table): `predict` asks the speech gate first "
            "(`dmha.speech_gate`: silero-vad, then Whisper tiny.en's no-speech probability). Measured by "
            "`benchmarks/no_speech.py`: every one of its non-speech signals refused (speech evidence at most "
            f"{cite(gate, path, 'margin.non_speech_max_evidence', digits=2)}, threshold "
            f"{cite(gate, path, 'gate.min_evidence', digits=2)}), every clip of the shared corpora answered ({answered}; "
            f"the least evidence among those silero alone found short of speech: "
            f"{cite(gate, path, 'margin.speech_min_evidence', digits=2)}). `--no-speech-check` answers every input."]


def _transfer_point(cross: dict | None) -> list[str]:
    """How far quality falls on a corpus never heard (measured: benchmarks/cross_corpus.py)."""
    if not cross or not cross.get("transfer"):
        return []
    alone = [row["dmha"]["alone"] for row in cross["transfer"].values() if "alone" in row["dmha"]]
    grouped = [row["dmha"]["grouped"] for row in cross["transfer"].values() if row["dmha"].get("grouped") is not None]
    line = (f"- Recordings unlike its training corpora: a model trained on one of them and scored on the other falls to "
            f"macro-F1 {min(alone):.2f}-{max(alone):.2f} with each clip alone")
    if grouped:
        line += f" ({min(grouped):.2f}-{max(grouped):.2f} grouped by speaker)"
    return [line + ", not far above chance (about 0.17 for six classes): expect a large drop on other voices, microphones and rooms."]


def _weak_points(heldout: dict | None, path: Path, cite: Cite) -> list[str]:
    """The weakest classes and the most confused pair on the model's own test speakers (measured, not assumed)."""
    if not heldout or "per_class" not in heldout:
        return []
    f1 = sorted(((r["f1"], label) for label, r in heldout["per_class"].items()), key=lambda x: x[0])
    show = lambda label: cite(heldout, path, f"per_class.{label}.f1", digits=2)  # noqa: E731
    out = ["- Weakest classes on its test speakers: " + ", ".join(f"`{label}` (F1 {show(label)})" for _, label in f1[:2])
           + f"; strongest `{f1[-1][1]}` (F1 {show(f1[-1][1])})."]
    if "confusion" in heldout:
        labels, cm = heldout["labels"], heldout["confusion"]
        pairs = [(cm[i][j], labels[i], labels[j]) for i in range(len(labels)) for j in range(len(labels)) if i != j]
        n, true, pred = max(pairs)
        i, j = labels.index(true), labels.index(pred)
        out.append(f"- The most frequent confusion there: `{true}` taken for `{pred}` "
                   f"({cite(heldout, path, f'confusion.{i}.{j}', digits=0)} of {sum(cm[i])} `{true}` clips).")
    return out


def notice(spec: Spec) -> str:
    lines = [f"# Licence notice: {spec.name}", "", f"{spec.licence}.", "",
             "This model was trained by dmha on the following data, whose terms it inherits:", ""]
    for corpus in spec.corpora:
        info = CORPORA[corpus]
        lines.append(f"- {corpus}: {info['licence']}. {info['cite']}.")
    lines += ["", "Licence texts: CC BY-NC-SA 4.0 https://creativecommons.org/licenses/by-nc-sa/4.0/ ; ODbL 1.0 "
              "https://opendatacommons.org/licenses/odbl/1-0/ ; DbCL 1.0 https://opendatacommons.org/licenses/dbcl/1-0/",
              "", "dmha's code is under the MIT licence (LICENSE at the repository's root).", ""]
    return "\n".join(lines)


def bundled_json(spec: Spec, target: Path) -> dict:
    labels = json.loads((target / "labels.json").read_text(encoding="utf-8"))
    labels = labels["labels"] if isinstance(labels, dict) else labels
    from dmha import __version__

    return {"name": spec.name, "classes": labels, "summary": spec.summary,
            "training_data": " + ".join(spec.corpora), "licence": spec.licence,
            "trained_with": f"tools/ready_model.py (configs/ready/{spec.name}.toml), dmha {__version__}",
            "sha256": hashlib.sha256((target / "model.safetensors").read_bytes()).hexdigest()}


def references() -> dict:
    """Every bundled model's probabilities on the example clips, each clip alone."""
    from dmha.examples import clips
    from dmha.inference import EmotionRecognizer
    from dmha.pretrained import bundled

    out = {}
    for name in bundled():
        rec = EmotionRecognizer.from_pretrained(name)
        out[name] = {c.path.name: rec.predict(str(c.path)).probs for c in clips()}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--only", help="one model's name")
    parser.add_argument("--card-only", action="store_true", help="rewrite cards and references, train nothing")
    parser.add_argument("--rows", metavar="LINK", help="print the bundled recipes' cv rows for a page that names "
                        "benchmarks/results/ as LINK (README: benchmarks/results/, docs: ../results/), and stop")
    args = parser.parse_args(argv)
    if args.rows:
        print("\n".join(summary_rows(args.rows)))
        return 0
    specs = [s for s in MODELS if args.only in (None, s.name)]
    if not specs:
        parser.error(f"no model {args.only!r}; models: {', '.join(s.name for s in MODELS)}")
    paths = {} if args.card_only else manifests(Path(args.shared))
    for spec in specs:
        if args.card_only:  # the card is written from committed results and the installed model alone
            target = PRETRAINED / spec.folder
        else:
            run_dir, _ = train(spec, paths)
            target = install(spec, run_dir)
        (target / "bundled.json").write_text(json.dumps(bundled_json(spec, target), indent=2) + "\n", encoding="utf-8")
        (target / "NOTICE.md").write_text(notice(spec), encoding="utf-8")
        (target / "MODEL_CARD.md").write_text(card(spec, target), encoding="utf-8")
        print(f"{spec.name}: {target.relative_to(ROOT)}")
    fill_pages()
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps(references(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {REFERENCE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
