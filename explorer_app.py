"""NES Explorer — Streamlit entry point (`streamlit run explorer_app.py`).

For now this page shows the library's version, the compute device and how to start a run from the
command line; the λ explorer pages come with the app issue.
"""
import streamlit as st

import nes
from nes.runtime import configure_threads, device_label, resolve_device

st.set_page_config(page_title="NES Explorer", layout="wide")
configure_threads()
st.title("NES Explorer")
st.caption("Differentiable neural ensemble search with diversity control")
col1, col2 = st.columns(2)
col1.metric("Library version", nes.__version__)
col2.metric("Device", device_label(resolve_device()))
st.markdown(
    """
A **DARTS search** finds a base cell architecture α\\*. A hypernetwork α(λ) then maps a diversity
parameter λ to architectures that move away from α\\*, and the members sampled at several λ are
retrained into an ensemble.

Try the pipeline from a terminal:

```bash
python -m nes search  --preset smoke --run runs/demo
python -m nes retrain --run runs/demo --genotype star --name m0
python -m nes evaluate --run runs/demo
```
"""
)
