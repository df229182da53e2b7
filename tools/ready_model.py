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

--card-only rewrites the cards and references from the trained runs and the committed results (after
new benchmark results), without training.
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
from dataclasses import dataclass, field
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
    cv: dict[str, str] = field(default_factory=dict)  # corpus → cv.json of the same recipe (per corpus)
    peers: dict[str, str] = field(default_factory=dict)  # corpus → peers.json on the same folds
    cv_note: str = ""  # how the cv's recipe differs from this model's, when it does (said above the table)
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
         "6 emotions of acted English speech (RAVDESS + CREMA-D), speech only, calibrated", SIX,
         cv={"ravdess": "ravdess_cv/cv.json", "crema-d": "crema_cv/cv.json"},
         peers={"ravdess": "ravdess_cv/peers.json", "crema-d": "crema_cv/peers.json"},
         cv_note="Not this model's exact recipe: dmha's cv of each corpus alone with the same speaker statistics "
                 "(`train.speaker_stats=subsets`) but with the text branch (MiniLM over Whisper tiny.en "
                 "transcripts) and each corpus's own classes (8 on RAVDESS). Speech only scored 0.008 below it "
                 "on RAVDESS's dev folds (`benchmarks/results/ravdess_screening/`); the joint speaker cv of the default "
                 "recipe (both corpora, 8 classes, masked) is under Across corpora; this model's joint, speech-only, "
                 "six-class recipe has not been cross-validated itself."),
    Spec("dmha-crema-en", "crema_en", ["crema-d"],
         "ODbL 1.0 / DbCL 1.0, inherited from CREMA-D (commercial use allowed, with attribution)",
         "6 emotions of acted English speech (CREMA-D only: usable commercially), speech only, calibrated", SIX,
         cv={"crema-d": "crema_cv/cv.json"}, peers={"crema-d": "crema_cv/peers.json"},
         cv_note="Not this model's exact recipe: dmha's CREMA-D cv with the same speaker statistics "
                 "(`train.speaker_stats=subsets`) but with the text branch (MiniLM over Whisper tiny.en "
                 "transcripts); speech only scored 0.008 below it on RAVDESS's dev folds "
                 "(`benchmarks/results/ravdess_screening/`)."),
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


def restricted(manifest: Path, classes: tuple[str, ...], name: str) -> Path:
    """The manifest's rows whose label is one of `classes` (by canonical name: RAVDESS's `fearful` is `fear`),
    beside it (so its relative paths still hold)."""
    from dmha.corpora import canonical

    if not classes:
        return manifest
    with manifest.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [row for row in reader if canonical(row["label"]) in classes]
        fields = reader.fieldnames
    missing = set(classes) - {canonical(row["label"]) for row in rows}
    if missing:
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


def _interval(summary: dict, key: str) -> str:
    m = summary.get(key)
    if not m:
        return "not measured"
    return f"{m['mean']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"


