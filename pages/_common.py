"""What every page shares: the run store, the selected run, cached run views, friendly errors.

Streamlit glue only; the logic lives in `nes` (RunView, jobs, viz). Not a page itself (the app
routes its pages explicitly with `st.navigation`).
"""
from __future__ import annotations

import os
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import streamlit as st

from nes import viz
from nes.artifacts import ArtifactError
from nes.demo import DEMO_RUN, install_demo
from nes.jobs import launch_ready, reap
from nes.runview import RunView
from nes.store import Store, StoreError

POLL_SECONDS = 2.0  # how often live panels re-read the store


def route_through_app() -> None:
    """Make every visit go through explorer_app.py's st.navigation.

    Streamlit still treats a `pages/` folder next to the entry script as an old-style (v1)
    multipage app until the first script run calls st.navigation, so the first visit of a server
    on a deep link (/ensemble) would run that page alone, without the sidebar, run picker or URL
    state. Clearing the flag and rerunning sends that first visit through the entry script. Pages
    call this first; once the entry script ran in this session it does nothing (so it never drops
    a button click by rerunning)."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory and "run_id" not in st.session_state:  # the entry script never ran
        PagesManager.uses_pages_directory = False
        st.rerun()


def store() -> Store:
    """One store connection per browser session (SQLite connections are not shared across sessions)."""
    home = os.environ.get("NES_HOME", "runs")
    s = st.session_state.get("_store")
    if s is None or st.session_state.get("_store_home") != home:
        s = Store()
        st.session_state["_store"], st.session_state["_store_home"] = s, home
        _install_demo_once(str(s.home))
    return s


@st.cache_resource(show_spinner=False)
def _install_demo_once(home: str) -> str | None:
    """Copy the bundled demo into this store the first time the app sees it."""
    s = Store(home)
    try:
        return install_demo(s)
    finally:
        s.close()


def select_run() -> str | None:
    """Sidebar run picker; the choice lives in the URL (?run=NAME) so a link reproduces the view."""
    s = store()
    runs = s.runs()
    if not runs:
        st.sidebar.info("No runs yet: start one on the **Search** page, or rebuild the demo with "
                        "`python -m nes demo --rebuild`.")
        return None
    names = [r["name"] for r in runs]
    wanted = st.query_params.get("run")
    if wanted is not None and wanted not in names:
        st.warning(f"There is no run **{wanted}** in {s.home}. Showing "
                   f"**{DEMO_RUN if DEMO_RUN in names else names[0]}** instead; pick another run in the sidebar.")
        wanted = None
    default = wanted or st.session_state.get("run") or (DEMO_RUN if DEMO_RUN in names else names[-1])
    if default not in names:
        default = names[0]
    name = st.sidebar.selectbox("Run", names, index=names.index(default), key="run_picker",
                                help="Runs in the store (NES_HOME). The bundled demo is copied in on first start.")
    st.session_state["run"] = name
    st.query_params["run"] = name
    return s.get_run(name)


def run_view(run_id: str) -> RunView:
    """A cached RunView, rebuilt when the run's search or hypernetworks change on disk."""
    return _run_view(run_id, _stamp(run_id))


def _stamp(run_id: str) -> tuple:
    d = Path(run_id)
    files = [d / "search" / "arch.safetensors", d / "hypernet" / "edges" / "hypernet.safetensors",
             d / "hypernet" / "js" / "hypernet.safetensors"]
    return tuple(f.stat().st_mtime if f.exists() else 0.0 for f in files)


@st.cache_resource(show_spinner=False, max_entries=16)
def _run_view(run_id: str, stamp: tuple) -> RunView:
    return RunView(run_id)


def selected_run() -> str:
    """The run picked in the sidebar; without one, the page says so and stops."""
    run_id = st.session_state.get("run_id")
    if not run_id:
        st.info("Pick a run in the sidebar (the bundled demo is copied in on first start).")
        st.stop()
    return run_id


def load_view(run_id: str) -> RunView:
    """The run's view with its search and hypernetworks loaded; a broken run stops the page with
    a message that says what is wrong (the other pages and runs keep working)."""
    with friendly("load this run"):
        return run_view(run_id).validate()
    st.stop()


@contextmanager
def friendly(what: str) -> Iterator[None]:
    """Show a failure as a message (with the detail in an expander), never as a raw traceback."""
    try:
        yield
    except (ArtifactError, StoreError, ValueError, OSError) as e:
        st.error(f"Could not {what}: {e}")
        with st.expander("Details"):
            st.code(traceback.format_exc())
    except Exception as e:  # an unexpected bug: still no raw traceback on the page
        st.error(f"Something went wrong while trying to {what} ({type(e).__name__}). "
                 "The details below help when reporting it.")
        with st.expander("Details"):
            st.code(traceback.format_exc())


def teach(title: str, body: str) -> None:
    """A short teaching explanation, folded by default."""
    with st.expander(title, icon=":material/school:"):
        st.markdown(body)


def refresh_jobs() -> None:
    """Mark dead workers and start jobs that became ready (cheap; no training in this process)."""
    s = store()
    reap(s)
    launch_ready(s)


def jobs_table(run_id: str, kinds: tuple[str, ...] | None = None, limit: int = 12) -> list:
    """Progress bars for this run's jobs (newest first); failures show their message."""
    s = store()
    jobs = [j for j in s.jobs(run_id) if kinds is None or j.kind in kinds][::-1][:limit]
    if not jobs:
        st.caption("No jobs for this run yet.")
    for j in jobs:
        name = j.config.get("name") or j.config.get("regularizer") or ""
        label = f"#{j.id} {j.kind} {name} — {j.status}"
        if j.status == "running":
            st.progress(min(1.0, j.progress), text=f"{label} ({j.step}/{j.total or '?'} steps)")
        elif j.status == "failed":
            st.error(f"{label}: {(j.error or '').splitlines()[0] if j.error else 'no message'}")
            if j.error and "\n" in j.error:
                with st.expander(f"Details of job #{j.id}"):
                    st.code(j.error)
        else:
            st.caption(label)
    return jobs


def running_curve(run_id: str, kind: str, title: str, limit: int = 4) -> None:
    """This run's `kind` jobs as progress bars, plus the live accuracy curves of the running one."""
    jobs = jobs_table(run_id, (kind,), limit=limit)
    running = [j for j in jobs if j.status == "running"]
    if running:
        m = store().metrics(running[0].id)
        series = {n: [(r["step"], r["value"]) for r in m if r["name"] == n] for n in ("train_acc", "val_acc")}
        st.plotly_chart(viz.metric_curves(series, title, "step", "accuracy"), key=f"live_{kind}")


def active_jobs(run_id: str, kinds: tuple[str, ...] | None = None) -> list:
    return [j for j in store().jobs(run_id) if j.status in ("queued", "running") and (kinds is None or j.kind in kinds)]


def live(panel, kinds: tuple[str, ...] | None = None) -> None:
    """Render `panel` in a fragment that re-reads the store every POLL_SECONDS while this run has
    queued or running jobs; when the last one ends, the whole page reruns once (fresh figures)."""
    run_id = st.session_state.get("run_id")
    was_active = bool(active_jobs(run_id, kinds)) if run_id else False

    def tick() -> None:
        if was_active:
            refresh_jobs()
        panel()
        if was_active and not active_jobs(run_id, kinds):
            st.rerun(scope="app")

    st.fragment(tick, run_every=POLL_SECONDS if was_active else None)()
