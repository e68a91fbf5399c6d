"""What several test files share: the checkout root, the CLI as a subprocess, a fresh run store."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def nes(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m nes ARGS` from this checkout, one torch thread, no progress bars."""
    e = {**os.environ, "NES_NO_PROGRESS": "1", "NES_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "nes", *args], capture_output=True, text=True, env=e,
                          cwd=cwd or ROOT, timeout=600)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh run store (NES_HOME) that lets two workers run at once."""
    monkeypatch.setenv("NES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NES_MAX_WORKERS", "2")
    monkeypatch.delenv("NES_TEST_WRITE_DELAY", raising=False)
    return tmp_path / "home"
