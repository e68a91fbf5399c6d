"""NES Explorer — Streamlit entry point (`streamlit run explorer_app.py`).

Routes the pages in `pages/` with `st.navigation`; the sidebar holds the run picker, the
presentation-mode toggle (`nes.explorer.present`), the device badge and, when `NES_READONLY` is
set, the classroom-mode notice (`nes.explorer.jobcontrols.readonly`).
The app process only reads the store and samples α(λ) (milliseconds); training runs in background
worker processes (`nes.runs.jobs`), so the app keeps one torch thread.
"""
import streamlit as st

import nes
from nes.explorer import present
from nes.explorer.jobcontrols import readonly
from nes.runtime import available_cores, configure_threads, device_label, resolve_device
from pages._state import select_run, store

st.set_page_config(page_title="NES Explorer", page_icon=":material/hub:", layout="wide")
configure_threads(1)  # leave the cores to the workers


@st.cache_resource(show_spinner=False)
def _device() -> tuple[str, str]:
    """(badge, detail) of the device the workers train on (the app itself keeps one thread)."""
    dev = resolve_device()
    if dev.type == "cpu":
        n = available_cores()
        return "CPU", f"{n} core{'' if n == 1 else 's'} for training"
    label = device_label(dev)
    return label.split(" ")[0], label


pages = [
    st.Page("pages/lesson.py", title="Lesson", icon=":material/school:", url_path="lesson"),
    st.Page("pages/explore.py", title="Explore", icon=":material/explore:", default=True, url_path="explore"),
    st.Page("pages/ensemble.py", title="Ensemble", icon=":material/hub:", url_path="ensemble"),
    st.Page("pages/image.py", title="Your image", icon=":material/image:", url_path="image"),
    st.Page("pages/search.py", title="Search", icon=":material/search:", url_path="search"),
    st.Page("pages/hypernetwork.py", title="Hypernetwork", icon=":material/tune:", url_path="hypernetwork"),
    st.Page("pages/compare.py", title="Compare", icon=":material/leaderboard:", url_path="compare"),
    st.Page("pages/export.py", title="Export", icon=":material/download:", url_path="export"),
]
nav = st.navigation(pages)

st.sidebar.title("NES Explorer")
st.sidebar.caption(f"Differentiable neural ensemble search with diversity control · nes {nes.__version__}")
presenting = st.sidebar.toggle("Presentation mode", key=present.KEY, bind="query-params",
                               help="For a projector: larger text and figures, no store path or developer menu. "
                                    "The link keeps it (?present=true).")
if presenting:
    st.html(present.PAGE_CSS)
kind, detail = _device()
st.sidebar.markdown(f":{'green' if kind in ('CUDA', 'MPS') else 'gray'}-badge[{kind}] {detail}")
if readonly():  # classroom mode: the pages offer no control that writes, the actions refuse
    st.sidebar.info("**Classroom mode: read-only.** Every run can be explored; nothing can be queued, cancelled, "
                    "resumed or exported here (`NES_READONLY` is set).", icon=":material/school:")
try:
    st.session_state["run_id"] = select_run()
except Exception as e:  # a broken store: say what is wrong, keep the page alive
    st.session_state["run_id"] = None
    st.error(f"The run store could not be opened: {e}")
if not presenting:
    st.sidebar.caption(f"Run store: `{store().home}`" if "_store" in st.session_state else "")
nav.run()
