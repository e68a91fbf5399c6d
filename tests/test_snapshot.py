"""Self-contained HTML snapshots of a figure view (issue 26, item 2): one file that opens offline
with the figure, the run's name and the view's state, readable back; and the app offers one beside
its figures. The app through AppTest on the bundled demo."""
import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from helpers import ROOT
from nes.explorer.demo import DEMO_DIR
from nes.explorer.snapshot import query_string, read_state, snapshot_html, snapshot_name

FIG = go.Figure(go.Scatter(x=[0, 1], y=[2, 3], name="curve-xyz"))


def test_a_snapshot_holds_the_figure_and_plotly_itself():
    doc = snapshot_html(FIG, "demo", "explore", {"reg": "js", "div": "0.5"})
    assert "curve-xyz" in doc, "the figure's data is not in the snapshot"
    assert "<script src=\"http" not in doc, "the snapshot loads plotly.js from the network"
    assert len(doc) > 1_000_000, f"plotly.js does not look inlined ({len(doc)} characters)"


def test_the_state_round_trips_through_the_snapshot():
    state = {"reg": "js", "div": "0.5", "sel": ["0.0", "1.0"]}
    back = read_state(snapshot_html(FIG, "demo", "explore", state))
    assert back["state"] == state, f"state {state} came back as {back['state']}"
    assert (back["run"], back["page"]) == ("demo", "explore"), f"run/page came back as {back}"
    assert "explore?" in snapshot_html(FIG, "demo", "explore", state), "the view's link is not shown"
    assert query_string({"run": "demo", **state}) == "div=0.5&reg=js&run=demo&sel=0.0&sel=1.0", "query not sorted/expanded"


def test_text_from_the_run_cannot_break_out_of_the_page():
    run = "</script><script>alert(1)</script>"
    doc = snapshot_html(FIG, run, "explore", {"x": "</script>"})
    assert "<script>alert(1)" not in doc, "a run name injected a script"
    assert read_state(doc)["run"] == run, "the escaped run name did not read back"


def test_snapshot_names_are_safe_file_names():
    name = snapshot_name("../my run", "compare", "acc/cost")
    assert name.endswith(".html") and "/" not in name and " " not in name, f"unsafe file name {name!r}"


def test_a_document_without_state_is_refused():
    with pytest.raises(ValueError):
        read_state("<html></html>")


@pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")
def test_the_explore_page_offers_a_snapshot_beside_its_figures(app_home):
    at = AppTest.from_file(str(ROOT / "explorer_app.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    buttons = at.get("download_button")
    keys = {b.proto.id for b in buttons}
    assert len(buttons) >= 4, f"{len(buttons)} snapshot buttons on the Explore page (map, cells, heatmaps)"
    assert len(keys) == len(buttons), "two snapshot buttons share an id"


@pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")
def test_every_figure_of_the_other_pages_has_its_snapshot(app_home):
    """On the bundled demo (no job running, so no live curve of a running job is drawn), each figure
    of these pages has an HTML snapshot button."""
    at = AppTest.from_file(str(ROOT / "explorer_app.py"), default_timeout=180)
    at.run()
    for page in ("ensemble", "compare", "search", "hypernetwork", "export"):
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        figures = len(at.get("plotly_chart"))
        snapshots = [b for b in at.get("download_button") if b.proto.label == "HTML snapshot"]
        assert figures, f"the {page} page shows no figure on the demo"
        assert len(snapshots) == figures, f"the {page} page has {len(snapshots)} snapshot buttons for {figures} figures"
