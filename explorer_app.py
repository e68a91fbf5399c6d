"""NES Explorer — Streamlit entry point (`streamlit run explorer_app.py`).

Routes the pages in `pages/` with `st.navigation`; the sidebar holds the run picker and the device
badge. The app process only reads the store and samples α(λ) (milliseconds); training runs in
background worker processes (`nes.jobs`), so the app keeps one torch thread.
"""
import streamlit as st

import nes
from nes.runtime import configure_threads, device_label, resolve_device
from pages._common import select_run, store

st.set_page_config(page_title="NES Explorer", page_icon="🧬", layout="wide")
configure_threads(1)  # leave the cores to the workers


@st.cache_resource(show_spinner=False)
def _device() -> str:
    return device_label(resolve_device())


pages = [
    st.Page("pages/explore.py", title="Explore", icon="🔭", default=True, url_path="explore"),
    st.Page("pages/ensemble.py", title="Ensemble", icon="🧩", url_path="ensemble"),
    st.Page("pages/search.py", title="Search", icon="🔎", url_path="search"),
    st.Page("pages/hypernetwork.py", title="Hypernetwork", icon="🎚️", url_path="hypernetwork"),
]
nav = st.navigation(pages)

st.sidebar.title("NES Explorer")
st.sidebar.caption(f"Differentiable neural ensemble search with diversity control · nes {nes.__version__}")
device = _device()
kind = device.split(" ")[0]
st.sidebar.markdown(f":{'green' if kind in ('CUDA', 'MPS') else 'gray'}-badge[{kind}] {device}")
try:
    st.session_state["run_id"] = select_run()
except Exception as e:  # a broken store: say what is wrong, keep the page alive
    st.session_state["run_id"] = None
    st.error(f"The run store could not be opened: {e}")
st.sidebar.caption(f"Run store: `{store().home}`" if "_store" in st.session_state else "")
nav.run()
