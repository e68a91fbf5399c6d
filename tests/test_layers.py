"""The layers of `nes/` import one way: core ← method ← runs ← export ← explorer ← cli.

Every import is checked, the ones inside functions included, by parsing the sources (nothing is
imported to find them). Also: no streamlit in `nes/`, subpackage `__init__`s import nothing,
and the public API of `import nes` resolves lazily.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

NES = ROOT / "nes"
LAYERS = ("core", "method", "runs", "export", "explorer", "cli")


def layer_of(module: str) -> str | None:
    """'nes.method.train' → 'method'; core modules ('nes', 'nes.config', …) → 'core'; non-nes → None."""
    parts = module.split(".")
    if parts[0] != "nes":
        return None
    if module == "nes.__main__":  # `python -m nes`: the command line's entry point
        return "cli"
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in `source`, wherever it sits in the file."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import x` may import submodule x: count it as nes.<pkg>.x
            names = [f"{target}.{a.name}" for a in node.names] if node.module is None else [target]
            out += [(node.lineno, t) for t in names]
    return out


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    mine = LAYERS.index(layer_of(module))
    bad = []
    for line, target in imports_of(source, module, is_package):
        layer = layer_of(target)
        if target.split(".")[0] == "streamlit":
            bad.append(f"{module}:{line} imports streamlit (the library must run without the app)")
        elif layer is not None and LAYERS.index(layer) > mine:
            bad.append(f"{module}:{line} ({layer_of(module)}) imports {target} ({layer}), a higher layer")
    return bad


SOURCES = sorted(NES.rglob("*.py"))


def test_every_module_is_checked():
    names = {module_name(p) for p in SOURCES}
    assert {"nes.layout", "nes.method.bilevel", "nes.runs.jobs", "nes.export.write", "nes.explorer.runview",
            "nes.cli.main"} <= names
    assert {layer_of(n) for n in names} == set(LAYERS)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(NES)))
def test_imports_point_down(path):
    assert violations(path.read_text(), module_name(path), path.name == "__init__.py") == []


def test_the_checker_catches_upward_and_hidden_imports():
    assert violations("from ..runs.store import Store\n", "nes.method.train")
    assert violations("def f():\n    from ..explorer import viz\n", "nes.export.write")  # inside a function
    assert violations("import nes.cli.main\n", "nes.layout")
    assert violations("from .method import space\n", "nes.layout")
    assert violations("import streamlit as st\n", "nes.explorer.viz")
    assert not violations("from ..method.space import Genotype\nfrom .store import Store\n", "nes.runs.jobs")
    assert not violations("from . import bundle, jobs\n", "nes.cli.main")


@pytest.mark.parametrize("pkg", [p for p in SOURCES if p.name == "__init__.py" and p.parent != NES],
                         ids=lambda p: p.parent.name)
def test_subpackage_inits_import_nothing(pkg):
    """Importing one module of a layer must not drag in the rest of it."""
    assert imports_of(pkg.read_text(), module_name(pkg), True) == []


def test_public_api_is_lazy_and_complete():
    code = ("import sys, nes; assert 'torch' not in sys.modules, 'import nes loaded torch'; "
            "[getattr(nes, n) for n in nes.__all__]; "
            "from nes import Genotype, load_ensemble, from_preset, SearchConfig; "
            "print(Genotype.__module__, load_ensemble.__module__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["nes.method.space", "nes.export.bundle"]
    with pytest.raises(AttributeError):
        import nes

        nes.no_such_name


SIZED = SOURCES + sorted((ROOT / "pages").glob("*.py")) + [ROOT / "explorer_app.py"]


@pytest.mark.parametrize("path", SIZED, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path):
    """A module reads in one sitting (≤ 450 lines), a function on one screen (≤ 60)."""
    source = path.read_text()
    lines = len(source.splitlines())
    assert lines <= 450, f"{path.relative_to(ROOT)} has {lines} lines: split it by job"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            assert n <= 60, f"{path.relative_to(ROOT)}:{node.lineno} {node.name} is {n} lines: split it"


def test_tests_import_helpers_not_conftest():
    """conftest.py holds fixtures; what tests import lives in tests/helpers.py."""
    for path in sorted((ROOT / "tests").glob("*.py")):
        for line, target in imports_of(path.read_text(), "tests." + path.stem):
            assert target != "conftest", f"tests/{path.name}:{line} imports from conftest: use helpers"
