"""The strength frontier: how much member strength a step away from α* costs, and how much diversity it buys.

An ensemble's NLL is its mean member's NLL minus D, the Jensen gap (`method.ledger`): a member far
from α* helps only if the diversity it adds outweighs the strength it loses. For the Ensemble page
(issue 27, item 1), one row per finished member of a run:
- `distance`: the architecture JS between its genotype and genotype* — the measure of the page's
  "accuracy against diversity" chart, taken from `diversityview.member_points` (0 … ln 2, exactly 0
  for α*'s genotype retrained with another seed);
- `val_nll`, `val_accuracy`: its strength on the **validation** split (never the test set, so a
  member chosen from this view was not chosen on test images);
- `d`: D of the pair {α*, member} on validation, log p̄(y) − mean log p_i(y) ≥ 0 (0 for α* itself).

The reference band is α*'s own genotype retrained with other seeds, from the run's DeepEns baseline
(`baselines/deepens_s0`): their validation NLL (mean ± sd over seeds) and D of two α* seeds (mean ±
sd over consecutive pairs) — the strength and diversity that seeds alone give. It is left out, with
a note saying why, when the baseline is missing, has fewer than 2 finished members, or was validated
on other images than the run's members (its numbers would not be comparable).

Computed once per state of the members' files (`scoring.members_stamp`): the page reruns often.
No Streamlit here: the page draws what these return.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..artifacts import ArtifactError
from ..layout import STAR, RunDir
from ..method import scoring
from ..method.ledger import ledger
from .diversityview import member_points
from .runview import RunView
from .viz import DIFF_COLOR, LN2, NEUTRAL, TITLE_CHARS, wrap

BAND_LABEL = "α* seeds (DeepEns)"
PAIR_LABEL = "two α* seeds (DeepEns)"
NO_REGULARIZER = "α* or a given genotype"  # members without λ: α* retrained, or a genotype given as is
# Okabe–Ito, one colour per regularizer (vermillion stays "another regularizer", grey α*'s own genotype)
REG_COLORS = {"edges": "#0072B2", "js-target": "#009E73", "js": "#E69F00"}
_CACHE: dict[tuple, "Frontier"] = {}


@dataclass(frozen=True)
class Band:
    """α*'s own seeds (the DeepEns baseline's members) on the run's validation images: `nll_mean`,
    `nll_sd` over the seeds' validation NLL (sample sd); `d_mean`, `d_sd` over D of the `pairs`
    consecutive pairs of seeds (seed i with seed i + 1)."""

    members: tuple[str, ...]
    nll_mean: float
    nll_sd: float
    d_mean: float
    d_sd: float
    pairs: int

    @property
    def nll_lo(self) -> float:
        return self.nll_mean - self.nll_sd

    @property
    def nll_hi(self) -> float:
        return self.nll_mean + self.nll_sd

    @property
    def d_lo(self) -> float:
        return self.d_mean - self.d_sd

    @property
    def d_hi(self) -> float:
        return self.d_mean + self.d_sd


@dataclass(frozen=True)
class Frontier:
    """One run's strength frontier. points: one dict per finished member, in name order — `member`,
    `regularizer` (None without λ), `lam`, `seed`, `distance` (architecture JS to α*, [0, ln 2]),
    `seed_only` (α*'s genotype), `val_nll`, `val_accuracy` ([0, 1]) and `d` (D with `reference`,
    [0, ln 2] for a pair). reference: the α* member D is measured against. band: α*'s seeds, or None
    (`notes` says why). reason: why nothing can be drawn (then points is empty). classes: K."""

    points: tuple[dict[str, Any], ...] = ()
    reference: str | None = None
    band: Band | None = None
    notes: tuple[str, ...] = ()
    reason: str | None = None
    classes: int = 0

    def strongest_diverse(self) -> dict[str, Any] | None:
        """The member with the lowest validation NLL among those whose genotype differs from α*'s."""
        diverse = [p for p in self.points if p["distance"] > 0.0]
        return min(diverse, key=lambda p: p["val_nll"]) if diverse else None


def pair_d(val: torch.Tensor, y: torch.Tensor, i: int, j: int) -> float:
    """D (the Jensen gap, nats) of the two-member ensemble {i, j} of val [M, N, K] with labels y [N];
    ≥ 0 by Jensen's inequality (clamped at 0 against rounding for two near-identical members)."""
    return max(0.0, ledger(val[[i, j]], y)["diversity_nll"])


