"""Plotly figure builders for the explorer (pure functions: data in, `go.Figure` out).

No Streamlit here: the pages call these and hand the figures to `st.plotly_chart`, and the tests
inspect the figures' JSON directly. Conventions follow the DARTS cell drawings: inputs c_{k-2} and
c_{k-1} on the left, intermediate nodes 0..n-1 in the middle, the output c_k (the concatenation of
the intermediate nodes) on the right; each kept edge is labelled with its operation.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Mapping, Sequence

import networkx as nx
import plotly.graph_objects as go
import plotly.io as pio
import torch

from ..method.space import OPS, Genotype, edge_index

LN2 = math.log(2.0)

# One colour per operation in every figure: the Okabe–Ito colour-blind-safe palette (vermillion is
# kept for "differs from α*", black for nothing since it vanishes on the dark theme) and a mid grey,
# legible on both themes, for the identity.
OP_COLORS = {
    "max_pool_3x3": "#CC79A7",  # reddish purple
    "avg_pool_3x3": "#F0E442",  # yellow
    "skip_connect": "#999999",  # grey
    "sep_conv_3x3": "#0072B2",  # blue
    "sep_conv_5x5": "#56B4E9",  # sky blue
    "dil_conv_3x3": "#009E73",  # bluish green
    "dil_conv_5x5": "#E69F00",  # orange
}
OP_SHORT = {"max_pool_3x3": "max pool", "avg_pool_3x3": "avg pool", "skip_connect": "skip",
            "sep_conv_3x3": "sep 3×3", "sep_conv_5x5": "sep 5×5", "dil_conv_3x3": "dil 3×3", "dil_conv_5x5": "dil 5×5"}
DIFF_COLOR = "#D55E00"  # vermillion: edges that differ from genotype* (a halo around the op's colour)
NEUTRAL = "#8C8C8C"  # the dotted node → c_k lines, reference lines, α*: a grey legible on the light and the dark theme
LABEL_SIZE = 13  # edge labels and node names, px (at 1280×720 a projector needs ≥ 12)
JS_COLORSCALE = "Viridis"
_GRID = "#EBF0F8"
# plotly_white's look in a template of a few keys: a named stock template is deep-copied into every
# figure (14–27 ms per heatmap, most of a live page's poll); this one costs 5–7 ms
pio.templates["nes"] = go.layout.Template(layout=dict(
    paper_bgcolor="white", plot_bgcolor="white", font=dict(color="#2a3f5f"),
    colorway=list(pio.templates["plotly_white"].layout.colorway),
    xaxis=dict(gridcolor=_GRID, zerolinecolor=_GRID, linecolor=_GRID, automargin=True),
    yaxis=dict(gridcolor=_GRID, zerolinecolor=_GRID, linecolor=_GRID, automargin=True)))
_LAYOUT = dict(template="nes", margin=dict(l=10, r=10, t=40, b=10))
TITLE_CHARS = 38  # a title line that fits a third of a 1280 px page (three charts side by side) at 16 px


def wrap(text: str, width: int = TITLE_CHARS) -> str:
    """`text` broken into lines of at most `width` characters at spaces (plotly never wraps a title,
    it cuts it at the figure's edge); "<br>" marks the breaks."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(lines)


def _titled(text: str, sub: str = "", width: int = TITLE_CHARS) -> dict:
    """A layout's title (wrapped) and smaller subtitle lines (wrapped wider), with the top margin
    they need, so neither is cut off in a narrow column."""
    title = wrap(text, width)
    lines = title.count("<br>") + 1
    if sub:
        sub_wrapped = wrap(sub, int(width * 1.4))
        title += "<br><sup>" + sub_wrapped.replace("<br>", "</sup><br><sup>") + "</sup>"
        lines += sub_wrapped.count("<br>") + 1
    return dict(title=dict(text=title), margin=dict(l=10, r=10, t=24 + 20 * lines, b=10))


def input_name(inp: int) -> str:
    """Label of input index `inp` of a node: c_{k-2}, c_{k-1} or an intermediate node."""
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(inp, str(inp - 2))


def cell_graph(genotype: Genotype, cell_type: str) -> nx.DiGraph:
    """The cell as a DAG: nodes 'c_{k-2}', 'c_{k-1}', '0'..'n-1', 'c_k'; op edges carry `op`."""
    cell = genotype.cell(cell_type)
    if not cell:
        raise ValueError(f"the genotype has no {cell_type} cell")
    g = nx.DiGraph()
    g.add_node("c_{k-2}", layer=0, kind="input")
    g.add_node("c_{k-1}", layer=0, kind="input")
    for i in range(len(cell)):
        g.add_node(str(i), layer=1 + i, kind="node")
    g.add_node("c_k", layer=len(cell) + 1, kind="output")
    for i, node in enumerate(cell):
        for op, inp in node:
            g.add_edge(input_name(inp), str(i), op=op, node=i, inp=inp)
        g.add_edge(str(i), "c_k", op="concat", node=i, inp=None)
    return g


def _positions(g: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """Deterministic left-to-right layout (columns by layer); the two inputs stacked on the left.

    Intermediate nodes alternate above and below the middle line so that edges skipping nodes do
    not run through the nodes in between."""
    pos = nx.multipartite_layout(g, subset_key="layer", align="vertical", scale=1.0)
    out = {}
    for name, (x, _) in pos.items():
        kind = g.nodes[name]["kind"]
        if kind == "input":
            y = 0.6 if name == "c_{k-2}" else -0.6
        elif kind == "node":
            y = 0.25 if int(name) % 2 == 0 else -0.25
        else:
            y = 0.0
        out[name] = (float(x), y)
    return out


def cell_figure(genotype: Genotype, cell_type: str, weights: Mapping[tuple[int, int], tuple[float, dict[str, float]]] | None = None,
                reference: Genotype | None = None, title: str | None = None) -> go.Figure:
    """A cell graph: each kept edge in its operation's colour (`OP_COLORS`, named in the legend),
    its width from its weight, edges that differ from `reference` (genotype*) haloed in vermillion.

    `weights[(node, inp)] = (edge weight, {op: probability})` from α(λ) (see `edge_weights`); the
    weight (probability that the node takes this input × probability of the kept op) sets the
    line width and is printed in parentheses after the op. Labels sit beside their edge, not on it."""
    g = cell_graph(genotype, cell_type)
    pos = _positions(g)
    ref_edges = None if reference is None else {
        (i, inp, op) for i, node in enumerate(reference.cell(cell_type)) for op, inp in node}
    fig, annotations, shown, n_diff = go.Figure(), [], set(), 0
    for u, v, data in g.edges(data=True):
        (x0, y0), (x1, y1) = pos[u], pos[v]
        if data["op"] == "concat":
            fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="skip", legendgroup="concat",
                                     name="concatenated into c_k", showlegend="concat" not in shown,
                                     line=dict(color=NEUTRAL, width=1.5, dash="dot")))
            shown.add("concat")
            continue
        op, node, inp = data["op"], data["node"], data["inp"]
        w, probs = (weights or {}).get((node, inp), (None, {}))
        differs = ref_edges is not None and (node, inp, op) not in ref_edges
        n_diff += differs
        width = 2.0 + (6.0 * w if w is not None else 2.0)
        xs = [x0 + (x1 - x0) * t / 10 for t in range(11)]  # points along the edge carry the hover text
        ys = [y0 + (y1 - y0) * t / 10 for t in range(11)]
        if differs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", opacity=0.4, legendgroup="differs",
                                     name="differs from α*", showlegend="differs" not in shown,
                                     line=dict(color=DIFF_COLOR, width=width + 9)))
            shown.add("differs")
        top = sorted(probs.items(), key=lambda kv: -kv[1])[:3]
        hover = (f"node {node} ← {input_name(inp)}<br>op: {op}" + (f"<br>edge weight {w:.2f}" if w is not None else "")
                 + "".join(f"<br>p({k}) = {p:.2f}" for k, p in top) + ("<br><b>differs from α*</b>" if differs else ""))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=OP_COLORS[op], width=width), hoverinfo="text",
                                 text=[hover] * len(xs), legendgroup=op, name=OP_SHORT[op], showlegend=op not in shown))
        shown.add(op)
        annotations.append(dict(ax=x0, ay=y0, x=x0 + (x1 - x0) * 0.93, y=y0 + (y1 - y0) * 0.93, xref="x", yref="y",
                                axref="x", ayref="y", showarrow=True, arrowhead=3, arrowsize=1.2, arrowwidth=1.5,
                                arrowcolor=OP_COLORS[op], text=""))
        label = OP_SHORT[op] + (f" ({w:.2f})" if w is not None else "") + (" ≠ α*" if differs else "")
        annotations.append(_beside((x0, y0), (x1, y1), label))
    _draw_nodes(fig, g, pos)
    legend_title = "colour = operation" + (" · (w) = p(input) × p(op)" if weights else "")
    fig.update_layout(**_LAYOUT, height=380, annotations=annotations,
                      title=title or f"{cell_type} cell" + (f" — {n_diff} edge(s) differ from α*" if reference is not None else ""),
                      legend=dict(orientation="h", yanchor="top", y=0.0, x=0.0, title=dict(text=legend_title, side="top")),
                      xaxis=dict(visible=False, range=[-1.25, 1.25]), yaxis=dict(visible=False, range=[-0.9, 0.9]))
    fig.layout.meta = {"cell_type": cell_type, "genotype": genotype.to_dict(), "edges_differing": n_diff}
    return fig


