"""Figure builders (nes.explorer.viz) and the run view (nes.explorer.runview): invariants, no Streamlit."""
import math

import pytest
import torch

from nes.explorer import viz
from nes.method.space import OPS, ArchLayout, Genotype

STAR = Genotype(reduce=((("sep_conv_3x3", 1),), (("max_pool_3x3", 0),), (("skip_connect", 2),), (("dil_conv_5x5", 3),)))
OTHER = Genotype(reduce=((("sep_conv_3x3", 1),), (("avg_pool_3x3", 0),), (("skip_connect", 1),), (("dil_conv_5x5", 3),)))
BOTH = Genotype(normal=STAR.reduce, reduce=OTHER.reduce)


def _op_traces(fig):
    return [t for t in fig.data if t.mode == "lines" and t.hoverinfo == "text"]


def test_cell_graph_is_the_darts_cell():
    g = viz.cell_graph(STAR, "reduce")
    assert set(g.nodes) == {"c_{k-2}", "c_{k-1}", "0", "1", "2", "3", "c_k"}
    assert g.in_degree("c_k") == 4  # the output concatenates every intermediate node
    ops = [d["op"] for _, _, d in g.edges(data=True) if d["op"] != "concat"]
    assert sorted(ops) == sorted(op for _, _, _, op in STAR.edges())
    with pytest.raises(ValueError, match="no normal cell"):
        viz.cell_graph(STAR, "normal")


def test_cell_figure_labels_weights_and_highlights_differences():
    layout = ArchLayout(nodes=4, cell_types=("reduce",))
    alpha, betas = layout.split(layout.genotype_logits(OTHER, scale=3.0))["reduce"]
    w = viz.edge_weights(alpha, betas, OTHER, "reduce")
    assert set(w) == {(i, inp) for i, node in enumerate(OTHER.reduce) for _, inp in node}
    for weight, probs in w.values():
        assert 0.0 < weight <= 1.0, f"edge weight {weight} outside (0, 1]"
        assert abs(sum(probs.values()) - 1.0) < 1e-5, f"op probabilities sum to {sum(probs.values())}"
        assert set(probs) == set(OPS), f"op probabilities for {sorted(probs)}, not the 7 ops"
    fig = viz.cell_figure(OTHER, "reduce", w, reference=STAR)
    assert len(_op_traces(fig)) == OTHER.num_kept_edges()
    n_diff = OTHER.num_kept_edges() - OTHER.matched_edges(STAR)
    assert fig.layout.meta["edges_differing"] == n_diff == 2
    labels = [a.text for a in fig.layout.annotations if a.text]
    assert sum("≠ α*" in t for t in labels) == n_diff
    for _, _, _, op in OTHER.edges():
        assert any(viz.OP_SHORT[op] in t for t in labels), f"no edge label names {op} ({viz.OP_SHORT[op]})"
    same = viz.cell_figure(STAR, "reduce", reference=STAR)
    assert same.layout.meta["edges_differing"] == 0
    assert same.to_json() != fig.to_json()


def test_both_cell_types_and_positions_are_deterministic():
    a = viz.cell_figure(BOTH, "normal").to_json()
    assert a == viz.cell_figure(BOTH, "normal").to_json()
    assert viz.cell_figure(BOTH, "reduce").layout.meta["cell_type"] == "reduce"


def test_probability_bars_and_alpha_heatmap_rows_sum_to_one():
    alpha = torch.randn(14, len(OPS))
    bars = viz.op_probability_bars(alpha, 4, STAR, "reduce")
    assert len(bars.data) == len(OPS)
    totals = torch.tensor([list(t.x) for t in bars.data]).sum(0)
    assert torch.allclose(totals, torch.ones(14, dtype=totals.dtype), atol=1e-5)
    assert sum(label.startswith("★") for label in bars.data[0].y) == STAR.num_kept_edges()
    heat = viz.alpha_heatmap(alpha, 4, STAR)
    z = torch.tensor(heat.data[0].z)
    assert z.shape == (14, len(OPS)), f"heatmap shape {tuple(z.shape)}, expected 14 edges × {len(OPS)} ops"
    assert torch.allclose(z.sum(1), torch.ones(14, dtype=z.dtype), atol=1e-5), \
        f"heatmap rows sum to {z.sum(1).tolist()}"