def frontier(view: RunView) -> Frontier:
    """The strength frontier of the run's finished members (see the module's docstring); computed
    once per state of the run's and its DeepEns baseline's member files. ArtifactError when a member
    has no genotype or its probabilities cannot be read."""
    names = view.finished_members()
    if len(names) < 2:
        return Frontier(reason=f"{len(names)} finished member(s): the strength frontier needs at least 2 "
                               "(α* and a member away from it). Train members above; each one appears here.")
    base = view.run.baseline("deepens", 0)
    base_names = base.finished_members()
    key = (str(view.dir), tuple(names), scoring.members_stamp(view.dir, names), tuple(base_names),
           scoring.members_stamp(base.path, base_names))
    if key not in _CACHE:
        if len(_CACHE) > 16:
            _CACHE.clear()
        _CACHE[key] = _frontier(view, names)
    return _CACHE[key]


def _frontier(view: RunView, names: list[str]) -> Frontier:
    probs = scoring.MemberProbs.load(view.dir, names)
    if probs.val is None or probs.val_y.numel() == 0:
        why = "were validated on different images" if probs.val is None else "have no validation images"
        return Frontier(reason=f"The finished members {why}: the strength frontier is measured on the validation "
                               "split only (never on the test set), so there is nothing to draw.")
    rows = member_points(view, names)
    ref = _reference(rows)
    if ref is None:
        return Frontier(reason="No finished member has α*'s genotype (train “Also α* itself” above): D is measured "
                               "against α*, so there is nothing to draw yet.")
    val = probs.member_metrics("val")
    r = names.index(ref)
    points = tuple({"member": p["member"], "regularizer": p["regularizer"], "lam": p["lam"], "seed": p["seed"],
                    "distance": p["distance"], "seed_only": p["seed_only"], "val_nll": val[p["member"]]["nll"],
                    "val_accuracy": val[p["member"]]["accuracy"],
                    "d": 0.0 if i == r else pair_d(probs.val, probs.val_y, r, i)}
                   for i, p in enumerate(rows))
    band, note = _band(view.run, probs.val_y)
    return Frontier(points, ref, band, (note,) if note else (), None, int(probs.val.shape[2]))


def _reference(rows: Sequence[dict[str, Any]]) -> str | None:
    """The α* member: `STAR` when finished, else the α*-genotype member of lowest seed, else None."""
    names = [p["member"] for p in rows]
    if STAR in names:
        return STAR
    seed_only = sorted((p for p in rows if p["seed_only"]), key=lambda p: (p["seed"] is None, p["seed"] or 0))
    return seed_only[0]["member"] if seed_only else None


def _band(run: RunDir, val_y: torch.Tensor) -> tuple[Band | None, str | None]:
    """α*'s seeds from the run's DeepEns baseline on validation images `val_y` [N], or (None, why not)."""
    base = run.baseline("deepens", 0)
    names = base.finished_members()
    if len(names) < 2:
        have = "no DeepEns baseline" if not names else "a DeepEns baseline of only 1 finished member"
        return None, (f"No grey band: this run has {have} (α*'s seeds; run one on the Compare page), so the "
                      "members are compared with α* alone.")
    try:
        bp = scoring.MemberProbs.load(base.path, names)
    except ArtifactError as e:
        return None, f"No grey band: the DeepEns baseline's members could not be read ({e})."
    if bp.val is None or not torch.equal(bp.val_y, val_y):
        return None, ("No grey band: the DeepEns baseline's members were validated on other images than this run's "
                      "members, so their validation NLL and D are not comparable.")
    nll = [m["nll"] for m in bp.member_metrics("val").values()]
    ds = [pair_d(bp.val, bp.val_y, i, i + 1) for i in range(len(names) - 1)]
    return Band(tuple(names), statistics.fmean(nll), _sd(nll), statistics.fmean(ds), _sd(ds), len(ds)), None


def _sd(xs: Sequence[float]) -> float:
    """The sample standard deviation, 0 for a single value."""
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


# -- the caption ----------------------------------------------------------------------------------
def frontier_caption(fr: Frontier) -> str:
    """One paragraph for the figure: what each panel shows, that validation (not test) is used, and
    this run's numbers (the strongest member away from α*: its NLL and D against α*'s seeds)."""
    band = (f"The grey bands are α*'s own genotype retrained with {len(fr.band.members)} seeds (the DeepEns "
            "baseline): their validation NLL, mean ± sd, and the D of two α* seeds — what seeds alone give. "
            if fr.band else " ".join(fr.notes) + " ")
    text = ("Left: each finished member's validation NLL (its strength; lower is stronger) against the "
            "architecture JS between its genotype and α*'s, the distance of the chart above. Right: D, how much "
            "the pair {α*, member} gains by averaging (the Jensen gap: the pair's mean member NLL minus its "
            "ensemble NLL; higher is more diverse), against the same distance. The pair's NLL is its mean member NLL "
            "minus D, so a member away from α* beats another α* seed when the D it adds over the seeds' exceeds half "
            "the NLL it loses to them. " + band + "Everything here uses the validation split, not the "
            "test set. ")
    return text + _numbers(fr)