def _beside(p0: tuple[float, float], p1: tuple[float, float], text: str, gap_px: float = 9.0) -> dict:
    """An edge label anchored at the edge's midpoint and shifted `gap_px` pixels along the edge's
    normal that points away from the figure's centre (0, 0), so the text sits beside the line,
    not over it, and the labels of two edges meeting at a node fall on opposite sides. The pixel
    shift assumes the cell figure's aspect (about 250 px per x unit and 150 per y unit)."""
    mx, my = (p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2
    dx, dy = (p1[0] - p0[0]) * 250.0, (p1[1] - p0[1]) * 150.0
    norm = math.hypot(dx, dy) or 1.0
    nx_, ny_ = -dy / norm, dx / norm
    outward = nx_ * mx * 250.0 + ny_ * my * 150.0
    if outward < 0 or (abs(outward) < 1e-9 and ny_ < 0):
        nx_, ny_ = -nx_, -ny_
    xanchor = "left" if nx_ > 0.35 else "right" if nx_ < -0.35 else "center"
    yanchor = "bottom" if ny_ > 0.35 else "top" if ny_ < -0.35 else "middle"
    return dict(x=mx, y=my, xref="x", yref="y", text=text, showarrow=False, xshift=gap_px * nx_, yshift=gap_px * ny_,
                xanchor=xanchor, yanchor=yanchor, font=dict(size=LABEL_SIZE))


def _node_text(name: str) -> str:
    """A node's name as drawn: c_{k-2} → c with a subscript k−2 (fits inside its marker)."""
    return f"c<sub>{name[3:-1].replace('-', '−')}</sub>" if name.startswith("c_{") else name


def _draw_nodes(fig: go.Figure, g: nx.DiGraph, pos: Mapping[str, tuple[float, float]]) -> None:
    """The cell's nodes as markers with their names: inputs and output as squares, intermediate
    nodes as circles (light fill, dark text: legible on both themes)."""
    kinds = {"input": ("#4C72B0", "square"), "node": ("#F2F2F2", "circle"), "output": ("#55A868", "square")}
    for kind, (fill, symbol) in kinds.items():
        names = [n for n in g.nodes if g.nodes[n]["kind"] == kind]
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n in names], y=[pos[n][1] for n in names], mode="markers+text",
            text=[_node_text(n) for n in names], textposition="middle center", hoverinfo="text", showlegend=False,
            hovertext=[f"{n} ({kind})" for n in names], name=kind,
            marker=dict(size=40, color=fill, symbol=symbol, line=dict(color="#333333", width=1.5)),
            textfont=dict(color="white" if kind != "node" else "#222222", size=LABEL_SIZE - 1)))


