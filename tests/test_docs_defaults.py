"""What the prose says a config key defaults to is what `dmha.config` defaults it to.

The generated reference page (docs/reference/configuration.md) cannot drift, but the guides, the paper
notes and the config READMEs state defaults in their own words. This test scans them for such
statements and checks each against the dataclass defaults of `dmha.config.Config` (or, for a statement
about the paper's recipe, against `configs/paper/*.toml`):

- a table with a `key` and a `default` column (`| \\`train.lr\\` / \\`train.weight_decay\\` | 5e-4 / 0.01 |`);
- `` `KEY`, default `V` ``, `` `KEY` (default: V) ``, `` `KEY` defaults to `V` ``, `` `KEY` (`V` by default) ``;
- `` `KEY=V` (the default) ``, `` `KEY=V`, dmha's default ... ``, `` by default (`KEY=V`) ``;
  `` `KEY=V`, the paper's recipe `` against the paper configs;
- `projection to D = N`, `the default head (D = N)` against `model.dim`;
- a sentence that says `dmha's default(s)` and names a setting in words (feature standardisation,
  speaker normalisation, early-stopping patience N, weight decay N, learning rate N, ...);
- a TOML comment under configs/ that says `dmha's default` (the line's value) or `dmha's default is X`.

A statement about an earlier default ("the previous default", "the defaults of the time") is not a
claim about today's and is left alone.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from dmha.config import Config, load

ROOT = Path(__file__).resolve().parents[1]
# Written from the code (tests/test_docs.py checks they are current), or historical by design.
SKIP = {ROOT / "docs" / "reference" / "configuration.md", ROOT / "docs" / "reference" / "cli.md"}
# How a guide writes a default that is not a literal: the empty cache_dir means $DMHA_HOME/features.
SPELLED = {("features.cache_dir", "$DMHA_HOME/features")}
PAPER_CONFIGS = sorted((ROOT / "configs" / "paper").glob("*.toml"))


def _defaults(section=None, prefix: str = "") -> dict[str, object]:
    """Every dotted key of Config → its default."""
    section = Config() if section is None else section
    out = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_defaults(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


DEFAULTS = _defaults()
_LEAVES: dict[str, list[str]] = {}
for _key in DEFAULTS:
    _LEAVES.setdefault(_key.rpartition(".")[2], []).append(_key)


def resolve(name: str, section: str = "") -> str | None:
    """A dotted key as written, or a bare field name that only one section has (or `section`'s)."""
    name = name.strip()
    if name in DEFAULTS:
        return name
    if section and f"{section}.{name}" in DEFAULTS:
        return f"{section}.{name}"
    keys = _LEAVES.get(name, [])
    return keys[0] if len(keys) == 1 else None


def literal(text: str) -> object:
    """A value as the docs write it: a TOML literal, else the bare string (backticks and quotes off)."""
    text = text.strip().strip("`").strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip("\"'")


def same(claimed: object, actual: object) -> bool:
    if isinstance(actual, bool) or isinstance(claimed, bool):
        return str(claimed).lower() == str(actual).lower()
    if isinstance(actual, (int, float)) and isinstance(claimed, (int, float)):
        return math.isclose(float(claimed), float(actual), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(actual, list) and isinstance(claimed, list):
        return len(actual) == len(claimed) and all(same(c, a) for c, a in zip(claimed, actual))
    return claimed == actual or str(claimed) == str(actual)


@dataclass(frozen=True)
class Claim:
    """`where` says that `key` is `value` by default (whose="dmha") or in the paper's recipe (whose="paper")."""

    where: str
    key: str
    value: object
    whose: str = "dmha"


# --- extraction --------------------------------------------------------------------------------------
NO_STOP = r"(?:(?!\.\s|;|\|)[^\n])"  # inside one sentence and one table cell
KEY = r"`(?P<key>[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)`"
VALUE = r"(?P<value>`[^`]+`|-?\d[\d.]*(?:e-?\d+)?)"
KEY_THEN_DEFAULT = re.compile(KEY + NO_STOP + r"{0,30}?\bdefaults?\b(?:\s+(?:is|to))?:?\s*" + VALUE)
KEY_VALUE_BY_DEFAULT = re.compile(KEY + r"\s*\(\s*(?P<value>`[^`]+`)\s+by default")
ASSIGN = r"`(?:--set\s+)?(?P<key>[a-z_][a-z0-9_.]*)\s*=\s*(?P<value>[^`]+)`"
ASSIGN_THEN = re.compile(ASSIGN + r"(?P<gap>" + NO_STOP + r"{0,40}?)"
                         r"(?P<whose>(?:\(|,|:|\s)\s*(?:now\s+)?the default\b|\(default\)|dmha's default"
                         r"|the paper's (?:default )?(?:recipe|value|choice|setting)|as in the paper)")
BY_DEFAULT_ASSIGN = re.compile(r"\bby default\s*\(\s*" + ASSIGN)
DIM = re.compile(r"(?:project(?:ed|ion|s)?\s+(?:\w+\s+){0,3}to|the default head \()\s*D\s*=\s*(?P<value>\d+)")
EARLIER = re.compile(r"\b(previous|earlier|former|old|other|then|of the time|no longer|not)\b")
# Settings named in words, for sentences that say "dmha's default(s)": (pattern, key, value or None =
# the number the pattern captures).
ALIASES = [
    (r"feature standardi[sz]ation|standardi[sz]ed features", "model.feature_norm", "standardize"),
    (r"speaker normali[sz]ation", "model.feature_norm", "speaker"),
    (r"early[- ]stopping patience (?:of )?(?P<n>\d[\d.e-]*)", "train.early_stop_patience", None),
    (r"weight decay (?:of )?(?P<n>\d[\d.e-]*\d|\d)", "train.weight_decay", None),
    (r"learning rate (?:of )?(?P<n>\d[\d.e-]*\d|\d)", "train.lr", None),
    (r"label smoothing (?:of )?(?P<n>\d[\d.e-]*\d|\d)", "train.label_smoothing", None),
    (r"frame dropout (?:of )?(?P<n>\d[\d.e-]*\d|\d)", "train.frame_dropout", None),
]
DMHA_DEFAULT = re.compile(r"dmha's defaults?\b|\bdmha defaults?\b")
NOT_DMHA_DEFAULT = re.compile(r"\bnot\b" + NO_STOP + r"{0,25}dmha's default")


def _paragraphs(text: str):
    """(first line number, text joined to one line) per paragraph, list item or table row."""
    block, start, fenced = [], 0, False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        starts_item = re.match(r"\s*(?:[-*+]|\d+\.)\s", line) or line.lstrip().startswith("|")
        if fenced or not line.strip() or starts_item:
            if block:
                yield start, " ".join(block)
            block = []
            if fenced or not line.strip():
                continue
        if line.lstrip().startswith("|"):
            yield number, line
            continue
        if not block:
            start = number
        block.append(line.strip())
    if block:
        yield start, " ".join(block)


def _table_claims(text: str, where: str):
    """Rows of any table whose header has a `key` and a `default` column."""
    header = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            lowered = [c.lower() for c in cells]
            header = (lowered.index("key"), lowered.index("default")) if {"key", "default"} <= set(lowered) else ()
            continue
        if not header or set(line.replace("|", "").strip()) <= set("-: "):
            continue
        names = [n.strip().strip("`") for n in cells[header[0]].split(" / ")]
        values = [v.strip() for v in cells[header[1]].split(" / ")]
        if len(names) != len(values):
            continue
        section = ""
        for name, value in zip(names, values):
            key = resolve(name, section)
            if key is None:
                continue
            section = key.rpartition(".")[0]
            yield Claim(f"{where}:{number}", key, literal(value))


def _sentence_claims(paragraph: str, where: str):
    for match in KEY_THEN_DEFAULT.finditer(paragraph):
        key = resolve(match["key"])
        between = paragraph[match.end("key"):match.start("value")]
        if key and not EARLIER.search(between):
            yield Claim(where, key, literal(match["value"]))
    for match in KEY_VALUE_BY_DEFAULT.finditer(paragraph):
        if key := resolve(match["key"]):
            yield Claim(where, key, literal(match["value"]))
    for match in ASSIGN_THEN.finditer(paragraph):
        key = resolve(match["key"])
        if key and not EARLIER.search(match["gap"]):
            whose = "paper" if "paper" in match["whose"] else "dmha"
            yield Claim(where, key, literal(match["value"]), whose)
    for match in BY_DEFAULT_ASSIGN.finditer(paragraph):
        if key := resolve(match["key"]):
            yield Claim(where, key, literal(match["value"]))
    for match in DIM.finditer(paragraph):
        yield Claim(where, "model.dim", int(match["value"]))
    for sentence in re.split(r"(?<=[.;])\s+", paragraph):
        if not DMHA_DEFAULT.search(sentence) or NOT_DMHA_DEFAULT.search(sentence):
            continue
        for pattern, key, value in ALIASES:
            for match in re.finditer(pattern, sentence, re.IGNORECASE):
                yield Claim(where, key, literal(match["n"]) if value is None else value)


def claims_in(text: str, where: str) -> list[Claim]:
    """Every statement of a default in one Markdown text."""
    found = list(_table_claims(text, where))
    for number, paragraph in _paragraphs(text):
        found += _sentence_claims(paragraph, f"{where}:{number}")
    return found


TOML_LINE = re.compile(r"^\s*(?P<name>[a-z_]+)\s*=\s*(?P<value>[^#]+?)\s*#(?P<comment>.*)$")
TOML_SAYS_DEFAULT_IS = re.compile(r"(?:dmha's|the dmha) default is `?(?P<value>[^\s`),;]+)")


def toml_claims(text: str, where: str) -> list[Claim]:
    """Comments on a config line: `# ... dmha's default` (the value set) or `# ... dmha's default is X`."""
    found, section = [], ""
    for number, line in enumerate(text.splitlines(), 1):
        if header := re.match(r"^\s*\[([a-z_.]+)\]", line):
            section = header[1]
            continue
        match = TOML_LINE.match(line)
        if not match:
            continue
        key = f"{section}.{match['name']}" if section else match["name"]
        if key not in DEFAULTS:
            continue
        comment = match["comment"]
        if said := TOML_SAYS_DEFAULT_IS.search(comment):
            found.append(Claim(f"{where}:{number}", key, literal(said["value"])))
        elif re.search(r"\bdmha(?:'s)? default\b", comment) and not NOT_DMHA_DEFAULT.search(comment):
            found.append(Claim(f"{where}:{number}", key, literal(match["value"])))
    return found


def wrong(claim: Claim) -> str | None:
    """Why a claim does not hold, or None."""
    if claim.whose == "paper":
        values = {str(getattr_dotted(config, claim.key)) for config in paper_configs()}
        if all(same(claim.value, getattr_dotted(config, claim.key)) for config in paper_configs()):
            return None
        return f"{claim.where}: says the paper's recipe has {claim.key} = {claim.value!r}; configs/paper/ set {sorted(values)}"
    actual = DEFAULTS[claim.key]
    if same(claim.value, actual) or (claim.key, claim.value) in SPELLED:
        return None
    return f"{claim.where}: says {claim.key} defaults to {claim.value!r}; dmha.config says {actual!r}"


@functools.cache
def paper_configs() -> tuple[Config, ...]:
    return tuple(load(path) for path in PAPER_CONFIGS)


def getattr_dotted(config: Config, key: str):
    node = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _pages() -> list[Path]:
    pages = [p for p in sorted((ROOT / "docs").rglob("*.md")) if "results" not in p.relative_to(ROOT / "docs").parts]
    return [p for p in pages + sorted((ROOT / "configs").rglob("README.md")) + [ROOT / "README.md"] if p not in SKIP]


def all_claims() -> list[Claim]:
    found = []
    for page in _pages():
        found += claims_in(page.read_text(encoding="utf-8"), str(page.relative_to(ROOT)))
    for config in sorted((ROOT / "configs").rglob("*.toml")):
        found += toml_claims(config.read_text(encoding="utf-8"), str(config.relative_to(ROOT)))
    return found


# --- the tests ---------------------------------------------------------------------------------------
def test_every_stated_default_is_the_code_default():
    claims = all_claims()
    assert len(claims) >= 80, f"the scanner found only {len(claims)} statements of a default: is it broken?"
    problems = [p for p in map(wrong, claims) if p]
    assert not problems, "documentation disagrees with dmha.config:\n" + "\n".join(problems)


def test_the_guides_statements_are_among_those_checked():
    """The pages that once drifted are still scanned (a rewrite that the scanner no longer reads fails here)."""
    where = {c.where.rsplit(":", 1)[0] for c in all_claims()}
    for page in ("docs/guide/encoders.md", "docs/paper/design-choices.md", "configs/paper/README.md",
                 "docs/guide/cross-validation.md", "docs/guide/configuration.md"):
        assert page in where, f"{page}: no statement of a default found any more"


# Statements the docs once made, each wrong when it was written; the scanner must flag every one.
DRIFTED = [
    ("docs/guide/encoders.md", "- **Feature normalisation** (`model.feature_norm`, default `standardize`): the "
                               "frozen features are standardised per layer and dimension."),
    ("docs/paper/design-choices.md", "- **Widths.** The paper's encoders are both 1024-wide, so no projection. The "
                                     "defaults are 512 (Whisper\n  base) and 384 (MiniLM), so the text tokens get a "
                                     "linear projection to D = 512."),
    ("configs/paper/README.md", "- **Feature standardisation, early-stopping patience 10, weight decay 0.01**: "
                                "dmha's defaults; the\n  paper does not give them."),
    ("docs/guide/cross-validation.md", "A model with speaker statistics (`model.feature_norm=speaker`, the paper's "
                                       "default recipe) can be\nscored two ways:"),
    ("docs/guide/configuration.md", "| key | default | meaning |\n|---|---|---|\n"
                                    "| `train.lr` / `train.weight_decay` | 5e-3 / 0.01 | AdamW |"),
    ("configs/ravdess.toml", "[model]\ndim = 0  # the speech width (512), no projection (the dmha default is 512)"),
]


@pytest.mark.parametrize("where, text", DRIFTED, ids=[w for w, _ in DRIFTED])
def test_the_scanner_flags_statements_that_drifted(where, text):
    claims = toml_claims(text, where) if where.endswith(".toml") else claims_in(text, where)
    assert claims, f"no statement of a default found in {text!r}"
    assert any(wrong(c) for c in claims), f"{text!r} was wrong, yet passed: {claims}"


@pytest.mark.parametrize("text", [
    "(`model.feature_norm`, default `speaker`)",
    "`train.speaker_stats=all` (the previous default)",
    "(`--set model.feature_norm=standardize` with the other defaults of the time)",
    "so both get a linear projection to D = 128.",
    "- **Early-stopping patience 10, weight decay 0.01**: dmha's defaults; the paper does not give them.",
    "the paper standardises features; not dmha's default (`speaker`).",
])
def test_the_scanner_accepts_true_and_historical_statements(text):
    assert not [p for p in map(wrong, claims_in(text, "x.md")) if p]