def card(spec: Spec, run_dir: Path, target: Path, wall_s: float) -> str:
    """MODEL_CARD.md from what was measured (missing evidence is said to be missing)."""
    metrics = _load(run_dir / "metrics.json")
    labels = json.loads((target / "labels.json").read_text(encoding="utf-8"))
    labels = labels["labels"] if isinstance(labels, dict) else labels
    calibration = _load(target / "calibration.json") or {}
    lines = [f"# {spec.name}", "", f"{spec.summary}. A head of the Double Multi-Head Attention system (Costa, India, "
             "Hernando, Odyssey 2024) on dmha's embedded Whisper base encoder (frozen, a learned weighted sum of its "
             "layers), trained by dmha. Loaded by name: `dmha predict CLIP`, "
             f"`EmotionRecognizer.from_pretrained(\"{spec.name}\")`.", "",
             "## Intended use", "",
             "- Recognising which of its classes an **acted** emotion in a short English recording (2-5 s, one speaker, "
             "little noise) is closest to: research, teaching, demos, prototyping, and as a starting point for "
             "training on your own data.",
             "- Probabilities are calibrated on held-out speakers (temperature scaling), so they can be read as "
             "confidences on speech like the training data.", "",
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
              "the test speaker's other, unlabelled recordings (transductive; for a model without speaker statistics "
              "it equals alone).", ""]
    lines += ["### Speaker cross-validation (mean [95% interval over folds])", ""]
    if spec.cv_note:
        lines += [spec.cv_note, ""]
    lines += ["| corpus | alone | grouped | linear probe (b), alone | ECE alone |", "|---|---|---|---|---|"]
    any_cv = False
    for corpus in spec.corpora:
        cv = _load(RESULTS / spec.cv[corpus]) if corpus in spec.cv else None
        if cv is None:
            lines.append(f"| {corpus} | not measured | | | |")
            continue
        any_cv = True
        summary = cv["summary"].get("per_corpus", {}).get(corpus, cv["summary"]) if len(spec.corpora) > 1 else cv["summary"]
        peers = _load(RESULTS / spec.peers[corpus]) if corpus in spec.peers else None
        probe = _peer_mean(peers, corpus)
        grouped = _interval(summary, "macro_f1_grouped") if "macro_f1_grouped" in summary else "= alone"
        seeds = len(cv.get("seeds") or [0])
        lines.append(f"| {corpus} ({seeds} seed{'s' if seeds > 1 else ''}) | {_interval(summary, 'macro_f1')} | {grouped} | {_fmt(probe)} | "
                     f"{_fmt(summary.get('ece', {}).get('mean'))} |")
    if any_cv:
        lines += ["", "Sources: " + ", ".join(f"`benchmarks/results/{spec.cv[c]}`" for c in spec.corpora if c in spec.cv)
                  + " (`dmha cv`), peers by `benchmarks/cv_peers.py` on the same folds."]
    lines += ["", "### This model on its own held-out speakers", ""]
    lines += ["| split | corpus | macro-F1 alone | n |", "|---|---|---|---|"]
    for split in ("dev", "test"):
        report = metrics.get(split) if metrics else None
        if not report:
            continue
        for corpus, r in (report.get("per_corpus") or {"all": report}).items():
            lines.append(f"| {split} | {corpus} | {r['macro_f1']:.3f} | {r['n']} |")
    cross = _load(RESULTS / spec.cross_corpus)
    lines += ["", "### Across corpora", ""]
    if cross:
        lines += [f"`benchmarks/results/{spec.cross_corpus}` (`benchmarks/cross_corpus.py`, mean over seeds "
                  f"{', '.join(map(str, cross['seeds']))}): dmha's default recipe (with its text branch; not this model's) "
                  "trained on one corpus's split and scored on every clip of the other, on the emotions both share; "
                  "both → each: a speaker cv over both corpora.", ""]
        lines += ["| trained on → tested on | dmha alone | dmha grouped | probe (b) |", "|---|---|---|---|"]
        for pair, row in cross["transfer"].items():
            lines.append(f"| {pair.replace('->', ' → ')} | {_fmt(row['dmha'].get('alone'))} | "
                         f"{_fmt(row['dmha'].get('grouped'))} | {_fmt(row['probes'].get('b'))} |")
        for row in cross.get("joint", []):
            lines.append(f"| both → {row['corpus']} ({row['folds']}-fold cv) | {_fmt(row['alone']['mean'])} | "
                         f"{_fmt((row.get('grouped') or {}).get('mean'))} | {_fmt(row.get('probe_b', {}).get('mean'))} |")
    else:
        lines.append("Not measured for this recipe.")
    lines += ["", "### Calibration", "",
              f"Temperature {calibration.get('temperature', float('nan')):.3f}, fitted on {calibration.get('fitted_on', '?')} "
              f"({calibration.get('n', '?')} clips, each alone). Expected calibration error (15 bins) there: "
              f"{_fmt(calibration.get('ece_before'))} before, {_fmt(calibration.get('ece_after'))} after; Brier "
              f"{_fmt(calibration.get('brier_before'))} → {_fmt(calibration.get('brier_after'))}."]
    if metrics and metrics.get("test"):
        lines.append(f"On the test speakers (not used for the fit): ECE {_fmt(metrics['test'].get('ece'))}, Brier "
                     f"{_fmt(metrics['test'].get('brier'))}.")
    speed = _load(RESULTS / spec.speed)
    lines += ["", "## Speed", ""]
    if speed and spec.name in speed.get("models", {}):
        s = speed["models"][spec.name]
        lines.append(f"On {speed['machine']}: `dmha predict CLIP` (a new process, loading included) gave its first "
                     f"result in {s['first_result_s']:.1f} s; real-time factor {s['rtf']:.4f} (seconds of compute "
                     f"per second of audio, one clip at a time, after loading; no ASR: the model is speech-only). "
                     + (f"ASR (faster-whisper tiny.en), which a multimodal model runs on every clip without a "
                        f"transcript, would add a real-time factor of {speed['asr_tiny_en_rtf']:.3f} on its own. "
                        if speed.get("asr_tiny_en_rtf") else "")
                     + f"Source: `benchmarks/results/{spec.speed}` (`benchmarks/ready_speed.py`).")
    else:
        lines.append("Not measured yet (`benchmarks/ready_speed.py`).")
    lines += ["", "## Known failure modes", "",
              "- It has heard only acted, often exaggerated portrayals of fixed neutral sentences: quality on subtle, "
              "mixed or spontaneous emotion is unknown and expected to be much lower.",
              *_weak_points(metrics),
              *_transfer_point(cross),
              "- Each clip alone is harder than grouped: when you have several recordings of one speaker, "
              "`dmha predict --same-speaker` or `--enrol` normalises by that speaker (models with speaker statistics).",
              "- Words are not used (speech-only): emotion carried only by what is said is invisible to it.", ""]
    lines += ["## Reproduce", "", "```bash", "make ready-model      # python tools/ready_model.py", "```", "",
              f"Config: `configs/ready/{spec.name}.toml`. "
              + (f"Training took {wall_s / 60:.1f} min on the machine above." if wall_s else "")
              + " Weights differ at the last digits between machines (floating-point order), the figures by a "
              "little more; the cv figures above are the ones to compare.", ""]
    return "\n".join(lines)


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


