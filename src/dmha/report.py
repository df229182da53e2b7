"""report.html: one self-contained page (figures embedded) that explains an evaluation.

Confusion matrix and per-class scores say *what* the model gets right; the training curves,
learned layer weights and attention maps (the paper's Figs 2-4) say *how* it got there.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .ensemble import Member, training_log
from .batches import feature_loader
from .layout import FeatureRef
from .fileio import atomic_write_text
from .metrics import plot_attribute, plot_confusion
from .model import DMHA, AttentionTooLong, max_attention_positions, unpad_attention

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    """Figure → base64 PNG for an <img> tag (and the figure closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    _plt().close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# --- figures ------------------------------------------------------------------------------------

def confusion_figure(cm: np.ndarray, labels: Sequence[str], title: str) -> str:
    buffer = io.BytesIO()
    plot_confusion(cm, labels, buffer, title)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def per_class_figure(per_class: dict) -> str:
    plt = _plt()
    labels = list(per_class)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(labels), 3.4))
    for offset, key in zip((-0.27, 0.0, 0.27), ("precision", "recall", "f1")):
        ax.bar(x + offset, [per_class[label][key] for label in labels], width=0.27, label=key)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.legend(ncols=3, loc="upper center", bbox_to_anchor=(0.5, 1.15), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def reliability_figure(bins: Sequence[dict], ece: float, temperature: float) -> str:
    """Accuracy against confidence per bin (the diagonal is perfect calibration), with each bin's share."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.4, 4.0))
    used = [b for b in bins if b["n"]]
    width = bins[0]["high"] - bins[0]["low"]
    ax.bar([b["low"] for b in used], [b["accuracy"] for b in used], width=width, align="edge", alpha=0.7,
           edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    ax.scatter([b["confidence"] for b in used], [b["accuracy"] for b in used], s=[8 + 2 * b["n"] ** 0.5 for b in used],
               color="black", zorder=3, label="mean confidence (size: clips)")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)"), ax.set_ylabel("accuracy")
    ax.set_title(f"reliability: ECE {ece:.3f}, temperature {temperature:.2f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png(fig)


def read_training_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning's CSV log → {column: [(epoch, value)]} for the losses and the dev scores."""
    series: dict[str, list[tuple[int, float]]] = {"train_loss": [], "val_loss": [], "val_macro_f1": [],
                                                  "val_ccc": []}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for key in series:
                if row.get(key) not in (None, ""):
                    series[key].append((int(float(row["epoch"])), float(row[key])))
    return series


def curves_figure(series: dict, best_epoch: int | None) -> str:
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.5, 3.0))
    for key, name in (("train_loss", "train"), ("val_loss", "dev")):
        if series[key]:
            left.plot(*zip(*series[key]), marker=".", label=name)
    left.set_xlabel("epoch"), left.set_ylabel("loss"), left.legend(frameon=False), left.grid(alpha=0.3)
    scores = [(key, name) for key, name in (("val_macro_f1", "macro-F1"), ("val_ccc", "mean CCC")) if series[key]]
    for (key, name), color in zip(scores, ("tab:green", "tab:purple")):
        right.plot(*zip(*series[key]), marker=".", color=color, label=name)
    if best_epoch is not None:
        right.axvline(best_epoch, color="grey", linestyle=":", label=f"kept (epoch {best_epoch})")
    if best_epoch is not None or len(scores) > 1:
        right.legend(frameon=False)
    right.set_xlabel("epoch"), right.set_ylabel("dev " + " / ".join(name for _, name in scores)), right.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def layer_weights_figure(model: DMHA) -> str:
    plt = _plt()
    weights = model.layer_sum.weights.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(weights) + 1.5), 2.6))
    ax.bar(range(len(weights)), weights, color="tab:purple")
    ax.axhline(1 / len(weights), color="grey", linestyle=":", label="uniform (initial)")
    ax.set_xlabel("speech encoder layer (0 = input embeddings)"), ax.set_ylabel("weight")
    ax.set_xticks(range(len(weights)))
    ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    return _png(fig)


def _sqrt_norm(values: np.ndarray):
    """Square-root colour scale: attention is peaky, and a linear scale hides everything but the peaks."""
    from matplotlib.colors import PowerNorm

    return PowerNorm(0.5, vmin=0.0, vmax=max(float(values.max()), 1e-12))


