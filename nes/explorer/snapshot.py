"""Self-contained HTML snapshots of a figure view, for slides and for rooms without the app.

One file holds the figure with plotly.js inlined (it opens offline, in any browser, for as long as
the file exists: hosted sharing services close), the run's name, the page, the view's state (the
URL query of the app, so a reader with the app can open the same view) and the version that drew
it. The state is also embedded as JSON (`<script type="application/json" id="nes-state">`) so a
snapshot can be read back by a program.
"""
from __future__ import annotations

import html
import json
import re
from typing import Any, Mapping
from urllib.parse import urlencode

import plotly.graph_objects as go

from .._version import __version__

STATE_ID = "nes-state"


def query_string(state: Mapping[str, Any]) -> str:
    """The app's URL query of STATE ({key: value or list of values}), keys sorted: `reg=js&sel=0.0&sel=1.0`."""
    return urlencode(sorted((k, v) for k, v in state.items()), doseq=True)


def snapshot_name(run: str, page: str, key: str) -> str:
    """A file name that says what the snapshot shows: `nes_<run>_<page>_<figure>.html` (safe characters only)."""
    safe = [re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "x" for s in (run, page, key)]
    return "nes_" + "_".join(safe) + ".html"


def snapshot_html(fig: go.Figure, run: str, page: str, state: Mapping[str, Any] | None = None) -> str:
    """FIG as one HTML document with plotly.js inlined, headed by the run, the page, the view's
    state (as the app's URL query) and the version; every text from the run is escaped."""
    state = {k: v for k, v in (state or {}).items()}
    query = query_string({"run": run, **state})
    plot = fig.to_html(full_html=False, include_plotlyjs=True, config={"displaylogo": False})
    payload = json.dumps({"run": run, "page": page, "state": state, "version": __version__}, sort_keys=True)
    payload = payload.replace("<", "\\u003c")  # no "</script>" inside the JSON can end its tag
    title = f"NES Explorer — {page} — run {run}"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head>\n<body style=\"font-family:sans-serif\">\n"
        f"<h2>{html.escape(title)}</h2>\n"
        f"<p>View: <code>{html.escape(page)}?{html.escape(query)}</code> (open it in the app to explore further) · "
        f"nes {html.escape(__version__)}</p>\n{plot}\n"
        f"<script type=\"application/json\" id=\"{STATE_ID}\">{payload}</script>\n</body></html>\n")


def read_state(document: str) -> dict[str, Any]:
    """The embedded {run, page, state, version} of a snapshot (ValueError when it has none)."""
    m = re.search(rf'<script type="application/json" id="{STATE_ID}">(.*?)</script>', document, re.S)
    if m is None:
        raise ValueError("not an NES Explorer snapshot: no embedded state")
    return json.loads(m.group(1))
