"""Fixtures several test files share: a fresh run store, and one with a finished smoke search.

Plain helpers (the CLI as a subprocess, polling, smoke members) are in helpers.py."""
from __future__ import annotations

import pytest

from helpers import SMOKE, why


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh run store (NES_HOME) that lets two workers run at once."""
    monkeypatch.setenv("NES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NES_MAX_WORKERS", "2")
    monkeypatch.delenv("NES_TEST_WRITE_DELAY", raising=False)
    return tmp_path / "home"


@pytest.fixture
def app_home(home, monkeypatch):
    """The store the app tests open: fresh, one worker at a time, the checkout's bundled demo (copied
    in on the first visit), classroom mode off."""
    monkeypatch.setenv("NES_MAX_WORKERS", "1")
    monkeypatch.delenv("NES_DEMO_DIR", raising=False)
    monkeypatch.delenv("NES_READONLY", raising=False)
    return home


@pytest.fixture
def searched(home):
    """A store whose run `base` has a finished smoke search (run by a real worker)."""
    from nes.runs.jobs import submit, wait
    from nes.runs.store import Store

    store = Store()
    s = submit(store, "base", "search", SMOKE)
    job, = wait(store, [s], poll=0.3)
    assert job.status == "done", why(job)
    return store