def attention_figure(att: dict, title: str) -> str:
    """Per-head first-layer maps (dashed line: speech | text; square-root colour scale) and the
    pooling weights below them."""
    plt = _plt()
    first, pooling, t1 = att["first"], att["pooling"], int(att["speech_frames"])
    heads = first.shape[0]
    if first.ndim == 3:  # standard MHA: (H, T, T), rows = contextual representations, columns = inputs
        cols = min(heads, 4)
        rows = -(-heads // cols)
        fig = plt.figure(figsize=(3.2 * cols, 3.1 * rows + 1.7))
        grid = fig.add_gridspec(rows + 1, cols, height_ratios=[3] * rows + [1.2])
        for h in range(heads):
            ax = fig.add_subplot(grid[h // cols, h % cols])
            ax.imshow(first[h], aspect="auto", cmap="viridis", interpolation="nearest", norm=_sqrt_norm(first[h]))
            ax.axvline(t1 - 0.5, color="white", linestyle="--", linewidth=1)
            ax.axhline(t1 - 0.5, color="white", linestyle="--", linewidth=0.6, alpha=0.6)
            ax.set_title(f"head {h}", fontsize=9)
            ax.set_xlabel("attended: speech frames | text tokens", fontsize=7)
            ax.set_ylabel("output position", fontsize=7)
            ax.tick_params(labelsize=6)
        ax = fig.add_subplot(grid[rows, :])
        ax.plot(pooling, color="tab:red")
        ax.axvline(t1 - 0.5, color="black", linestyle="--", linewidth=1)
        ax.set_xlim(-0.5, len(pooling) - 0.5)
        ax.set_ylabel("pooling w'", fontsize=8)
        ax.set_xlabel("first-layer output position (speech | text)", fontsize=8)
    else:  # sub-vector MHA: (H, T) weights over time per head, pooling over the H head vectors
        fig = plt.figure(figsize=(10, 1.0 + 0.7 * heads + 1.6))
        grid = fig.add_gridspec(2, 2, width_ratios=[5, 1], height_ratios=[max(heads, 2), 2])
        ax = fig.add_subplot(grid[:, 0])
        image = ax.imshow(first, aspect="auto", cmap="viridis", interpolation="nearest")  # near-uniform: linear, auto range
        ax.axvline(t1 - 0.5, color="white", linestyle="--", linewidth=1)
        ax.set_yticks(range(heads), [f"head {h}" for h in range(heads)])
        ax.set_xlabel("input position: speech frames | text tokens")
        fig.colorbar(image, ax=ax, fraction=0.03)
        ax = fig.add_subplot(grid[:, 1])
        ax.barh(range(heads), pooling, color="tab:red")
        ax.invert_yaxis()
        ax.set_yticks(range(heads), [f"{h}" for h in range(heads)])
        ax.set_xlabel("pooling w'")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def modality_figure(shares: dict[str, float], positions: dict[str, float], counts: dict[str, int]) -> str:
    """Stacked speech/text bars per class; the black tick is the speech share of the positions
    (what uniform attention would give), so a bar left of its tick means text gets more than its share."""
    plt = _plt()
    labels = list(shares)
    speech = np.array([shares[label] for label in labels])
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(labels) + 1.3))
    ax.barh(labels, speech, color="tab:blue", label="speech frames")
    ax.barh(labels, 1 - speech, left=speech, color="tab:orange", label="text tokens")
    ax.scatter([positions[label] for label in labels], labels, marker="|", s=300, color="black", zorder=3,
               label="share of positions")
    for y, (value, label) in enumerate(zip(speech, labels)):
        ax.text(0.01, y, f"{value:.3f}  (positions {positions[label]:.3f}, n={counts[label]})", va="center",
                color="white", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of first-layer attention mass (mean over heads and positions)")
    ax.legend(ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False, fontsize=8)
    fig.tight_layout()
    return _png(fig)


# --- attention over a split -------------------------------------------------------------------

def speech_share(att: dict) -> tuple[float, float]:
    """Share of the first layer's attention mass on speech frames for one unpadded item, and the
    share of its positions that are speech frames (what uniform attention would give)."""
    first, t1 = att["first"], int(att["speech_frames"])
    if first.ndim == 3:  # (H, T, T): mean over heads and output positions
        return float(first[:, :, :t1].sum(-1).mean()), t1 / first.shape[-1]
    return float(first[:, :t1].sum(-1).mean()), t1 / first.shape[-1]  # (H, T)


@torch.inference_mode()
def attention_by_item(model: DMHA, refs: Sequence[FeatureRef], wanted: set[int], batch_size: int = 8
                      ) -> tuple[list[tuple[float, float]], dict[int, dict]]:
    """Speech share of every item, and the full unpadded attention of the `wanted` items."""
    model.eval()
    loader = feature_loader(refs, batch_size=batch_size)
    order = iter(loader.batch_sampler.order())  # item index of each row, batch after batch
    shares, kept = [None] * len(refs), {}  # shares: (attention share, position share) per item
    for batch in loader:
        rows = [next(order) for _ in range(len(batch["speech"]))]
        short = batch["speech"].shape[2] + batch["text"].shape[1] <= max_attention_positions()
        for sub, index in ([(batch, rows)] if short else [(_row(batch, i), [r]) for i, r in enumerate(rows)]):
            try:
                out = model(sub["speech"], sub["speech_mask"], sub["text"], sub["text_mask"], return_attention=True)
            except AttentionTooLong:  # an item too long for its weights: no share, no map
                continue
            for i, item in enumerate(index):
                t1, t2 = int(sub["speech_mask"][i].sum()), int(sub["text_mask"][i].sum())
                att = unpad_attention(out.attention, i, t1, t2, sub["speech_mask"].shape[1])
                shares[item] = speech_share(att)
                if item in wanted:
                    kept[item] = att
    return shares, kept


def _row(batch: dict, i: int) -> dict:
    """Item i of a padded batch, trimmed to its own length."""
    t1, t2 = int(batch["speech_mask"][i].sum()), int(batch["text_mask"][i].sum())
    return {"speech": batch["speech"][i:i + 1, :, :t1], "speech_mask": batch["speech_mask"][i:i + 1, :t1],
            "text": batch["text"][i:i + 1, :t2], "text_mask": batch["text_mask"][i:i + 1, :t2]}


def pick_examples(targets: Sequence[int], preds: Sequence[int], confidence: np.ndarray, n: int) -> list[int]:
    """The most confident correct prediction of each class in turn (different classes first), up to n."""
    chosen = []
    by_class: dict[int, list[int]] = {}
    for i in np.argsort(-confidence, kind="stable"):
        if preds[i] == targets[i]:
            by_class.setdefault(int(targets[i]), []).append(int(i))
    for k in sorted(by_class):
        if len(chosen) < n:
            chosen.append(by_class[k][0])
    return chosen or list(range(min(n, len(targets))))


# --- the page ---------------------------------------------------------------------------------

def _img(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child{text-align:left}img{max-width:100%;display:block;margin:.5em 0}
.note{color:#666;font-size:.9em}
"""


def write_report(path: Path, result: dict, members: Sequence[Member], scored, targets: Sequence[int],
                 preds: np.ndarray, examples: int = 3, attributes=None) -> None:
    """Build report.html for an evaluation (`result` is the metrics.json content; `attributes`: the
    AttributeScores of an attribute model, for its scatter plots)."""
    labels = result["labels"] if "labels" in result else members[0].bundle.labels
    category = "macro_f1" in result
    parts = [f"<h1>dmha evaluation: {html.escape(Path(str(result['model'])).name)} on {html.escape(result['split'])}</h1>"]
    if category:
        rows = [["each clip alone (what `predict` gives a file)" if "grouped" in result else "",
                 result["macro_f1"], result["accuracy"], result["uar"], result["n"], len(result["skipped"])]]
        if "grouped" in result:
            g = result["grouped"]
            rows.append(["grouped by speaker (transductive: the test speaker's other unlabelled recordings)",
                         g["macro_f1"], g["accuracy"], g["uar"], g["n"], len(result["skipped"])])
        parts += [_table(["scored", "macro-F1", "accuracy", "UAR", "items", "skipped"], rows)]
        if "per_corpus" in result:
            parts += ["<h3>Each corpus, on its own labels</h3>",
                      _table(["corpus", "macro-F1", "accuracy", "UAR", "items"],
                             [[c, r["macro_f1"], r["accuracy"], r["uar"], r["n"]] for c, r in result["per_corpus"].items()])]
        parts += [f"<p class=note>{html.escape(note)}</p>" for note in result.get("notes", [])]
        parts += [f"<p class=note>Decision in effect: prior correction <b>{html.escape(str(result['decision']['prior']))}</b>, "
                  f"per-class thresholds <b>{'on' if result['decision']['thresholds'] else 'off'}</b>.</p>",
                  "<h3>Macro-F1 of each decision rule</h3>",
                  _table(["decision", "macro-F1"], list(result["decisions_macro_f1"].items()))]
    if "attributes" in result:
        parts += [f"<h2>Emotional attributes (mean CCC {result['mean_ccc']:.4f})</h2>",
                  _table(["attribute", "CCC", "Pearson r", "RMSE", "items"],
                         [[name, r["ccc"], r["pearson"], r["rmse"], r["n"]] for name, r in result["attributes"].items()])]
        if attributes is not None:
            for k, attribute in enumerate(attributes.attributes):
                buffer = io.BytesIO()
                plot_attribute(attributes.pred[:, k], attributes.ref[:, k], attribute.name,
                               (attribute.low, attribute.high), buffer)
                parts.append(_img(base64.b64encode(buffer.getvalue()).decode("ascii"), f"{attribute.name} scatter"))
    if "members" in result and category:
        parts += ["<h3>Ensemble members (hard voting; ties go to the first listed)</h3>",
                  _table(["member", "macro-F1 (own decision)", "dev macro-F1 at training"],
                         [[name, m["macro_f1"], m["dev_macro_f1"] if m["dev_macro_f1"] is not None else "-"]
                          for name, m in result["members"].items()])]
    if category and result.get("reliability"):
        temperature = members[0].bundle.model.temperature
        parts += ["<h2>Calibration</h2>",
                  f"<p class=note>Expected calibration error (15 bins) {result['ece']:.4f}, Brier score "
                  f"{result['brier']:.4f}; probabilities are softmax(logits / {temperature:.3f})"
                  + (" (calibration.json)" if members[0].bundle.calibration else " (not calibrated)") + ".</p>",
                  _img(reliability_figure(result["reliability"], result["ece"], temperature), "reliability diagram")]
    if category:
        cm = np.asarray(result["confusion"])
        parts += ["<h2>Confusion matrix (rows: true class, normalised)</h2>",
                  _img(confusion_figure(cm, labels, f"macro-F1 {result['macro_f1']:.3f}, n={result['n']}"), "confusion"),
                  "<h2>Per-class precision, recall and F1</h2>", _img(per_class_figure(result["per_class"]), "per-class")]

    for member in members:
        suffix = f" — {html.escape(member.name)}" if len(members) > 1 else ""
        log_path = training_log(member.bundle.directory) if member.bundle.directory else None
        parts.append(f"<h2>Training curves{suffix}</h2>")
        if log_path is not None:
            parts.append(_img(curves_figure(read_training_log(log_path), member.bundle.meta.get("best_epoch")),
                              "training curves"))
        else:
            parts.append("<p class=note>No training log found (training_log.csv in the model directory).</p>")
        parts += [f"<h2>Learned speech layer weights{suffix}</h2>",
                  _img(layer_weights_figure(member.bundle.model), "layer weights")]

    # Attention: the first member (the best on dev for an ensemble) on this split.
    lead, refs = members[0], scored.member_refs[0]
    if refs:
        confidence = lead.rule.probabilities(scored.member_probs[0]).max(axis=1)
        chosen = pick_examples(targets, preds, confidence, examples)
        shares, kept = attention_by_item(lead.bundle.model, refs, set(chosen))
        kind = lead.bundle.config.model.attention
        parts.append(f"<h2>Attention{' of ' + html.escape(lead.name) if len(members) > 1 else ''} "
                     f"({'standard' if kind == 'standard' else 'sub-vector'} MHA)</h2>")
        parts.append("<p class=note>First attention layer per head; the dashed line separates speech frames "
                     "(left/top) from text tokens (right/bottom). Below: the attention-pooling weights.</p>")
        for i in [i for i in chosen if i in kept]:
            item = scored.items[i]
            said = f", predicted {labels[int(preds[i])]}" if category else ""
            title = f"{Path(str(item.path)).name}: true {labels[targets[i]]}{said} — “{(item.transcript or '')[:80]}”"
            parts += [f"<h3>{html.escape(title)}</h3>", _img(attention_figure(kept[i], title), "attention map")]
        per_class = {label: [s for s, t in zip(shares, targets) if labels[t] == label and s is not None]
                     for label in labels}
        present = [label for label, v in per_class.items() if v]
        attention_share = {label: float(np.mean([a for a, _ in per_class[label]])) for label in present}
        position_share = {label: float(np.mean([p for _, p in per_class[label]])) for label in present}
        parts += ["<h2>Attention mass on speech vs text, by true class</h2>",
                  "<p class=note>The black tick marks the share of positions that are speech frames, i.e. "
                  "what uniform attention would give; a bar ending left of it means text tokens get more "
                  "attention than their number.</p>",
                  _img(modality_figure(attention_share, position_share,
                                       {label: len(per_class[label]) for label in present}), "modality")]
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>dmha report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>")
    atomic_write_text(path, page)
