"""The Streamlit entry page renders (AppTest, no server): version and device, no exception."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

import nes

APP = str(Path(__file__).resolve().parents[1] / "explorer_app.py")


def test_entry_page_shows_version_and_device():
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Library version"] == nes.__version__
    assert metrics["Device"].split(" ")[0] in ("CPU", "CUDA", "MPS")