def edge_weights(alpha: torch.Tensor, betas: Sequence[torch.Tensor], genotype: Genotype, cell_type: str
                 ) -> dict[tuple[int, int], tuple[float, dict[str, float]]]:
    """Per kept edge (node, input): (p(input) · p(op), {op: p(op)}) from α [E, 7] and β_i logits."""
    out = {}
    for i, node in enumerate(genotype.cell(cell_type)):
        p_in = torch.softmax(betas[i].float(), -1)
        for op, inp in node:
            p_op = torch.softmax(alpha[edge_index(i, inp)].float(), -1)
            out[(i, inp)] = (float(p_in[inp] * p_op[OPS.index(op)]), {o: float(p) for o, p in zip(OPS, p_op)})
    return out


def _edge_labels(nodes: int, genotype: Genotype | None, cell_type: str) -> list[str]:
    kept = {(i, inp) for i, node in enumerate(genotype.cell(cell_type)) for _, inp in node} if genotype else set()
    return [f"{'★ ' if (i, j) in kept else ''}{i} ← {input_name(j)}" for i in range(nodes) for j in range(2 + i)]


def op_probability_bars(alpha: torch.Tensor, nodes: int, genotype: Genotype | None = None, cell_type: str = "reduce",
                        title: str | None = None) -> go.Figure:
    """Stacked horizontal bars: softmax(α_e) for every edge e (★ marks the kept edges)."""
    probs = torch.softmax(alpha.float(), -1)  # [E, 7]
    labels = _edge_labels(nodes, genotype, cell_type)
    fig = go.Figure()
    for k, op in enumerate(OPS):
        fig.add_trace(go.Bar(y=labels, x=probs[:, k].tolist(), name=op, orientation="h", marker_color=OP_COLORS[op],
                             hovertemplate=f"{op}: %{{x:.2f}}<extra>%{{y}}</extra>"))
    fig.update_layout(**_LAYOUT, barmode="stack", height=60 + 22 * len(labels),
                      title=title or f"op probabilities per edge ({cell_type})",
                      xaxis=dict(range=[0, 1], title="probability"), yaxis=dict(autorange="reversed"),
                      legend=dict(orientation="h", y=-0.15))
    return fig


