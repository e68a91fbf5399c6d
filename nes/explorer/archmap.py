"""The architecture map: every architecture of a run as a point on one 2-D map.

α*, each trained hypernetwork's path α(λ) on a grid of the diversity axis, every finished member
(coloured by its test accuracy) and the baseline pools (RUN/baselines/*) are embedded together by
metric MDS of their pairwise architecture distance, so a class sees where the ensemble's members sit
relative to α* and to each other. A 2-D picture of a higher-dimensional distance always distorts
it; Kruskal's stress-1 of the embedding is computed and stated with the map so nobody over-reads it.

The distance is the product's architecture JS (`divergence.js_divergence` averaged over every
categorical distribution, as `divergence.arch_js`, the heatmaps and the export's matrix define it),
square-rooted: √JS is a metric (the Jensen–Shannon distance) that embeds isometrically in a Euclidean
space, and a mean of squared such distances does too, so MDS is not asked to draw a triangle that
breaks the triangle inequality. Two spaces of architectures are offered:
- `genotype` (default): every point is the discrete architecture a network is built from, as the
  smoothed distributions p* of its genotype (τ = 0.99). Members then sit exactly on the path point
  they were sampled from and a hypernetwork that collapses to one genotype draws as one point.
- `continuous`: α* and the paths by softmax(θ), members and baselines (genotypes only) by p*.
Identical architectures are embedded once and share a position.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from ..artifacts import ArtifactError
from ..layout import RunDir
from ..method.divergence import js_divergence
from ..method.space import ArchLayout, Genotype
from ..method.train import read_member
from .runview import RunView
from .viz import DIFF_COLOR, NEUTRAL

KINDS = ("alpha_star", "path", "member", "baseline")
SPACES = ("genotype", "continuous")
TAU = 0.99  # smoothing of a genotype's one-hots, as everywhere else (docs/design.md)
DEFAULT_GRID = 33  # the pipeline's λ grid


@dataclass(frozen=True)
class MapPoint:
    """One architecture on the map: its kind (one of KINDS), a label, its map position (x, y), its
    genotype and, where they apply, the regularizer and λ (and place on the diversity axis, 0 = α*)
    of the α(λ) it comes from, its test accuracy, and the baseline pool it belongs to."""

    kind: str
    label: str
    x: float
    y: float
    genotype: Genotype
    regularizer: str | None = None
    lam: float | None = None
    diversity: float | None = None
    accuracy: float | None = None
    pool: str | None = None


@dataclass(frozen=True)
class ArchMap:
    """A run's architecture map. `points` in the order α*, paths (each from the α* end), members,
    baselines; `paths[regularizer]` the indices of that hypernetwork's points along its axis;
    `stress` Kruskal's stress-1 of the embedding (0 = distances drawn exactly); `notes` what was
    left off the map and why."""

    run: str
    space: str
    seed: int
    grid: int
    points: tuple[MapPoint, ...]
    paths: dict[str, tuple[int, ...]]
    stress: float
    notes: tuple[str, ...] = field(default=())

    def coords(self) -> np.ndarray:
        """[n, 2] map positions of the points, in order."""
        return np.array([[p.x, p.y] for p in self.points], dtype=np.float64).reshape(-1, 2)

    def of_kind(self, kind: str) -> list[MapPoint]:
        return [p for p in self.points if p.kind == kind]


# -- distances and embedding ----------------------------------------------------------------------
def arch_distributions(layout: ArchLayout, genotype: Genotype, theta: torch.Tensor | None, space: str
                       ) -> list[torch.Tensor]:
    """The categorical distributions [7] per edge and [2+i] per node that stand for an architecture:
    softmax(θ) in the continuous space when θ is known, else the genotype's smoothed one-hots."""
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; choose one of {', '.join(SPACES)}")
    if space == "continuous" and theta is not None:
        return layout.distributions(theta.float().cpu())
    return layout.smoothed_distributions(genotype, TAU)


@torch.no_grad()
def distance_matrix(dists: Sequence[Sequence[torch.Tensor]]) -> np.ndarray:
    """[n, n] √(architecture JS) between n architectures given by their distributions (each a list
    in `ArchLayout.distributions` order): the JS of `divergence.arch_js` (mean over distributions),
    batched over all pairs one distribution at a time; symmetric with a zero diagonal."""
    n = len(dists)
    if n == 0:
        return np.zeros((0, 0))
    total = torch.zeros(n, n, dtype=torch.float64)
    slots = len(dists[0])
    for k in range(slots):
        p = torch.stack([d[k] for d in dists]).double()  # [n, m_k]
        total += js_divergence(p[:, None, :], p[None, :, :])
    js = (total + total.T) / (2 * slots)
    js.fill_diagonal_(0.0)
    return js.clamp_min(0.0).sqrt().numpy()


