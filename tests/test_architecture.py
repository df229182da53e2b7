"""The house's shape, measured: how far a config travels through the modules in a training, and module size.

Following `config` from `experiment.train`: every call that is handed that Config object, observed in a
real (tiny) training. A *move* is a distinct caller-module → callee-module step of it; a *return* is a
move back up, into a module that imports the one it leaves (issue 29 counted 14 modules, 30 moves and
13 such returns before). Bounds: at most 10 modules, 20 moves, 5 returns; and no module over 450 lines.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import dmha
from conftest import write_tone_corpus

SRC = Path(dmha.__file__).parent


def config_moves(run, start: str = "dmha.experiment") -> list[tuple[str, str]]:
    """Distinct (caller module, callee module) steps, in first-seen order, of calls handed a Config, from the
    first call into `start` that receives one while `run` runs."""
    from dmha.config import Config

    moves: list[tuple[str, str]] = []
    watched: list[object] = []

    def profile(frame, event, arg):
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("dmha."):
            return
        args = frame.f_code.co_varnames[: frame.f_code.co_argcount + frame.f_code.co_kwonlyargcount]
        values = [frame.f_locals.get(a) for a in args]
        if not watched:
            config = next((v for v in values if isinstance(v, Config)), None)
            if config is None or module != start:
                return
            watched.append(config)
            return
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
        # the config or one derived from it (cv gives each run its seed: dataclasses.replace makes a new Config)
        if any(isinstance(v, Config) for v in values) and caller.startswith("dmha.") and caller != module:
            if (caller, module) not in moves:
                moves.append((caller, module))

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return moves


def imports_of(module: str) -> set[str]:
    """The dmha modules a module imports (relative or absolute, anywhere in it)."""
    path = SRC.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("dmha"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dmha"))
    return found


def returns(moves: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Moves into a module that imports the module left (back up the import graph)."""
    return [(a, b) for a, b in moves if a in imports_of(b)]


def package_modules() -> list[str]:
    """Every module of the installed dmha package, by its dotted name."""
    names = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_dmha_import_in_the_package_names_something_that_exists():
    """Each module's dmha imports, relative or absolute, at the top or inside a function (a lazy import runs
    only on its path, so importing the module proves nothing), resolve to a module or a name in one. This
    is the import graph `returns` reads: a wrong resolution here would miscount the moves back up."""
    import importlib
    import importlib.util

    def exists(target: str) -> bool:
        try:
            if importlib.util.find_spec(target) is not None:
                return True
        except ModuleNotFoundError:  # the parent is a module, not a package: `target` names a name in it
            pass
        parent, _, name = target.rpartition(".")
        try:
            return bool(parent) and hasattr(importlib.import_module(parent), name)
        except ImportError:
            return False

    modules = package_modules()
    assert "dmha.experiment" in modules and "dmha.serve.app" in modules and len(modules) > 50
    missing = {m: bad for m in modules if (bad := sorted(t for t in imports_of(m) if not exists(t)))}
    assert not missing, missing
    assert {"dmha.config", "dmha.task"} <= imports_of("dmha.experiment")  # `from .config import ...`
    assert sum(len(imports_of(m)) for m in modules) > 300  # the graph is read, not empty


def test_a_config_travels_a_short_way_through_a_training(tiny_encoders, tmp_path):
    from dmha.config import load
    from dmha.experiment import train

    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=4)
    config = load(None, [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
                         f"features.cache_dir={tmp_path / 'cache'}", "train.max_epochs=1", "train.batch_size=4",
                         "model.hidden_layers=1"])
    moves = config_moves(lambda: train(manifest, tmp_path / "run", config, progress=False))
    modules = {m for move in moves for m in move}
    back = returns(moves)
    print(f"config moves ({len(modules)} modules, {len(moves)} moves, {len(back)} back up):",
          ", ".join(f"{a.removeprefix('dmha.')}→{b.removeprefix('dmha.')}" for a, b in moves))
    assert ("dmha.experiment", "dmha.task") in moves
    assert len(modules) <= 10 and len(moves) <= 20 and len(back) <= 5, (modules, moves, back)


def test_from_cv_the_config_reaches_the_folds_training(tiny_encoders, tmp_path):
    from dmha.config import load
    from dmha.cv import cross_validate

    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=6)
    config = load(None, [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
                         f"features.cache_dir={tmp_path / 'cache'}", "train.max_epochs=1", "train.batch_size=4",
                         "model.hidden_layers=1"])
    moves = config_moves(lambda: cross_validate(manifest, tmp_path / "cv", config, 3, None, [0], progress=False),
                         start="dmha.cv")
    print("from cv:", ", ".join(f"{a.removeprefix('dmha.')}→{b.removeprefix('dmha.')}" for a, b in moves))
    reached = {b for _, b in moves}
    assert {"dmha.jobs", "dmha.experiment", "dmha.task"} <= reached, moves


def test_no_module_is_over_450_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450}
    assert not long, f"modules over 450 lines: {long}"