def alpha_heatmap(alpha: torch.Tensor, nodes: int, genotype: Genotype | None = None, cell_type: str = "reduce",
                  title: str | None = None) -> go.Figure:
    """Heatmap of softmax(α) [edges × ops] (α* after a search)."""
    probs = torch.softmax(alpha.float(), -1)
    fig = go.Figure(go.Heatmap(z=probs.tolist(), x=list(OPS), y=_edge_labels(nodes, genotype, cell_type), zmin=0, zmax=1,
                               colorscale="Blues", text=[[f"{p:.2f}" for p in row] for row in probs.tolist()],
                               texttemplate="%{text}", hovertemplate="%{y}<br>%{x}: %{z:.3f}<extra></extra>",
                               colorbar=dict(title="p")))
    fig.update_layout(**_LAYOUT, height=80 + 24 * probs.shape[0], title=title or f"α* op weights ({cell_type} cell)",
                      yaxis=dict(autorange="reversed"))
    return fig


def js_heatmap(matrix: torch.Tensor | Sequence[Sequence[float]], labels: Sequence[str], title: str = "pairwise JS",
               zmax: float = LN2, fit: bool = False, high: str = "") -> go.Figure:
    """Symmetric divergence matrix, on a fixed 0 … `zmax` colour scale (ln 2 for JS: comparable
    across views) or, with `fit`, on 0 … its largest off-diagonal value (small divergences between
    similar members then show their structure). `high` says what a high value means."""
    m = torch.as_tensor(matrix, dtype=torch.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(labels):
        raise ValueError(f"js_heatmap: need an n×n matrix and n labels, got {tuple(m.shape)} and {len(labels)}")
    bound_text = "ln 2" if zmax == LN2 else f"{zmax:.2g}"
    top = zmax
    note = f"scale 0 … {bound_text} (the largest possible)"
    if fit:
        off = m[~torch.eye(len(labels), dtype=torch.bool)]
        top = float(off.max()) if off.numel() and float(off.max()) > 0 else zmax
        note = f"scale fitted: 0 … {top:.3g} (the largest here; the largest possible is {bound_text})"
    fig = go.Figure(go.Heatmap(z=m.tolist(), x=list(labels), y=list(labels), zmin=0.0, zmax=top,
                               colorscale=JS_COLORSCALE, text=[[f"{v:.3f}" for v in row] for row in m.tolist()],
                               texttemplate="%{text}", hovertemplate="%{y} vs %{x}: %{z:.4f}<extra></extra>",
                               colorbar=dict(title="JS" if zmax == LN2 else "", tickvals=[0, top / 2, top],
                                             ticktext=["0", f"{top / 2:.3g}", bound_text if top == zmax else f"{top:.3g}"])))
    sub = note + (f"; high = {high}" if high else "")
    fig.update_layout(**{**_LAYOUT, **_titled(title, sub)}, height=180 + 40 * len(labels),
                      yaxis=dict(autorange="reversed"), xaxis=dict(type="category"))
    fig.update_yaxes(type="category")
    return fig


def join_curve(joins: Sequence[tuple[str, Mapping[str, float]]], training: Sequence[str] = ()) -> go.Figure:
    """Ensemble accuracy and NLL as each finished member joined (in the order they finished), the
    joining member named under its point on the x axis (slanted, so long names never run into
    each other); members still training are named in the subtitle, not drawn."""
    xs = list(range(1, len(joins) + 1))
    names = [f"+{n}" for n, _ in joins]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[m["accuracy"] for _, m in joins], name="accuracy", mode="lines+markers",
                             customdata=names, hovertemplate="%{customdata}: accuracy %{y:.2%}<extra></extra>"))
    fig.add_trace(go.Scatter(x=xs, y=[m["nll"] for _, m in joins], name="NLL", mode="lines+markers", yaxis="y2",
                             line=dict(dash="dot"), customdata=names, hovertemplate="%{customdata}: NLL %{y:.4f}<extra></extra>"))
    wait = f"still training (not in the ensemble): {', '.join(training)}" if training else ""
    fig.update_layout(**{**_LAYOUT, **_titled("ensemble as each finished member joined", wait)}, height=340,
                      xaxis=dict(title="member joining the ensemble", tickvals=xs, ticktext=names, tickangle=-30),
                      yaxis=dict(title="test accuracy", tickformat=".1%"),
                      yaxis2=dict(title="NLL", overlaying="y", side="right", showgrid=False),
                      legend=dict(orientation="h", y=-0.45))
    return fig


