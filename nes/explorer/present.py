"""Presentation mode: the app and its figures sized for a projector in a room.

`?present=true` (the sidebar's "Presentation mode" toggle) makes every page's text 1.25× larger,
hides the store path and Streamlit's developer toolbar and menu, and every figure drawn through
`pages/_widgets.chart` goes through `scaled`: fonts 1.5×, the cell graphs' nodes and the figure's
height with them.

Themes: Streamlit paints a figure's paper in its light or dark theme's background, but its light
theme draws tick labels, legends and annotations in a grey with a 3.7:1 contrast on white, below
what a projector needs (WCAG AA: 4.5:1). `themed` sets every figure text to the theme's body text
colour instead (12.5:1 on white, 18:1 on the dark background). The builders in `viz` use only data
colours legible on both.
"""
from __future__ import annotations

import plotly.graph_objects as go

SCALE = 1.5  # figure fonts: 12 px ticks become 18 px, legible from the back of a classroom
BASE_FONT = 12  # plotly's default font size (and Streamlit's theme's) when a figure sets none
TITLE_FONT = 16
TEXT = {"light": "#31333F", "dark": "#FAFAFA"}  # Streamlit's body text colour on each theme
KEY = "present"  # the URL key and the sidebar toggle's session key

# Page text 1.25× (Streamlit sizes everything in rem) and no toolbar (Deploy, the ⋮ developer menu).
PAGE_CSS = """<style>
html { font-size: 125%; }
[data-testid="stToolbar"], [data-testid="stMainMenu"], [data-testid="stAppDeployButton"] { display: none; }
</style>"""


def themed(fig: go.Figure, theme: str | None) -> go.Figure:
    """`fig` (changed in place, and returned) with every text outside the data in the body text
    colour of Streamlit's `theme` ("light" or "dark"; None is light): the figure's font (which
    titles, legends and annotations without a colour of their own inherit) and every axis's ticks
    and title (Streamlit's theme colours those explicitly)."""
    color = TEXT.get(theme or "light", TEXT["light"])
    text = {"color": color}
    axis = {"tickfont": text, "title": {"font": text}}
    axes = {k: axis for k in fig.layout if k.startswith(("xaxis", "yaxis"))} or {"xaxis": axis, "yaxis": axis}
    fig.update_layout(font=text, **axes)  # one validated update: a few ms per figure on every rerun
    return fig


def styled(fig: go.Figure, theme: str | None, presenting: bool) -> go.Figure:
    """`fig` as a page shows it: `themed` for Streamlit's theme (in place: setting the colours
    twice changes nothing), and in presentation mode `scaled`, a copy (scaling twice would)."""
    return themed(scaled(fig) if presenting else fig, theme)


def _times(size: float | None, default: float, scale: float) -> float:
    return round((size or default) * scale, 1)


def scaled(fig: go.Figure, scale: float = SCALE) -> go.Figure:
    """A copy of `fig` with every font `scale`× (global, title, legend, axes, annotations, trace
    text), the markers that hold text (cell-graph nodes) and the height grown with them;
    `fig` itself is unchanged."""
    out = go.Figure(fig)
    lay = out.layout
    base = lay.font.size or BASE_FONT
    out.update_layout(font_size=_times(base, BASE_FONT, scale), title_font_size=_times(lay.title.font.size, TITLE_FONT, scale),
                      legend_font_size=_times(lay.legend.font.size, base, scale),
                      height=round((lay.height or 450) * (1 + 0.6 * (scale - 1))))
    if lay.margin.t is not None:
        out.update_layout(margin_t=round(lay.margin.t * scale))
    out.update_xaxes(tickfont_size=_times(None, base, scale), title_font_size=_times(None, base, scale))
    out.update_yaxes(tickfont_size=_times(None, base, scale), title_font_size=_times(None, base, scale))
    for a in lay.annotations:
        a.font.size = _times(a.font.size, base, scale)
    for t in out.data:
        if getattr(t, "textfont", None) is not None and t.textfont.size:
            t.textfont.size = _times(t.textfont.size, base, scale)
        if getattr(t, "mode", None) and "text" in t.mode and "markers" in t.mode and isinstance(t.marker.size, (int, float)):
            t.marker.size = round(t.marker.size * scale)
    return out