def kruskal_stress(d: np.ndarray, x: np.ndarray) -> float:
    """Kruskal's stress-1 of positions x [n, k] for distances d [n, n]:
    sqrt(Σ_{i<j} (d_ij − ‖x_i − x_j‖)² / Σ_{i<j} d_ij²); 0 when every distance is drawn exactly
    (and when all d are 0)."""
    d = np.asarray(d, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    iu = np.triu_indices(len(d), 1)
    den = float((d[iu] ** 2).sum())
    if den == 0.0:
        return 0.0
    drawn = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)[iu]
    return float(np.sqrt(((d[iu] - drawn) ** 2).sum() / den))


def classical_mds(d: np.ndarray, dim: int = 2) -> np.ndarray:
    """Torgerson's classical MDS: the top `dim` eigenvectors of −½·J·D²·J scaled by √eigenvalue
    → [n, dim] (zeros where fewer positive eigenvalues exist)."""
    n = len(d)
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ (d ** 2) @ j
    vals, vecs = np.linalg.eigh((b + b.T) / 2)
    top = np.argsort(vals)[::-1][:dim]
    x = vecs[:, top] * np.sqrt(np.clip(vals[top], 0.0, None))
    return np.pad(x, ((0, 0), (0, dim - x.shape[1])))


def smacof(d: np.ndarray, x0: np.ndarray, iters: int = 500, tol: float = 1e-10) -> np.ndarray:
    """Metric MDS by SMACOF (Guttman transforms) from x0 [n, k]: each step never raises the raw
    stress Σ (d_ij − ‖x_i − x_j‖)²; stops when it improves by less than `tol` relatively."""
    n = len(d)
    x = np.array(x0, dtype=np.float64)
    prev = np.inf
    for _ in range(iters):
        drawn = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
        raw = float(((d - drawn) ** 2).sum())
        if np.isfinite(prev) and prev - raw <= tol * max(prev, 1e-300):
            break
        prev = raw
        with np.errstate(divide="ignore", invalid="ignore"):
            b = np.where(drawn > 0, -d / drawn, 0.0)
        np.fill_diagonal(b, 0.0)
        np.fill_diagonal(b, -b.sum(1))
        x = b @ x / n
    return x


def embed(d: np.ndarray, seed: int = 0, restarts: int = 4) -> np.ndarray:
    """[n, 2] metric-MDS positions for distances d [n, n]: SMACOF from classical MDS and from
    `restarts` random starts drawn with `seed`, the lowest stress kept, then scaled optimally (so
    its stress-1 is at most 1, the stress of drawing every point at one place). Deterministic for a
    seed."""
    n = len(d)
    if n < 2:
        return np.zeros((n, 2))
    rng = np.random.default_rng(seed)
    spread = float(d.max()) or 1.0
    starts = [classical_mds(d)] + [rng.normal(scale=spread, size=(n, 2)) for _ in range(restarts)]
    best = min((smacof(d, s) for s in starts), key=lambda x: kruskal_stress(d, x))
    iu = np.triu_indices(n, 1)
    drawn = np.linalg.norm(best[:, None, :] - best[None, :, :], axis=-1)[iu]
    scale = float((d[iu] * drawn).sum() / (drawn ** 2).sum()) if (drawn ** 2).sum() > 0 else 1.0
    return best * scale


def orient(x: np.ndarray, anchor: int) -> np.ndarray:
    """x [n, 2] moved so that point `anchor` (α*) is at the origin, rotated onto its principal axes
    and reflected so that the farthest point has x > 0 and the first point off the x axis y > 0:
    the same map whatever orientation MDS returned (distances unchanged)."""
    x = x - x[anchor]
    if len(x) < 2 or not np.any(x):
        return x
    _, vecs = np.linalg.eigh(x.T @ x)
    x = x @ vecs[:, ::-1]
    far = int(np.argmax(np.linalg.norm(x, axis=1)))
    if x[far, 0] < 0:
        x[:, 0] = -x[:, 0]
    off = np.flatnonzero(np.abs(x[:, 1]) > 1e-9 * max(1.0, float(np.abs(x).max())))
    if off.size and x[off[0], 1] < 0:
        x[:, 1] = -x[:, 1]
    return x


