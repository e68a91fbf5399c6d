"""Figures a projector shows (issue 26, item 9): one colour per operation from a colour-blind-safe
palette, legends that explain the cell graph, labels beside their edges, titles that wrap instead
of being cut, and presentation mode (?present=true) through the real app."""
from __future__ import annotations

import json
import math
from pathlib import Path

import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from nes.explorer import present, viz
from nes.explorer.demo import DEMO_DIR
from nes.method.space import OPS, ArchLayout, Genotype

APP = str(Path(__file__).resolve().parents[1] / "explorer_app.py")
STAR = Genotype(reduce=((("sep_conv_3x3", 1),), (("max_pool_3x3", 0),), (("skip_connect", 2),), (("dil_conv_5x5", 3),)))
OTHER = Genotype(reduce=((("sep_conv_3x3", 1),), (("avg_pool_3x3", 0),), (("skip_connect", 1),), (("dil_conv_5x5", 3),)))
OKABE_ITO = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"}


def weighted(genotype: Genotype) -> go.Figure:
    layout = ArchLayout(nodes=4, cell_types=("reduce",))
    alpha, betas = layout.split(layout.genotype_logits(genotype, scale=3.0))["reduce"]
    return viz.cell_figure(genotype, "reduce", viz.edge_weights(alpha, betas, genotype, "reduce"), reference=STAR)


def test_every_operation_has_its_own_colour_that_is_not_the_difference_colour():
    assert set(viz.OP_COLORS) == set(OPS), f"OP_COLORS covers {sorted(viz.OP_COLORS)}, not the {len(OPS)} ops"
    colours = list(viz.OP_COLORS.values())
    assert len(set(colours)) == len(colours), f"two operations share a colour: {viz.OP_COLORS}"
    assert viz.DIFF_COLOR not in colours, f"an operation has the 'differs from α*' colour {viz.DIFF_COLOR}"
    for op, c in viz.OP_COLORS.items():
        assert c in OKABE_ITO or c == "#999999", f"{op}'s colour {c} is not from the Okabe–Ito palette or the mid grey"


def test_the_cell_legend_names_each_operation_once_and_explains_the_marks():
    fig = weighted(OTHER)
    legend = [t.name for t in fig.data if t.showlegend is not False]
    used = {op for _, _, _, op in OTHER.edges()}
    for op in used:
        assert legend.count(viz.OP_SHORT[op]) == 1, f"the legend names {op} {legend.count(viz.OP_SHORT[op])} times"
    assert "differs from α*" in legend, f"the legend does not explain the vermillion halo: {legend}"
    assert "concatenated into c_k" in legend, f"the legend does not explain the dotted lines: {legend}"
    assert "p(input) × p(op)" in fig.layout.legend.title.text, \
        f"the legend does not say what the number in parentheses is: {fig.layout.legend.title.text!r}"
    op_of = {short: op for op, short in viz.OP_SHORT.items()}
    for t in fig.data:
        if t.hoverinfo == "text" and t.mode == "lines":
            assert t.line.color == viz.OP_COLORS[op_of[t.name]], f"a {t.name} edge is not drawn in its operation's colour"


def test_edge_labels_are_legible_and_beside_their_edges():
    fig = weighted(OTHER)
    labels = [a for a in fig.layout.annotations if a.text]
    assert len(labels) == OTHER.num_kept_edges(), f"{len(labels)} edge labels for {OTHER.num_kept_edges()} edges"
    for a in labels:
        assert a.font.size >= 13, f"edge label {a.text!r} is {a.font.size} px, below 13"
        shift = math.hypot(a.xshift or 0, a.yshift or 0)
        assert shift >= 8, f"edge label {a.text!r} sits {shift:.1f} px from its edge: it covers the line"
        assert a.bgcolor is None, f"edge label {a.text!r} has a fixed background {a.bgcolor} (wrong on the dark theme)"


