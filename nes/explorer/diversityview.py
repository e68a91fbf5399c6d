"""Accuracy against diversity: where an ensemble's gain comes from, as plain rows and two figures.

Two views of a run's finished members for the Ensemble page (issue 26, item 6):
- `member_points`: each member's test accuracy against its architecture's distance to α*. The
  distance is the architecture JS between the member's genotype and genotype* (both as smoothed
  one-hots, τ = 0.99), `divergence.genotype_js_matrix`: the discrete architecture the member was
  built from, as the architecture map, the export's matrix and the heatmaps measure it (natural
  log, so 0 ≤ JS ≤ ln 2). A member retrained from α*'s genotype with another seed sits at exactly 0:
  its diversity comes from the seed alone. (The Explore page's "distance to α*" is JS_g of the
  continuous α(λ), a different quantity.)
- `selection_curve`: NES forward selection on the *validation* split (`scoring.greedy_names`)
  fixes the order; the test split only scores each prefix, through `scoring.score`, so every point
  carries the paired bootstrap 95 % interval of the gain over the best member (lowest validation
  NLL). No choice here looks at the test set.

Both are computed once per state of the members' files (a live page polls every few seconds).
No Streamlit here: the page draws what these return.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..artifacts import ArtifactError
from ..method import scoring
from ..method.divergence import genotype_js_matrix
from ..method.ensemble import ensemble_metrics
from .runview import RunView
from .viz import DIFF_COLOR, LN2, NEUTRAL

SEED_ONLY_COLOR = NEUTRAL  # same genotype as α*: diversity from the seed alone (grey: legible on both themes)
_LAYOUT = dict(template="nes", margin=dict(l=10, r=10, t=60, b=10))  # "nes": registered by viz
_CACHE: dict[tuple, Any] = {}


def _memo(kind: str, run_dir: Path, names: Sequence[str], compute):
    """compute() once per (kind, run, names, the members' saved files): scoring every prefix of
    the selection (bootstrap, temperature) costs ~0.35 s a step."""
    key = (kind, str(run_dir), tuple(names), scoring.members_stamp(run_dir, names))
    if key not in _CACHE:
        if len(_CACHE) > 32:
            _CACHE.clear()
        _CACHE[key] = compute()
    return _CACHE[key]


# -- (a) each member's accuracy against its distance to α* ----------------------------------------
def member_points(view: RunView, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per finished member (default: all of the run's, by name): `member`, `distance`
    (architecture JS of its genotype to genotype*, in [0, ln 2], 0 for α*'s genotype), `seed_only`
    (same genotype as α*), `matched_edges` (kept edges shared with genotype*), `accuracy` (test
    accuracy of its last saved epoch, in [0, 1]), `regularizer`, `lam`, `seed` and `compact` (the
    genotype in one line). ArtifactError when a member has no genotype or does not fit the run's
    search space."""
    names = list(view.finished_members() if names is None else names)
    if not names:
        return []
    return _memo("member_points", view.dir, names, lambda: _member_points(view, names))


def _member_points(view: RunView, names: list[str]) -> list[dict[str, Any]]:
    genotypes = []
    for n in names:
        g = view.member(n).genotype
        if g is None:
            raise ArtifactError(f"member {n!r} of {view.dir}: no genotype in genotype.json; retrain the member")
        genotypes.append(g)
    js = genotype_js_matrix([view.star, *genotypes])
    if js is None:
        raise ArtifactError(f"the members of {view.dir} do not share α*'s cells and nodes: no distance to α*")
    acc = scoring.MemberProbs.load(view.dir, names).member_metrics("test")
    rows = []
    for i, (n, g) in enumerate(zip(names, genotypes), start=1):
        rec = view.run.member(n).record()
        rows.append({"member": n, "distance": float(js[0][i]), "seed_only": g == view.star,
                     "matched_edges": g.matched_edges(view.star), "edges": view.star.num_kept_edges(),
                     "accuracy": acc[n]["accuracy"], "regularizer": rec.regularizer, "lam": rec.lam,
                     "seed": rec.seed, "compact": g.compact()})
    return rows


# -- (b) the forward-selection curve --------------------------------------------------------------
def selection_curve(run_dir: str | Path, names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows, one per step of NES forward selection (validation NLL) over members NAMES: `step` (k),
    `member` (the one added), `members` (the first k in selection order), `val_nll` (the ensemble's
    validation NLL, what the selection minimises), test `accuracy` and `nll` of the k-member
    ensemble, `best_member` (lowest validation NLL: the first one picked), `best_accuracy` and
    `best_nll` (its test metrics) and `gain` {"accuracy", "nll"}: `stats.Difference` dicts of the
    ensemble minus the best member on the test images (accuracy in points, NLL in nats) from
    `scoring.score`; `val_minimum` marks the step of lowest validation NLL (where a selection of
free size would stop). At step 1 the ensemble is the best member: a gain of exactly 0, its interval
    [0, 0]. ArtifactError when the members were validated on different images."""
    run_dir, names = Path(run_dir), list(names)
    if not names:
        return []
    return _memo("selection_curve", run_dir, names, lambda: _selection_curve(run_dir, names))


def _selection_curve(run_dir: Path, names: list[str]) -> list[dict[str, Any]]:
    order = scoring.greedy_names(run_dir, names, metric="nll")  # validation only
    probs = scoring.MemberProbs.load(run_dir, names).subset(order)
    rows = []
    for k in range(1, len(order) + 1):
        sub = probs.subset(order[:k])
        rep = scoring.score(sub)
        best = rep.vs_best["best_member"] if rep.vs_best else order[0]
        gain = rep.vs_best or {m: _zero(m, rep.images) for m in ("accuracy", "nll")}
        rows.append({"step": k, "member": order[k - 1], "members": list(order[:k]),
                     "val_nll": ensemble_metrics(sub.val, sub.val_y)["nll"],
                     "accuracy": rep.metrics["accuracy"], "nll": rep.metrics["nll"], "best_member": best,
                     "best_accuracy": rep.members[best]["accuracy"], "best_nll": rep.members[best]["nll"],
                     "gain": {m: gain[m] for m in ("accuracy", "nll")}})
    low = min(rows, key=lambda r: r["val_nll"])["step"]
    return [{**r, "val_minimum": r["step"] == low} for r in rows]


def _zero(metric: str, n: int) -> dict[str, Any]:
    """The gain of an ensemble of one over itself: 0 on every image, so 0 with the interval [0, 0]."""
    return {"metric": metric, "value": 0.0, "lo": 0.0, "hi": 0.0, "n": n, "within_noise": True}


# -- figures --------------------------------------------------------------------------------------
_TEXT_AT = ("top center", "bottom center", "middle right", "top right", "bottom right")


def diversity_figure(points: Sequence[dict[str, Any]]) -> go.Figure:
    """Test accuracy (y) against the architecture JS to α* (x, from 0 to ln 2 at most), one
    labelled marker per member: those with α*'s genotype (seed-only diversity, x = 0) in grey,
    the others in vermillion. The x axis starts a little left of 0 so the seed-only members show."""
    fig = go.Figure()
    for seed_only, name, color in ((True, "same genotype as α* (seed only)", SEED_ONLY_COLOR),
                                   (False, "another architecture", DIFF_COLOR)):
        pts = [p for p in points if p["seed_only"] == seed_only]
        if not pts:
            continue
        fig.add_trace(go.Scatter(
            x=[p["distance"] for p in pts], y=[100 * p["accuracy"] for p in pts], name=name,
            mode="markers+text", text=[p["member"] for p in pts], marker=dict(size=12, color=color),
            textposition=[_TEXT_AT[i % len(_TEXT_AT)] for i in range(len(pts))],
            customdata=[[p["compact"], p["matched_edges"], p["edges"], p["seed"]] for p in pts],
            hovertemplate="%{text}<br>JS to α* %{x:.3f}<br>test accuracy %{y:.2f} %<br>%{customdata[1]} of "
                          "%{customdata[2]} edges shared with α*, seed %{customdata[3]}<br>%{customdata[0]}"
                          "<extra></extra>"))
    top = max([p["distance"] for p in points] + [0.05])
    accs = [100 * p["accuracy"] for p in points] or [0.0]
    pad = max(0.3, 0.15 * (max(accs) - min(accs)))
    fig.update_layout(**_LAYOUT, height=380, title="member test accuracy vs architecture distance to α*",
                      xaxis=dict(title="architecture JS to α* (genotypes; 0 = α*'s, ln 2 = max)",
                                 range=[-0.08 * top, min(LN2, 1.2 * top)]),
                      yaxis=dict(title="test accuracy (%)", range=[min(accs) - pad, max(accs) + pad]),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def selection_figure(curve: Sequence[dict[str, Any]]) -> go.Figure:
    """Two panels against the number of members in validation forward-selection order: the
    ensemble's test accuracy (%) and test NLL, each point with the 95 % interval of its gain over
    the best member drawn around it (error bars), and a dotted line at the best member's value:
    a bar that crosses the line is a gain within the test set's noise."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ensemble test accuracy (%)", "ensemble test NLL"))
    steps = [r["step"] for r in curve]
    ticks = [f"{r['step']}. +{r['member']}" if r["step"] > 1 else f"1. {r['member']}" for r in curve]
    for col, metric, scale, color in ((1, "accuracy", 100.0, "#0072B2"), (2, "nll", 1.0, DIFF_COLOR)):
        ys = [scale * r[metric] for r in curve]
        g = [r["gain"][metric] for r in curve]  # accuracy gains are in points already
        fig.add_trace(go.Scatter(
            x=steps, y=ys, mode="lines+markers", name=f"ensemble {metric}", line=dict(color=color),
            error_y=dict(type="data", symmetric=False, array=[d["hi"] - d["value"] for d in g],
                         arrayminus=[d["value"] - d["lo"] for d in g]),
            customdata=[[d["value"], d["lo"], d["hi"]] for d in g],
            hovertemplate="%{y:.4g}<br>gain over best member %{customdata[0]:+.3g} (95% CI %{customdata[1]:+.3g} "
                          "to %{customdata[2]:+.3g})<extra></extra>"), row=1, col=col)
        if curve:
            fig.add_hline(y=scale * curve[0][f"best_{metric}"], line=dict(color=NEUTRAL, dash="dot"), row=1, col=col)
        fig.update_xaxes(tickvals=steps, ticktext=ticks, title_text="members (validation selection order)",
                         row=1, col=col)
    fig.update_layout(**{**_LAYOUT, "margin": dict(l=10, r=10, t=90, b=10)}, height=420, showlegend=False,
                      title="forward selection, ordered on validation only")
    return fig
