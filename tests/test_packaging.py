"""Every package dmha's code imports is declared in pyproject.toml: by the core, or by the extra of the
feature that needs it (an import the metadata does not name breaks `pip install dmha` for someone)."""
from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import dmha

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    for stop in "<>=!~[; ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")


def declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs if not r.startswith("dmha[")}
    return core, extras


def imported_modules(folder: Path) -> dict[str, set[str]]:
    """Top-level module → the files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(folder)))
    return found


def test_every_imported_distribution_is_declared():
    core, extras = declared()
    owners = packages_distributions()
    missing = []
    for module, files in sorted(imported_modules(Path(dmha.__file__).parent).items()):
        if module in sys.stdlib_module_names or module in ("dmha", "__future__"):
            continue
        dists = {d.lower().replace("_", "-") for d in owners.get(module, [])}
        assert dists, f"{module} (imported by {sorted(files)}) is not installed in this environment"
        if not dists & (core | extras):
            missing.append(f"{module} from {sorted(dists)}, imported by {sorted(files)[:3]}")
    assert not missing, "imported but not declared in pyproject.toml:\n" + "\n".join(missing)


def test_the_core_declares_what_the_core_imports_at_module_level():
    """Core modules (everything but serve/ and export.py) import no extra at module level."""
    core, _ = declared()
    owners = packages_distributions()
    folder = Path(dmha.__file__).parent
    wrong = []
    for path in folder.rglob("*.py"):
        rel = path.relative_to(folder)
        if rel.parts[0] == "serve" or rel.name == "export.py":
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("dmha", "__future__"):
                    continue
                dists = {d.lower().replace("_", "-") for d in owners.get(top, [])}
                if not dists & core:
                    wrong.append(f"{rel}: {name}")
    assert not wrong, "core modules importing an optional package at module level:\n" + "\n".join(wrong)
