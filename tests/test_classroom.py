"""Job controls and classroom mode (issue 26, items 7 and 8), on the real app through AppTest, a real
SQLite store and real jobs: cancel and resume clicked on a page change the job in the store; a job
that really failed in its worker shows its error and log tail; with NES_READONLY=1 no page offers a
control that writes, every write action refuses and the store stays as it was."""
from __future__ import annotations

import inspect
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from helpers import ROOT, why
from nes.explorer import actions
from nes.explorer.actions import (cancel_job, export_bundle, resume_job, start_baseline, start_hypernet, start_search,
                                  start_levers, start_shift, submit_members)
from nes.explorer.demo import DEMO_DIR, install_demo
from nes.explorer.jobcontrols import ReadOnlyError, controls, log_tail, readonly
from nes.explorer.runview import RunView
from nes.layout import RunDir
from nes.runs.jobs import cancel, submit, wait
from nes.runs.store import Store

APP = str(ROOT / "explorer_app.py")
PAGES = ("pages/explore.py", "pages/ensemble.py", "pages/search.py", "pages/hypernetwork.py", "pages/compare.py",
         "pages/export.py")
NOT_WRITING = {"Export these members"}  # the buttons classroom mode keeps: this one only opens the Export page
READ_ONLY_HELPERS = {"member_options", "member_choice"}  # the functions of actions.py that write nothing
needs_demo = pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")


@pytest.fixture
def home(app_home):
    """The app tests' store (conftest's app_home)."""
    return app_home


