"""Every figure the documentation cites from a benchmark equals the committed JSON it links to.

A cited figure is a Markdown link whose text is the number and whose target is a committed result
file with the JSON path of the value after `#`, e.g. `[0.793](benchmarks/results/ravdess_cv/cv.json#summary.macro_f1.mean)`.
The number must equal the value rounded to the printed digits, so the README cannot drift from what was
measured. The committed results must also name no folder of the machine they ran on."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PRETRAINED = ROOT / "src" / "dmha" / "pretrained"
# the README links benchmarks/results/...; the docs site links ../results/... (docs/results is a symlink to it);
# a bundled model's card links benchmarks/results/... and its own calibration.json
LINK = re.compile(r"\[(?P<text>[^\]\[]+)\]\((?P<target>(?:[^)\s#]*results/[^)\s#]+|calibration)\.json)#(?P<key>[^)\s]+)\)")
NUMBER = re.compile(r"^(?P<sign>[+\-−]?)(?P<digits>\d+(?:,\d{3})*(?:\.(?P<decimals>\d+))?)(?P<unit>\s*(?:%|×|x|s|ms|MB|GB)?)$")
MACHINE_PATH = re.compile(r"(^|[\s\"'=])(/(?:work|home|root|tmp|Users|mnt|var|opt)/|[A-Za-z]:\\\\)")


def documents() -> list[Path]:
    """The Markdown files that may cite figures: the README, the docs site, the benchmarks' notes, the bundled
    models' cards."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "benchmarks").glob("*.md")),
            *sorted(PRETRAINED.glob("*/MODEL_CARD.md"))]


def citations() -> list[tuple[Path, str, Path, str]]:
    """(document, printed text, result file, JSON path) of every cited figure."""
    found = []
    for doc in documents():
        for match in LINK.finditer(doc.read_text(encoding="utf-8")):
            found.append((doc, match["text"], (doc.parent / match["target"]).resolve(), match["key"]))
    return found


def lookup(data, key: str):
    """data[a][b][0]... for the dotted path 'a.b.0' (a list index is a number)."""
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def printed_value(text: str) -> tuple[float, int, bool]:
    """The number a cited text shows, its decimals, and whether it is a percentage."""
    match = NUMBER.match(text.strip())
    assert match, f"cited figure {text!r} is not a plain number (optionally signed, with a unit)"
    value = float(match["digits"].replace(",", "")) * (-1 if match["sign"] in "-−" and match["sign"] else 1)
    return value, len(match["decimals"] or ""), match["unit"].strip() == "%"


def test_printed_values_parse():
    assert printed_value("0.793") == (0.793, 3, False)
    assert printed_value("−0.029") == (-0.029, 3, False) and printed_value("+0.083") == (0.083, 3, False)
    assert printed_value("12.2×") == (12.2, 1, False) and printed_value("95.4 %") == (95.4, 1, True)
    assert printed_value("1,821") == (1821.0, 0, False)
    with pytest.raises(AssertionError):
        printed_value("about 0.8")
    assert lookup({"a": {"b": [1, {"c": 2}]}}, "a.b.1.c") == 2


def test_the_checker_catches_a_figure_that_drifted(tmp_path):
    """The rule itself: a figure equal to the JSON to the printed digits passes, another does not."""
    assert _matches("0.793", 0.79349) and _matches("0.79", 0.79349) and _matches("+0.083", 0.0834)
    assert not _matches("0.794", 0.79349) and not _matches("0.793", 0.7936) and not _matches("-0.083", 0.083)
    assert _matches("95.4 %", 0.9541) and _matches("12.2×", 12.24)


def _matches(text: str, value: float) -> bool:
    """The printed number is the value rounded to the digits it shows (a percentage: the value × 100)."""
    shown, decimals, percent = printed_value(text)
    return abs((value * 100 if percent else value) - shown) <= 0.5 * 10 ** -decimals + 1e-9


def test_every_cited_figure_equals_its_committed_json():
    cited = citations()
    assert cited, "the README cites no figure from benchmarks/results (see this module's docstring)"
    wrong = []
    for doc, text, path, key in cited:
        where = f"{doc.relative_to(ROOT)}: [{text}]({path.relative_to(ROOT)}#{key})"
        assert path.is_file(), f"{where}: the result file does not exist"
        assert RESULTS.resolve() in path.parents or (PRETRAINED.resolve() in path.parents and path.name == "calibration.json"), \
            f"{where}: not a committed benchmark result"
        value = lookup(json.loads(path.read_text(encoding="utf-8")), key)
        assert isinstance(value, (int, float)), f"{where}: {key} is not a number ({value!r})"
        if not _matches(text, float(value)):
            wrong.append(f"{where}: the JSON holds {value}")
    assert not wrong, "figures that differ from their results:\n" + "\n".join(wrong)


def test_cited_results_are_committed_not_ignored():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot ask git what is ignored")
    paths = sorted({str(path.relative_to(ROOT)) for _, _, path, _ in citations()})
    ignored = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert ignored == [], f"cited results that .gitignore keeps out of the repository: {ignored}"


def test_committed_results_name_no_machine_folder():
    files = sorted([*RESULTS.glob("*/*.json"), *RESULTS.glob("bundled_cv/*/*.json")])
    assert files, "no committed benchmark results under benchmarks/results/<benchmark>/"
    for path in files:
        def walk(node, where):
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, f"{where}.{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{where}.{i}")
            elif isinstance(node, str):
                assert not MACHINE_PATH.search(node), f"{path.relative_to(ROOT)}{where}: a machine path: {node!r}"
        walk(json.loads(path.read_text(encoding="utf-8")), "")


def test_make_bench_can_run_twice():
    """`dmha cv` refuses a folder that holds another cv (config, folds, manifest) or fewer seeds, so in
    `make bench` every cv writes its own folder, once: a second `make bench` then only resumes."""
    recipe = (ROOT / "Makefile").read_text(encoding="utf-8").split("\nbench:", 1)[1].split("\n\n", 1)[0]
    outs = [m.group(1) for m in re.finditer(r"\$\(DMHA\) cv .*?--out (\S+)", recipe)]
    assert len(outs) >= 3, recipe
    assert len(outs) == len(set(outs)), f"a cv folder is written by two lines of make bench: {outs}"