def test_long_titles_wrap_instead_of_being_cut():
    text = "js-target regularizer along the diversity axis"
    wrapped = viz.wrap(text)
    assert wrapped.replace("<br>", " ") == text, f"wrapping changed the words: {wrapped!r}"
    assert all(len(line) <= viz.TITLE_CHARS for line in wrapped.split("<br>")), f"a line is too long: {wrapped!r}"
    heat = viz.js_heatmap([[0.0, 0.1], [0.1, 0.0]], ["a", "b"], title="predictive JS between members",
                          high="they predict differently")
    lines = heat.layout.title.text.count("<br>") + 1
    assert heat.layout.margin.t >= 20 * lines, f"a {lines}-line title in a {heat.layout.margin.t} px top margin"


def test_join_curve_names_members_on_the_axis_not_on_the_points():
    joins = [(f"lam_{i}_{i + 1}0", {"accuracy": 0.9, "nll": 0.3}) for i in range(5)]
    fig = viz.join_curve(joins)
    assert all(t.mode and "text" not in t.mode for t in fig.data), "the join curve still draws names over its points"
    assert fig.layout.xaxis.tickangle not in (None, 0), "long member names on a flat axis run into each other"


def test_scaled_grows_every_font_and_leaves_the_original_alone():
    fig = weighted(OTHER)
    before = fig.to_json()
    big = present.scaled(fig, 1.5)
    assert fig.to_json() == before, "present.scaled changed the figure it was given"
    assert big.layout.font.size == pytest.approx(18), f"base font {big.layout.font.size}, expected 12 × 1.5"
    for a, b in zip(fig.layout.annotations, big.layout.annotations):
        if a.text:
            assert b.font.size == pytest.approx(a.font.size * 1.5), f"label {a.text!r} not scaled: {b.font.size}"
    nodes = [(a, b) for a, b in zip(fig.data, big.data) if a.mode == "markers+text"]
    assert nodes, "no node markers in the cell figure"
    for a, b in nodes:
        assert b.marker.size > a.marker.size, f"the {a.name} markers did not grow with their text"
    assert big.layout.height > fig.layout.height, "the figure did not grow with its fonts"


@pytest.fixture
def home(app_home):
    return app_home


def explore(query: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def cell_fonts(at: AppTest) -> list[float]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return [(s["layout"].get("font") or {}).get("size", 0) for s in specs if (s["layout"].get("meta") or {}).get("cell_type")]


@pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")
def test_presentation_mode_from_a_link_enlarges_figures_and_hides_the_store(home):
    at = explore({"run": "demo", "present": "true"})
    assert at.sidebar.toggle(key=present.KEY).value is True, "?present=true did not turn presentation mode on"
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "Run store" not in captions, f"presentation mode still shows the store path: {captions!r}"
    assert any("stToolbar" in h.proto.body for h in at.get("html")), "presentation mode did not hide the toolbar"
    fonts = cell_fonts(at)
    assert fonts and all(f >= 18 for f in fonts), f"cell figures' fonts in presentation mode: {fonts}"
    plain = explore({"run": "demo"})
    assert plain.sidebar.toggle(key=present.KEY).value is False, "presentation mode is on without the link asking"
    assert "Run store" in " ".join(c.value for c in plain.sidebar.caption), "the store path is gone outside it"
    assert all(f < 18 for f in cell_fonts(plain)), f"cell figures are enlarged outside presentation mode"


def test_the_distance_note_gives_both_measures_of_each_pair():
    from nes.explorer.notes import distance_note
    note = distance_note([0.0, 0.5, 1.0], [0.0, 0.3, 0.43], [0.0, 0.2, 0.321])
    for part in ("d = 0.5: 0.300 vs 0.200", "d = 1: 0.430 vs 0.321"):
        assert part in note, f"the note does not give {part!r}: {note!r}"
    assert distance_note([0.5, 1.0], [0.3, 0.43], [0.0, 0.2]) is None, "a note without an α* row to compare"


@pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")
def test_explore_says_why_distance_and_heatmap_differ_beside_the_heatmap(home):
    at = explore({"run": "demo"})
    shown = " ".join(c.value for c in at.caption)
    assert "Distance to α\\* vs heatmap JS" in shown, "the Explore page does not explain the two distances unfolded"