def _numbers(fr: Frontier) -> str:
    """The sentence with this run's numbers."""
    best = fr.strongest_diverse()
    if best is None:
        return "On this run no finished member has an architecture other than α*'s yet."
    if fr.band:
        return (f"On this run the strongest diverse member is **{best['member']}** (JS {best['distance']:.3f} to "
                f"α*): Δ val NLL {best['val_nll'] - fr.band.nll_mean:+.4f} vs α* seeds ({fr.band.nll_mean:.4f} ± "
                f"{fr.band.nll_sd:.4f}), D {best['d']:.4f} with α* vs {fr.band.d_mean:.4f} for two α* seeds.")
    ref = next(p for p in fr.points if p["member"] == fr.reference)
    return (f"On this run the strongest diverse member is **{best['member']}** (JS {best['distance']:.3f} to α*): "
            f"Δ val NLL {best['val_nll'] - ref['val_nll']:+.4f} vs {fr.reference}, D {best['d']:.4f} with α*.")


# -- the figure -----------------------------------------------------------------------------------
def _group(p: dict[str, Any]) -> tuple[str, str]:
    """(legend name, colour) of a member: its regularizer's, or grey without one."""
    reg = p["regularizer"]
    return (NO_REGULARIZER, NEUTRAL) if reg is None else (reg, REG_COLORS.get(reg, DIFF_COLOR))


def frontier_figure(fr: Frontier) -> go.Figure:
    """Two panels against the architecture JS to α* (x): validation NLL (left) and D with α* (right),
    one marker per member, one colour per regularizer; α*'s seeds as grey bands (mean ± sd, dotted
    mean). Hover: member, λ, validation NLL and accuracy."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
        wrap("validation NLL (lower = stronger)"), wrap("D with α* (higher = more diverse)")))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in fr.points:
        groups.setdefault(_group(p), []).append(p)
    for (name, color), pts in groups.items():
        data = [[p["member"], "—" if p["lam"] is None else f"{p['lam']:g}", p["val_nll"], 100 * p["val_accuracy"],
                 p["d"]] for p in pts]
        for col, key in ((1, "val_nll"), (2, "d")):
            fig.add_trace(go.Scatter(
                x=[p["distance"] for p in pts], y=[p[key] for p in pts], name=name, legendgroup=name,
                showlegend=col == 1, mode="markers+text", text=[p["member"] for p in pts], textposition="top center",
                marker=dict(size=11, color=color), customdata=data,
                hovertemplate="%{customdata[0]}<br>λ %{customdata[1]}<br>val NLL %{customdata[2]:.4f}<br>val "
                              "accuracy %{customdata[3]:.2f} %<br>D with α* %{customdata[4]:.4f}<br>JS to α* "
                              "%{x:.3f}<extra></extra>"), row=1, col=col)
    if fr.band:
        _band_shapes(fig, fr.band)
    top = max([p["distance"] for p in fr.points] + [0.05])
    fig.update_xaxes(title_text="architecture JS to α* (0 = α*'s genotype)", range=[-0.08 * top, min(LN2, 1.2 * top)])
    for col, key, lo, hi in ((1, "val_nll", "nll_lo", "nll_hi"), (2, "d", "d_lo", "d_hi")):
        ys = [p[key] for p in fr.points] + ([getattr(fr.band, lo), getattr(fr.band, hi)] if fr.band else [])
        pad = 0.15 * (max(ys) - min(ys)) or 0.01
        fig.update_yaxes(range=[min(ys) - pad, max(ys) + pad], row=1, col=col,
                         title_text="validation NLL" if col == 1 else "D (nats)")
    title = wrap("member strength and diversity against distance to α* (validation split)", 2 * TITLE_CHARS)
    fig.update_layout(template="nes", height=460, title=title, legend=dict(orientation="h", y=-0.25),
                      margin=dict(l=10, r=10, t=90 + 20 * title.count("<br>"), b=10))
    return fig


def _band_shapes(fig: go.Figure, band: Band) -> None:
    """The α* seeds' bands: mean ± sd as a grey rectangle, the mean as a dotted line, in each panel."""
    for col, mean, lo, hi, label in ((1, band.nll_mean, band.nll_lo, band.nll_hi, BAND_LABEL),
                                     (2, band.d_mean, band.d_lo, band.d_hi, PAIR_LABEL)):
        fig.add_hrect(y0=lo, y1=hi, fillcolor=NEUTRAL, opacity=0.25, line_width=0, layer="below",
                      annotation_text=label, annotation_position="top left",
                      annotation_font=dict(size=11, color=NEUTRAL), row=1, col=col)
        fig.add_hline(y=mean, line=dict(color=NEUTRAL, dash="dot", width=1), row=1, col=col)