# -- the run's architectures --------------------------------------------------------------------
def _item(kind: str, label: str, genotype: Genotype, theta: torch.Tensor | None = None, **extra: Any) -> dict[str, Any]:
    """A point before it has a position: MapPoint's fields but x and y, plus θ (None for genotypes)."""
    return {"kind": kind, "label": label, "genotype": genotype, "theta": theta, **extra}


def _star_and_paths(rv: RunView, grid: int) -> tuple[list[dict[str, Any]], dict[str, list[int]]]:
    """α* and, per trained hypernetwork, α(λ) at `grid` evenly spaced places of its diversity axis."""
    items = [_item("alpha_star", "α*", rv.star, rv.theta_star)]
    paths: dict[str, list[int]] = {}
    for reg in rv.regularizers():
        paths[reg] = []
        for s in rv.sample(reg, rv.axis_grid(reg, grid)):
            paths[reg].append(len(items))
            items.append(_item("path", f"{reg} λ={s.lam:.3g}", s.genotype, s.theta, regularizer=reg, lam=s.lam,
                               diversity=s.diversity))
    return items, paths


def _fits(layout: ArchLayout, genotype: Genotype, where: str, notes: list[str]) -> bool:
    """Whether the genotype fits the run's search space (else a note says which one does not)."""
    try:
        layout.check_genotype(genotype)
        return True
    except ValueError as e:
        notes.append(f"{where}: left off the map ({e})")
        return False