def lambda_curve(curve: Sequence[Mapping[str, float]], lam: float | None = None, title: str | None = None) -> go.Figure:
    """Matched edges with genotype* (left axis) and the distance to α* (right axis) along the
    diversity axis (0 = α*, 1 = most diverse). Curves written before the axis existed have no
    `diversity`/`distance`: they are drawn against λ with the architecture JS."""
    axis = all(c.get("diversity") is not None and c.get("distance") is not None for c in curve)
    xs = [c["diversity"] if axis else c["lam"] for c in curve]
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    xs = [xs[i] for i in order]
    ys = [curve[i]["distance"] if axis else curve[i]["js_to_star"] for i in order]
    dist_name = "distance to α* (JS_g)" if axis else "JS to α*"
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[curve[i]["matched_edges"] for i in order], name="matched edges",
                             mode="lines+markers", line=dict(color="#0072B2", shape="hv")))
    fig.add_trace(go.Scatter(x=xs, y=ys, name=dist_name, mode="lines+markers", yaxis="y2", line=dict(color=DIFF_COLOR)))
    if lam is not None:
        fig.add_vline(x=lam, line=dict(color=NEUTRAL, dash="dash"))
    fig.update_layout(**{**_LAYOUT, **_titled(title or "diversity")}, height=320, legend=dict(orientation="h", y=-0.25),
                      xaxis=dict(title="diversity (0 = α*, 1 = most diverse)" if axis else "λ"),
                      yaxis=dict(title="matched edges", rangemode="tozero"),
                      yaxis2=dict(title=dist_name, overlaying="y", side="right", range=[0, LN2]))
    return fig


