"""The app's state: the run store of this browser session, the selected run, cached run views,
the jobs of a run.

Streamlit glue only; the logic lives in `nes` (RunView, jobs, actions). Not a page itself (the app
routes its pages explicitly with `st.navigation`); the shared widgets are in `pages/_widgets.py`.
"""
from __future__ import annotations

import os

import streamlit as st

from nes.explorer import archmap, mapclick, urlstate
from nes.explorer.demo import DEMO_RUN, install_demo
from nes.explorer.runview import RunView
from nes.layout import RunDir
from nes.runs.jobs import launch_ready, reap
from nes.runs.store import Store


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
    choice = urlstate.read_run(st.query_params, names, st.session_state.get("run"), DEMO_RUN)
    if choice.warning:
        st.warning(choice.warning)
    if st.session_state.get("_show_run") in names:  # a page asked for this run (`show_run`)
        choice = urlstate.RunChoice(st.session_state.pop("_show_run"))
        st.session_state.pop("run_picker", None)  # the picker starts again, at `choice`
    name = st.sidebar.selectbox("Run", names, index=names.index(choice.name), key="run_picker",
                                help="Runs in the store (NES_HOME). The bundled demo is copied in on first start.")
    st.session_state["run"] = name
    urlstate.apply(st.query_params, urlstate.run_fixes(name))
    return s.get_run(name)


def show_run(name: str) -> None:
    """Make run `name` the selected one from the next script run on (the sidebar picker's value
    can only be set before the picker is drawn; pages call this, then st.rerun())."""
    st.session_state["_show_run"] = name


def run_view(run_id: str) -> RunView:
    """A cached RunView, rebuilt when the run's search or hypernetworks change on disk."""
    return _run_view(run_id, RunDir(run_id).stamp())


@st.cache_resource(show_spinner=False, max_entries=16)
def _run_view(run_id: str, stamp: tuple) -> RunView:
    return RunView(run_id)


def arch_map(run_id: str) -> archmap.ArchMap:
    """The run's architecture map (~1 s to build), rebuilt only when α*, a hypernetwork, a
    member's metrics or a baseline change on disk: a slider move only moves the marker."""
    return _arch_map(run_id, archmap.map_stamp(run_id))


@st.cache_resource(show_spinner=False, max_entries=8)
def _arch_map(run_id: str, stamp: tuple) -> archmap.ArchMap:
    return archmap.build_map(run_id, view=run_view(run_id))


def map_trust(run_id: str) -> mapclick.Trust:
    """The run's one-shot scorer and its rank agreement on the retrained members (~1 s), kept
    until the run's search or members change: a click then costs one estimate (~0.15 s)."""
    return _map_trust(run_id, archmap.map_stamp(run_id))


@st.cache_resource(show_spinner=False, max_entries=4)
def _map_trust(run_id: str, stamp: tuple) -> mapclick.Trust:
    return mapclick.trust(run_id, arch_map(run_id))


def selected_run() -> str:
    """The run picked in the sidebar; without one, the page says so and stops."""
    run_id = st.session_state.get("run_id")
    if not run_id:
        st.info("Pick a run in the sidebar (the bundled demo is copied in on first start).")
        st.stop()
    return run_id


def refresh_jobs() -> None:
    """Mark dead workers and start jobs that became ready (cheap; no training in this process)."""
    s = store()
    reap(s)
    launch_ready(s)


def job_states(run_id: str) -> tuple[tuple[int, str], ...]:
    """(id, status) of every job of the run: a live page compares it with what it drew."""
    return tuple((j.id, j.status) for j in store().jobs(run_id))


def active_jobs(run_id: str, kinds: tuple[str, ...] | None = None) -> list:
    return [j for j in store().jobs(run_id) if j.status in ("queued", "running") and (kinds is None or j.kind in kinds)]