def app(page: str | None = None) -> AppTest:
    """The app on its first page (which copies the demo into the store), then on `page`."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def parked_job(store: Store, name: str) -> int:
    """A real retrain job on the demo run that stays queued until the test acts on it: it is for the
    Ray executor and no Ray driver runs here (the local launcher starts local jobs only)."""
    return submit(store, "demo", "retrain", {"preset": "smoke", "name": name}, executor="ray")


def keys(at: AppTest) -> list[str]:
    return [b.key for b in at.button]


def sidebar_notice(at: AppTest) -> str:
    return " ".join(i.value for i in at.sidebar.info)


# -- job controls on the pages ---------------------------------------------------------------------------
@needs_demo
def test_cancel_then_resume_from_the_page_change_a_real_job(home):
    at = app()
    store = Store()
    job = parked_job(store, "parked")
    at.switch_page("pages/ensemble.py").run()
    assert f"resume_{job}" not in keys(at), f"queued job #{job} offers Resume"
    assert f"cancel_{job}" in keys(at), f"queued job #{job} offers no Cancel: {keys(at)}"
    at.button(key=f"cancel_{job}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert store.job(job).status == "cancelled", f"job #{job} is {store.job(job).status} after its Cancel click"
    assert any(f"Job #{job}: cancelled" in s.value for s in at.success), \
        f"the page does not say job #{job} was cancelled: {[s.value for s in at.success]}"
    assert f"cancel_{job}" not in keys(at), f"cancelled job #{job} still offers Cancel"
    at.button(key=f"resume_{job}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert store.job(job).status == "queued", f"job #{job} is {store.job(job).status} after its Resume click"
    assert f"cancel_{job}" in keys(at), f"job #{job}, queued again, offers no Cancel"
    cancel(store, job)


@needs_demo
def test_a_failed_job_shows_its_error_and_log_tail_and_resumes(home):
    """An evaluate job naming a member the demo lacks fails in its real worker; the page shows the
    error, the whole error and the end of the job's own log file, and Resume starts a second attempt."""
    at = app()
    store = Store()
    job = submit(store, "demo", "evaluate", {"members": ["no_such_member"]})
    failed, = wait(store, [job], poll=0.3)
    assert failed.status == "failed", why(failed)
    with open(RunDir(failed.run_id).job_log(job), "a") as log:  # what the worker printed last
        log.write("the last line of the worker log\n")
    at.switch_page("pages/ensemble.py").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [e.value for e in at.error if e.value.startswith(f"#{job} evaluate")]
    assert shown, f"job #{job}'s error is not shown: {[e.value for e in at.error]}"
    assert "no_such_member" in shown[0], f"job #{job}'s error does not name the missing member: {shown[0]!r}"
    folded = [x for x in at.expander if x.label == f"Error and log of job #{job}"]
    assert len(folded) == 1, f"no expander folds job #{job}'s error: {[x.label for x in at.expander]}"
    codes = [c.value for c in folded[0].code]
    assert any(c.strip() == failed.error.strip() for c in codes), \
        f"the expander of job #{job} lacks its whole error: {codes}"
    assert codes[-1].endswith("the last line of the worker log"), f"the expander shows no log tail: {codes[-1:]}"
    assert f"cancel_{job}" not in keys(at), f"failed job #{job} offers Cancel"
    assert f"resume_{job}" in keys(at), f"failed job #{job} offers no Resume: {keys(at)}"
    at.button(key=f"resume_{job}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    again, = wait(store, [job], poll=0.3)
    assert again.attempts == 2, f"job #{job} ran {again.attempts} attempt(s) after Resume, expected 2"


def test_controls_follow_the_job_state(home):
    store = Store()
    job = store.job(submit(store, "r", "retrain", {"preset": "smoke", "name": "m"}, executor="ray"))
    want = {"queued": ("cancel",), "running": ("cancel",), "failed": ("resume",), "cancelled": ("resume",),
            "done": ()}
    for status, offered in want.items():
        assert controls(replace(job, status=status), read_only=False) == offered, f"a {status} job's controls"
        assert controls(replace(job, status=status), read_only=True) == (), f"a {status} job in classroom mode"
    asked = replace(job, status="running", cancel_requested=True)
    assert controls(asked, read_only=False) == (), "a running job whose cancel was requested offers Cancel again"
    damaged = replace(job, status="failed", damaged="config: not JSON")
    assert controls(damaged, read_only=False) == (), "a damaged job (it would fail again) offers Resume"
    cancel(store, job.id)


def test_log_tail_reads_a_bounded_end_in_whole_lines(tmp_path):
    log = tmp_path / "job_1.log"
    assert log_tail(log) == "", "a missing log gives something"
    lines = [f"line {i} " + "x" * 50 for i in range(3000)]  # about 180 KB
    log.write_text("\n".join(lines) + "\n")
    tail = log_tail(log, max_bytes=4096, max_lines=10_000)
    assert len(tail.encode()) <= 4096, f"read {len(tail.encode())} bytes, allowed 4096"
    assert tail.splitlines()[-1] == lines[-1], "the tail does not end with the log's last line"
    assert set(tail.splitlines()) <= set(lines), "the tail begins inside a line"
    assert log_tail(log, max_lines=3).splitlines() == lines[-3:], "max_lines=3 keeps other lines than the last 3"
    log.write_bytes(b"aaa\nbbb\n")
    assert log_tail(log, max_bytes=4) == "bbb", "a read that begins at a line start loses that line"
    assert log_tail(log, max_bytes=5) == "bbb", "a read that begins inside a line shows part of it"
    assert log_tail(log, max_bytes=3) == "", "a line cut by the bound shows in part"
    log.write_bytes(b"ok\n\xff\xfe not utf-8\n")
    assert log_tail(log).endswith("\ufffd\ufffd not utf-8"), "bytes that are not UTF-8 do not show as U+FFFD"


def test_log_tail_opens_no_fifo_and_follows_no_link(tmp_path):
    fifo = tmp_path / "job_2.log"
    os.mkfifo(fifo)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(log_tail(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "log_tail blocks on a FIFO named like a log"
    assert out == [""], f"a FIFO gives {out}"
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the room\n")
    link = tmp_path / "job_3.log"
    link.symlink_to(secret)
    assert log_tail(link) == "", "log_tail follows a symbolic link out of the run"


# -- classroom mode --------------------------------------------------------------------------------------
def test_readonly_is_off_by_default_and_a_typo_turns_it_on(monkeypatch):
    cases = {None: False, "": False, "0": False, "false": False, "No": False, " off ": False,
             "1": True, "true": True, "yes": True, "ture": True}
    for value, on in cases.items():
        if value is None:
            monkeypatch.delenv("NES_READONLY", raising=False)
        else:
            monkeypatch.setenv("NES_READONLY", value)
        assert readonly() is on, f"NES_READONLY={value!r}: readonly() is {readonly()}, expected {on}"


@needs_demo
def test_by_default_pages_offer_their_controls(home):
    """The walk of the next test can see write controls: without NES_READONLY they are there."""
    at = app()
    store = Store()
    queued, stopped = parked_job(store, "parked"), parked_job(store, "stopped")
    cancel(store, stopped)
    assert "Classroom mode" not in sidebar_notice(at), f"classroom mode is on by default: {sidebar_notice(at)!r}"
    at.switch_page("pages/ensemble.py").run()
    assert f"cancel_{queued}" in keys(at), f"queued job #{queued} offers no Cancel: {keys(at)}"
    assert f"resume_{stopped}" in keys(at), f"cancelled job #{stopped} offers no Resume: {keys(at)}"
    assert "Start training" in [b.label for b in at.button], "the Ensemble page offers no Start training"
    cancel(store, queued)


@needs_demo
def test_classroom_mode_offers_no_control_that_writes(home, monkeypatch):
    monkeypatch.setenv("NES_READONLY", "1")
    at = app()
    store = Store()
    queued, stopped = parked_job(store, "parked"), parked_job(store, "stopped")
    cancel(store, stopped)  # the library and the CLI still act: classroom mode is the app's
    assert "Classroom mode: read-only" in sidebar_notice(at), f"the sidebar does not say so: {sidebar_notice(at)!r}"
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        writing = [b.label for b in at.button if b.label not in NOT_WRITING]
        assert not writing, f"{page} offers controls that write in classroom mode: {writing}"
        if page == "pages/ensemble.py":
            listed = " ".join(c.value for c in at.caption)
            assert f"#{queued} retrain parked — queued" in listed, f"queued job #{queued} is not listed: {listed!r}"
    at.switch_page("pages/explore.py").run()
    assert at.slider, "classroom mode hides the Explore page's diversity slider"
    assert at.get("plotly_chart"), "classroom mode hides the Explore page's figures"
    cancel(store, queued)


@needs_demo
def test_classroom_mode_refuses_every_write_action(home, monkeypatch):
    store = Store()
    run_id = install_demo(store)
    view = RunView(run_id)
    queued, stopped = parked_job(store, "parked"), parked_job(store, "stopped")
    cancel(store, stopped)
    before = [(j.id, j.status, j.attempts) for j in store.jobs()]
    monkeypatch.setenv("NES_READONLY", "1")
    writes = {
        "submit_members": lambda: submit_members(store, run_id, view, "edges", [view.axis_grid("edges")[-1]]),
        "start_search": lambda: start_search(store, "room", "digits", "smoke", {}),
        "start_hypernet": lambda: start_hypernet(store, run_id, "js", "smoke", {}),
        "start_baseline": lambda: start_baseline(store, run_id, view, "deepens", 2),
        "start_shift": lambda: start_shift(store, run_id, view),
        "start_levers": lambda: start_levers(store, run_id, view),
        "cancel_job": lambda: cancel_job(store, queued),
        "resume_job": lambda: resume_job(store, stopped),
        "export_bundle": lambda: export_bundle(run_id, view.member_names()[:2], "room"),
    }
    public = {n for n, f in vars(actions).items() if inspect.isfunction(f) and f.__module__ == actions.__name__}
    unchecked = public - READ_ONLY_HELPERS - set(writes)
    assert not unchecked, f"write actions of actions.py this test does not check: {unchecked}"
    refused = []
    for name, write in writes.items():
        try:
            write()
        except ReadOnlyError as e:
            refused.append(name)
            assert "classroom mode" in str(e), f"{name}'s refusal does not name classroom mode: {e}"
    assert refused == list(writes), f"actions that did not refuse: {[n for n in writes if n not in refused]}"
    assert [(j.id, j.status, j.attempts) for j in store.jobs()] == before, "a refused action changed the jobs"
    assert "room" not in [r["name"] for r in store.runs()], "a refused search registered its run"
    assert not Path(RunDir(run_id).exports, "room").exists(), "a refused export wrote its bundle"
    monkeypatch.delenv("NES_READONLY")
    cancel(store, queued)