def diff_heatmap(genotypes: Sequence[Genotype], labels: Sequence[str], title: str = "edges that differ") -> go.Figure:
    """How many kept edges differ between every pair of genotypes: 0 exactly for identical ones
    (the discrete side of the continuous architecture-JS heatmap)."""
    n = len(genotypes)
    if n != len(labels):
        raise ValueError(f"diff_heatmap: {n} genotypes but {len(labels)} labels")
    m = [[a.num_kept_edges() - a.matched_edges(b) for b in genotypes] for a in genotypes]
    top = max([g.num_kept_edges() for g in genotypes] + [1])
    fig = go.Figure(go.Heatmap(z=m, x=list(labels), y=list(labels), zmin=0, zmax=top, colorscale=JS_COLORSCALE,
                               text=m, texttemplate="%{text}", hovertemplate="%{y} vs %{x}: %{z} edges differ<extra></extra>",
                               colorbar=dict(title="edges")))
    fig.update_layout(**{**_LAYOUT, **_titled(title)}, height=140 + 40 * n, yaxis=dict(autorange="reversed", type="category"),
                      xaxis=dict(type="category"))
    return fig


def metric_curves(series: Mapping[str, Sequence[tuple[float, float]]], title: str = "", x_title: str = "step",
                  y_title: str = "") -> go.Figure:
    """One line per named series of (x, y) points (training curves, live member curves)."""
    fig = go.Figure()
    for name, pts in series.items():
        if pts:
            xs, ys = zip(*pts)
            fig.add_trace(go.Scatter(x=list(xs), y=list(ys), name=name, mode="lines+markers" if len(pts) < 30 else "lines"))
    fig.update_layout(**_LAYOUT, height=300, title=title, xaxis=dict(title=x_title), yaxis=dict(title=y_title),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def genotype_diff(a: Genotype, b: Genotype) -> list[dict[str, str]]:
    """Rows (cell, node, A, B, same) comparing two genotypes edge by edge, for a side-by-side table."""
    rows = []
    for ct in a.cell_types:
        ca, cb = a.cell(ct), b.cell(ct)
        for i in range(max(len(ca), len(cb))):
            ea = sorted(ca[i], key=lambda e: e[1]) if i < len(ca) else []
            eb = sorted(cb[i], key=lambda e: e[1]) if i < len(cb) else []
            fa = " + ".join(f"{op} ← {input_name(inp)}" for op, inp in ea) or "—"
            fb = " + ".join(f"{op} ← {input_name(inp)}" for op, inp in eb) or "—"
            rows.append({"cell": ct, "node": str(i), "A": fa, "B": fb, "same": "✓" if set(ea) == set(eb) else "✗"})
    return rows


def compare_figures(results: Mapping[str, Sequence[Mapping]]) -> dict[str, go.Figure]:
    """Method comparison: accuracy / NLL / ECE vs ensemble size, and accuracy vs total cost.

    `results[label]` is a list of baseline records (one per seed; see `nes.method.baselines.run_baseline`):
    curves are the mean over seeds."""
    def mean(xs: Sequence[float]) -> float:
        return sum(xs) / len(xs)

    figs = {}
    for metric, name in (("accuracy", "accuracy"), ("nll", "NLL"), ("ece", "ECE")):
        fig = go.Figure()
        for label, recs in results.items():
            n = min(len(r.get("by_size") or []) for r in recs) if recs else 0
            if n:
                fig.add_trace(go.Scatter(x=list(range(1, n + 1)), name=label, mode="lines+markers",
                                         y=[mean([r["by_size"][m][metric] for r in recs]) for m in range(n)]))
        fig.update_layout(**_LAYOUT, height=320, title=f"ensemble {name} vs ensemble size",
                          xaxis=dict(title="members", dtick=1), yaxis=dict(title=name), legend=dict(orientation="h", y=-0.3))
        figs[f"{metric}_vs_size"] = fig
    figs["accuracy_vs_cost"] = cost_figure({label: (mean([r["costs"]["total_seconds"] for r in recs]),
                                                    mean([r["ensemble"]["accuracy"] for r in recs]))
                                            for label, recs in results.items() if recs})
    return figs


def cost_figure(points: Mapping[str, tuple[float, float]]) -> go.Figure:
    """Ensemble accuracy against total cost, one labelled point per method ({label: (seconds,
    accuracy)}). The cost axis starts at 0 (so cost ratios read off it) and the accuracy axis spans
    the points with a margin of at least half a point: one point, or two close ones, never sit on
    an axis of the wrong scale."""
    fig = go.Figure()
    for label, (cost, acc) in points.items():
        fig.add_trace(go.Scatter(x=[cost], y=[acc], name=label, mode="markers+text", text=[label],
                                 textposition="top center", marker=dict(size=12),
                                 hovertemplate=f"{label}<br>%{{x:.0f}} s<br>accuracy %{{y:.2%}}<extra></extra>"))
    xaxis, yaxis = dict(title="total cost, device-seconds"), dict(title="ensemble accuracy", tickformat=".1%")
    costs = [c for c, _ in points.values() if math.isfinite(c)]
    accs = [a for _, a in points.values() if math.isfinite(a)]
    if costs and max(costs) > 0:
        xaxis["range"] = [0.0, 1.15 * max(costs)]
    if accs:
        pad = max(0.005, 0.25 * (max(accs) - min(accs)))
        yaxis["range"] = [min(accs) - pad, max(accs) + 1.5 * pad]  # room for the labels above the points
    fig.update_layout(**_LAYOUT, height=360, title="accuracy vs cost (training device-seconds, search included)",
                      xaxis=xaxis, yaxis=yaxis, showlegend=False)
    return fig


def seed_summary(records: Sequence[Mapping]) -> list[dict[str, Any]]:
    """Rows (method, seeds, accuracy %, NLL, ECE as "mean ± std") of the methods run with more than
    one seed; [] when no method has two seeds."""
    by: dict[str, list[Mapping]] = {}
    for r in records:
        by.setdefault(r["method"], []).append(r)

    def ms(vals: list[float], digits: int) -> str:
        return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"
    return [{"method": m, "seeds": len(rs),
             "accuracy %": ms([100 * r["ensemble"]["accuracy"] for r in rs], 2),
             "NLL": ms([r["ensemble"]["nll"] for r in rs], 4), "ECE": ms([r["ensemble"]["ece"] for r in rs], 4)}
            for m, rs in by.items() if len(rs) > 1]