def _accuracy(value: Any) -> float | None:
    """A recorded test accuracy as a float in [0, 1] (None when absent or not one)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if 0.0 <= v <= 1.0 else None


def _members(rv: RunView, notes: list[str]) -> list[dict[str, Any]]:
    """Every finished member of the run: its genotype (`train.read_member`), the regularizer and λ
    of its record and its test accuracy (metrics.json; None before it is written)."""
    items = []
    for name in rv.finished_members():
        d = rv.run.member(name)
        try:
            genotype = read_member(d).genotype
            rec = d.record()
            acc = d.read("metrics.json", {}).get("metrics", {}).get("test_accuracy")
        except (ArtifactError, AttributeError) as e:
            notes.append(f"member {name}: left off the map ({e})")
            continue
        if _fits(rv.layout, genotype, f"member {name}", notes):
            items.append(_item("member", name, genotype, regularizer=rec.regularizer, lam=rec.lam,
                               accuracy=_accuracy(acc)))
    return items


def _baselines(rv: RunView, notes: list[str]) -> list[dict[str, Any]]:
    """Every architecture of every baseline pool (RUN/baselines/<method>_s<seed>/baseline.json:
    its pool's genotypes and their test accuracies)."""
    items = []
    for rec in rv.baselines():
        pool = f"{rec.get('method')} s{rec.get('seed')}"
        genos, metrics = rec.get("genotypes") or {}, rec.get("members_metrics") or {}
        for name in rec.get("pool") or rec.get("members") or []:
            try:
                genotype = Genotype.from_dict(genos[name])
            except (KeyError, ValueError, TypeError) as e:
                notes.append(f"baseline {pool} {name}: no readable genotype ({e}); left off the map")
                continue
            acc = (metrics.get(name) or {}).get("accuracy")
            if _fits(rv.layout, genotype, f"baseline {pool} {name}", notes):
                items.append(_item("baseline", f"{pool}: {name}", genotype, pool=pool,
                                   accuracy=_accuracy(acc)))
    return items


def build_map(run_dir: str | Path, grid: int = DEFAULT_GRID, seed: int = 0, space: str = "genotype",
              view: RunView | None = None) -> ArchMap:
    """The architecture map of a run folder (ArtifactError naming the file when the run has no
    finished search or an artifact is broken). Identical architectures are embedded once: the
    distances [u, u] between the u distinct ones, metric MDS seeded by `seed`, α* at the origin."""
    if grid < 2:
        raise ValueError(f"grid must be at least 2 (points on each path), got {grid}")
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; choose one of {', '.join(SPACES)}")
    rv = view or RunView(run_dir)
    if not rv.has_search:
        raise ArtifactError(f"{rv.run.search.arch} missing: the run has no finished search; run "
                            f"`python -m nes search --run {rv.dir}` first")
    notes: list[str] = []
    items, paths = _star_and_paths(rv, grid)
    items += _members(rv, notes) + _baselines(rv, notes)
    keys = [("θ", it["theta"].numpy().tobytes()) if space == "continuous" and it["theta"] is not None
            else ("g", it["genotype"]) for it in items]
    first = {k: i for i, k in reversed(list(enumerate(keys)))}  # each distinct architecture's first item
    order = list(dict.fromkeys(keys))
    slot = {k: u for u, k in enumerate(order)}
    d = distance_matrix([arch_distributions(rv.layout, items[first[k]]["genotype"], items[first[k]]["theta"], space)
                         for k in order])
    x = orient(embed(d, seed), anchor=slot[keys[0]])
    points = tuple(MapPoint(**{k: v for k, v in it.items() if k != "theta"}, x=float(x[slot[key], 0]),
                            y=float(x[slot[key], 1])) for it, key in zip(items, keys))
    return ArchMap(rv.dir.name, space, seed, grid, points, {r: tuple(ix) for r, ix in paths.items()},
                   kruskal_stress(d, x), tuple(notes))


def map_stamp(run_dir: str | Path) -> tuple:
    """What a run's map depends on, cheaply (for a page's cache): α* and the hypernetworks
    (`RunDir.stamp`), each member's metrics.json and each baseline's baseline.json, by mtime."""
    run = RunDir(run_dir)
    files = [*(run.member(n).path / "metrics.json" for n in run.list_members()),
             *sorted(run.path.glob("baselines/*/baseline.json"))]
    return run.stamp() + tuple((str(f), f.stat().st_mtime_ns) for f in files if f.exists())


def path_position(amap: ArchMap, regularizer: str, lam: float | None = None, diversity: float | None = None
                  ) -> tuple[float, float]:
    """The map position (x, y) of α(λ) on a hypernetwork's path, for a slider's marker: linear
    between the two embedded grid points around λ (or around a place on the diversity axis), so it
    lies on the drawn path. ValueError for an unknown path or a value outside the path's range."""
    if regularizer not in amap.paths:
        raise ValueError(f"no path for {regularizer!r} on this map (paths: {', '.join(amap.paths) or 'none'})")
    if (lam is None) == (diversity is None):
        raise ValueError("give exactly one of lam and diversity")
    key, v = ("lam", float(lam)) if lam is not None else ("diversity", float(diversity))
    rows = sorted((getattr(amap.points[i], key), amap.points[i].x, amap.points[i].y) for i in amap.paths[regularizer])
    at = [r[0] for r in rows]
    slack = 1e-9 * max(1.0, abs(at[-1] - at[0]))
    if not at[0] - slack <= v <= at[-1] + slack:
        raise ValueError(f"{key} {v:g} lies outside the {regularizer} path's [{at[0]:g}, {at[-1]:g}]")
    return float(np.interp(v, at, [r[1] for r in rows])), float(np.interp(v, at, [r[2] for r in rows]))


# -- the figure ---------------------------------------------------------------------------------
_LAYOUT = dict(template="nes", margin=dict(l=10, r=10, t=70, b=10))  # "nes": registered by viz
STAR_COLOR = NEUTRAL  # legible on the light and the dark theme
NO_ACCURACY = "#AAAAAA"


def stress_words(stress: float) -> str:
    """How far to trust a map's distances, by Kruskal's (1964) reading of stress-1."""
    for bound, words in ((0.025, "distances drawn almost exactly"), (0.05, "distances drawn well"),
                         (0.1, "distances drawn fairly"), (0.2, "distances distorted: trust neighbours, not lengths")):
        if stress <= bound:
            return words
    return "distances poorly drawn: trust only which points are close"


def _hover(p: MapPoint) -> str:
    parts = [f"<b>{p.label}</b>"]
    if p.lam is not None:
        parts.append(f"λ = {p.lam:.4g}" + (f", diversity {p.diversity:.2f}" if p.diversity is not None else ""))
    if p.accuracy is not None:
        parts.append(f"test accuracy {p.accuracy:.2%}")
    return "<br>".join(parts + [p.genotype.compact()])


def _scored(points: Sequence[MapPoint], name: str, symbol: str, size: int, kind: str, text: bool = False
            ) -> list[go.Scatter]:
    """Markers of trained architectures: those with a test accuracy on the shared accuracy colour
    axis, the others grey (a second trace)."""
    traces = []
    for scored in (True, False):
        pts = [p for p in points if (p.accuracy is not None) == scored]
        if not pts:
            continue
        color = [p.accuracy for p in pts] if scored else NO_ACCURACY
        hollow = symbol.endswith("-open")  # an open marker's outline carries its colour
        traces.append(go.Scatter(
            x=[p.x for p in pts], y=[p.y for p in pts], mode="markers+text" if text else "markers",
            name=name if scored else f"{name} (no test accuracy yet)", text=[p.label for p in pts] if text else None,
            textposition="top center", hovertext=[_hover(p) for p in pts], hoverinfo="text",
            marker=dict(symbol=symbol, size=size, color=color, coloraxis="coloraxis" if scored else None,
                        line=dict(color=None if hollow else NEUTRAL, width=2 if hollow else 1)),
            meta={"kind": kind, "labels": [p.label for p in pts]}))
    return traces


def map_figure(amap: ArchMap, at: dict[str, float] | None = None, title: str | None = None) -> go.Figure:
    """The map: one line per hypernetwork's path (from its α* end), α* as a star, members (labelled
    circles) and baseline pools (open diamonds, one trace per pool: they show around α* and the members
    they coincide with) coloured by test accuracy, and with `at`
    ({regularizer: λ}) the slider's place on each named path as a ring. The title states the
    stress; the axes carry no units (only distances between points mean something)."""
    fig = go.Figure()
    for reg, ix in amap.paths.items():
        pts = [amap.points[i] for i in ix]
        fig.add_trace(go.Scatter(x=[p.x for p in pts], y=[p.y for p in pts], mode="lines+markers", name=f"α(λ), {reg}",
                                 hovertext=[_hover(p) for p in pts], hoverinfo="text", marker=dict(size=5),
                                 customdata=list(ix),  # a click names the point (nes.explorer.mapclick)
                                 meta={"kind": "path", "regularizer": reg}))
    star = amap.of_kind("alpha_star")[0]
    fig.add_trace(go.Scatter(x=[star.x], y=[star.y], mode="markers", name="α*", hovertext=[_hover(star)],
                             hoverinfo="text", marker=dict(symbol="star", size=28, color=STAR_COLOR),
                             meta={"kind": "alpha_star"}))
    pools = dict.fromkeys(p.pool for p in amap.of_kind("baseline"))
    for pool in pools:
        for t in _scored([p for p in amap.of_kind("baseline") if p.pool == pool], f"baseline {pool}", "diamond-open", 22,
                         "baseline"):
            fig.add_trace(t)
    for t in _scored(amap.of_kind("member"), "members", "circle", 13, "member", text=True):
        fig.add_trace(t)
    for reg, lam in (at or {}).items():
        x, y = path_position(amap, reg, lam=lam)
        fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=f"{reg} at λ = {lam:.3g}", hoverinfo="name",
                                 marker=dict(symbol="circle-open", size=22, color=DIFF_COLOR, line=dict(width=3)),
                                 meta={"kind": "marker", "regularizer": reg, "lam": lam}))
    sub = (f"metric MDS (seed {amap.seed}) of √(architecture JS), {amap.space} space: axes have no units, only "
           f"distances between points mean something" + (f"; {len(amap.notes)} left off" if amap.notes else ""))
    head = title or f"architecture map of {amap.run}"
    fig.update_layout(**_LAYOUT, height=520, legend=dict(orientation="h", y=-0.05),
                      title=dict(text=f"{head} — Kruskal stress-1 {amap.stress:.3f} ({stress_words(amap.stress)})"
                                      f"<br><sup>{sub}</sup>"),
                      coloraxis=dict(colorscale="Viridis", colorbar=dict(title="test accuracy", tickformat=".1%")),
                      xaxis=dict(showticklabels=False, zeroline=False, title=None),
                      yaxis=dict(showticklabels=False, zeroline=False, title=None, scaleanchor="x", scaleratio=1))
    fig.layout.meta = {"run": amap.run, "stress": amap.stress, "space": amap.space, "seed": amap.seed,
                       "grid": amap.grid, "notes": list(amap.notes),
                       "points": {k: len(amap.of_kind(k)) for k in KINDS}}
    return fig