def test_js_heatmap_has_a_fixed_scale_and_checks_shapes():
    m = torch.tensor([[0.0, 0.2], [0.2, 0.0]])
    fig = viz.js_heatmap(m, ["a", "b"])
    assert fig.data[0].zmin == 0.0, f"colour scale starts at {fig.data[0].zmin}, expected 0"
    assert math.isclose(fig.data[0].zmax, math.log(2)), f"colour scale ends at {fig.data[0].zmax}, expected ln 2"
    # fitted: the colours span the largest off-diagonal value, the title says so and what high means
    m3 = torch.tensor([[0.0, 0.02, 0.07], [0.02, 0.0, 0.01], [0.07, 0.01, 0.0]])
    fit = viz.js_heatmap(m3, ["a", "b", "c"], fit=True, high="they predict differently")
    assert math.isclose(fit.data[0].zmax, 0.07, abs_tol=1e-6), \
        f"fitted colour scale ends at {fit.data[0].zmax}, expected the largest value 0.07"
    assert "fitted" in fit.layout.title.text, f"the title does not say the scale is fitted: {fit.layout.title.text!r}"
    assert "they predict differently" in fit.layout.title.text, \
        f"the title does not say what high means: {fit.layout.title.text!r}"
    assert "ln 2" in fit.layout.title.text, f"the title does not name the ln 2 maximum: {fit.layout.title.text!r}"
    assert math.isclose(viz.js_heatmap(torch.zeros(2, 2), ["a", "b"], fit=True).data[0].zmax, math.log(2))
    assert viz.js_heatmap(m3, ["a", "b", "c"], zmax=1.0).data[0].zmax == 1.0
    with pytest.raises(ValueError, match="n×n"):
        viz.js_heatmap(torch.zeros(2, 3), ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        viz.js_heatmap(m, ["a"])


def test_lambda_curve_and_metric_curves():
    curve = [{"lam": l, "matched_edges": 4 - l, "js_to_star": 0.1 * l} for l in range(5)]
    fig = viz.lambda_curve(curve, lam=2.0)
    assert [list(t.x) for t in fig.data] == [list(range(5))] * 2
    mc = viz.metric_curves({"a": [(0, 0.1), (1, 0.2)], "empty": []})
    assert [t.name for t in mc.data] == ["a"]


def test_genotype_diff_marks_exactly_the_differing_nodes():
    rows = viz.genotype_diff(STAR, OTHER)
    assert len(rows) == 4, f"{len(rows)} rows for 4 nodes"
    assert [r["same"] for r in rows] == ["✓", "✗", "✗", "✓"], f"nodes marked same {[r['same'] for r in rows]}"
    assert all(r["same"] == "✓" for r in viz.genotype_diff(STAR, STAR))
    assert "max_pool_3x3 ← c_{k-2}" in rows[1]["A"], f"node 1 of A reads {rows[1]['A']!r}"
    assert "avg_pool_3x3" in rows[1]["B"], f"node 1 of B reads {rows[1]['B']!r}"


def test_join_curve_and_seed_summary():
    joins = [("m0", {"accuracy": 0.80, "nll": 0.6}), ("m1", {"accuracy": 0.82, "nll": 0.5})]
    fig = viz.join_curve(joins, ["m2"])
    assert list(fig.data[0].x) == [1, 2], f"join curve sizes {list(fig.data[0].x)}"
    assert list(fig.layout.xaxis.ticktext) == ["+m0", "+m1"], f"join curve labels {list(fig.layout.xaxis.ticktext)}"
    assert list(fig.layout.xaxis.tickvals) == [1, 2], f"join curve labels sit at {list(fig.layout.xaxis.tickvals)}"
    assert "m2" in fig.layout.title.text, f"the title does not name the left-out m2: {fig.layout.title.text!r}"
    assert "not in the ensemble" in fig.layout.title.text, \
        f"the title does not say m2 is not in the ensemble: {fig.layout.title.text!r}"
    recs = [{"method": "deepens", "ensemble": {"accuracy": a, "nll": 0.3, "ece": 0.02}} for a in (0.8, 0.9)]
    recs.append({"method": "darts", "ensemble": {"accuracy": 0.8, "nll": 0.3, "ece": 0.02}})
    rows = viz.seed_summary(recs)
    assert [r["method"] for r in rows] == ["deepens"], \
        f"summarized methods {[r['method'] for r in rows]}, expected only deepens (two seeds)"
    assert rows[0]["seeds"] == 2, f"deepens summarizes {rows[0]['seeds']} seeds, expected 2"
    assert rows[0]["accuracy %"].startswith("85.00 ± 7.07")
