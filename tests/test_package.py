"""The installed package (pyproject.toml): `import nes`, `python -m nes` and the `nes` command work from
any folder, not only inside the checkout.

Each check runs a fresh interpreter in a temporary folder outside the checkout with PYTHONPATH unset,
so only the installation can make `nes` importable. Skipped where the package is not installed
(`pip install -e .`); CI (.ci/run) installs it, so there these checks run.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIST = "nes-explorer"  # [project] name in pyproject.toml

try:
    importlib.metadata.distribution(DIST)
except importlib.metadata.PackageNotFoundError:
    pytest.skip(f"the {DIST} distribution is not installed: run `pip install -e .` in {ROOT}",
                allow_module_level=True)


@pytest.fixture
def outside(tmp_path) -> Path:
    """A working folder outside the checkout (pytest's tmp_path), checked to be outside."""
    assert ROOT not in tmp_path.resolve().parents, f"tmp_path {tmp_path} lies inside the checkout {ROOT}"
    return tmp_path


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment without PYTHONPATH, with a private run store and no progress bars."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(NES_HOME=str(tmp_path / "home"), NES_NO_PROGRESS="1", NES_THREADS="1")
    return env


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=clean_env(cwd), capture_output=True, text=True, timeout=300)


def console_script(name: str) -> str | None:
    """The installed console script: next to this interpreter's scripts first, then on PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        for candidate in (Path(folder) / name, Path(folder) / f"{name}.exe"):
            if candidate.is_file():
                return str(candidate)
    return shutil.which(name)


def test_import_nes_from_outside_the_checkout(outside):
    r = run([sys.executable, "-c", "import nes; print(nes.__file__)"], outside)
    assert r.returncode == 0, f"`import nes` failed in {outside} without PYTHONPATH:\n{r.stderr[-2000:]}"
    imported = Path(r.stdout.strip().splitlines()[-1]).resolve()
    assert imported == ROOT / "nes" / "__init__.py", (
        f"`import nes` outside the checkout loaded {imported}, not this checkout's {ROOT / 'nes'}: "
        f"run `pip install -e .` in {ROOT}")


def test_installed_version_is_the_library_version():
    from nes._version import __version__

    installed = importlib.metadata.version(DIST)
    assert installed == __version__, (
        f"installed {DIST} {installed} != nes/_version.py {__version__}: reinstall with `pip install -e .`")


def test_console_command_nes_info(outside):
    script = console_script("nes")
    assert script is not None, f"no `nes` command next to {sys.executable} or on PATH ([project.scripts])"
    r = run([script, "info"], outside)
    assert r.returncode == 0, f"`{script} info` exited {r.returncode}:\n{r.stderr[-2000:]}"
    assert r.stdout.startswith("nes "), f"`nes info` printed no version line: {r.stdout[:300]!r}"


def test_python_m_nes_help(outside):
    r = run([sys.executable, "-m", "nes", "--help"], outside)
    assert r.returncode == 0, f"`python -m nes --help` exited {r.returncode} in {outside}:\n{r.stderr[-2000:]}"
    assert "search" in r.stdout, f"`python -m nes --help` lists no `search` command:\n{r.stdout[:1000]}"


@pytest.mark.parametrize("folder", ["pages", "tests", "benchmarks"])
def test_only_the_library_is_packaged(outside, folder):
    r = run([sys.executable, "-c", f"import {folder}"], outside)
    assert r.returncode != 0, f"`import {folder}` works outside the checkout: the package exposes {folder}/"


def requirement_lines(name: str) -> list[str]:
    """A requirements file's requirements: no comments, no `-r` includes."""
    lines = [ln.split("#", 1)[0].strip() for ln in (ROOT / name).read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("-r")]


@pytest.mark.parametrize("extra, files", [("ray", ["requirements-ray.txt"]),
                                          ("dev", ["requirements-dev.txt", "requirements-ray.txt"])])
def test_extras_match_requirement_files(extra, files):
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = sorted(project["optional-dependencies"][extra])
    expected = sorted({req for f in files for req in requirement_lines(f)})
    assert listed == expected, f"pyproject.toml extra [{extra}] {listed} != {' + '.join(files)} {expected}"