def _weak_points(metrics: dict | None) -> list[str]:
    """The weakest classes and the most confused pair on the model's own test speakers (measured, not assumed)."""
    test = (metrics or {}).get("test")
    if not test or "per_class" not in test:
        return []
    f1 = sorted(((r["f1"], label) for label, r in test["per_class"].items()), key=lambda x: x[0])
    out = [f"- Weakest classes on its test speakers: " + ", ".join(f"`{label}` (F1 {v:.2f})" for v, label in f1[:2])
           + f"; strongest `{f1[-1][1]}` (F1 {f1[-1][0]:.2f})."]
    if "confusion" in test:
        labels, cm = test["labels"], test["confusion"]
        pairs = [(cm[i][j], labels[i], labels[j]) for i in range(len(labels)) for j in range(len(labels)) if i != j]
        n, true, pred = max(pairs)
        out.append(f"- The most frequent confusion there: `{true}` taken for `{pred}` ({n} of "
                   f"{sum(cm[labels.index(true)])} `{true}` clips).")
    return out


def _peer_mean(peers: dict | None, corpus: str) -> float | None:
    if not peers:
        return None
    section = peers.get("per_corpus", {}).get(corpus, peers)
    probe = section.get("peers", {}).get("b") or section.get("b")
    if isinstance(probe, dict):
        return probe.get("mean") or probe.get("macro_f1", {}).get("mean")
    return None


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
    args = parser.parse_args(argv)
    specs = [s for s in MODELS if args.only in (None, s.name)]
    if not specs:
        parser.error(f"no model {args.only!r}; models: {', '.join(s.name for s in MODELS)}")
    paths = {} if args.card_only else manifests(Path(args.shared))
    for spec in specs:
        if args.card_only:
            run_dir = RUNS / spec.name
            if not (run_dir / "metrics.json").is_file():
                print(f"{spec.name}: no trained run in {run_dir}; skipped")
                continue
            target = PRETRAINED / spec.folder
        else:
            run_dir, _ = train(spec, paths)
            target = install(spec, run_dir)
        wall = (_load(run_dir / "wall_s.json") or {}).get("wall_s", 0.0)
        (target / "bundled.json").write_text(json.dumps(bundled_json(spec, target), indent=2) + "\n", encoding="utf-8")
        (target / "NOTICE.md").write_text(notice(spec), encoding="utf-8")
        (target / "MODEL_CARD.md").write_text(card(spec, run_dir, target, wall), encoding="utf-8")
        print(f"{spec.name}: {target.relative_to(ROOT)}")
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps(references(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {REFERENCE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
