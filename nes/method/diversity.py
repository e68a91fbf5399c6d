"""Sampling architectures from a hypernetwork and measuring their diversity.

For each λ: θ = α(λ), its genotype (top-k inputs, argmax ops), the number of edges it shares
with genotype*, and the architecture JS between softmax(θ) and genotype*'s smoothed
distributions p*. Pairwise architecture JS between samples uses the same definition (mean over
all edge-op and node-input distributions of both cell types; natural log, so 0 ≤ JS ≤ ln 2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .divergence import StarDistance, arch_js
from .regularizers import lam_diversity
from .flaws import structural_flaws
from .space import ArchLayout, Genotype


@dataclass(frozen=True)
class ArchSample:
    lam: float
    theta: torch.Tensor  # [layout.size] logits
    genotype: Genotype
    matched_edges: int  # edges shared with genotype*
    js_to_star: float  # architecture JS to genotype*'s smoothed distributions (over every edge)
    distance: float | None = None  # JS_g to α* over genotype*'s kept edges and nodes (0 at α*)
    diversity: float | None = None  # position on the diversity axis: 0 = α*, 1 = most diverse

    def to_dict(self) -> dict:
        """JSON form used by `python -m nes sample --json` (θ left out)."""
        return {"lam": self.lam, "diversity": self.diversity, "matched_edges": self.matched_edges,
                "distance": self.distance, "js_to_star": self.js_to_star,
                "genotype": self.genotype.to_dict(), "compact": self.genotype.compact()}


@torch.no_grad()
def sample_architectures(hyper: torch.nn.Module, layout: ArchLayout, star: Genotype, lams: Sequence[float],
                         tau: float = 0.99, theta_star: torch.Tensor | None = None,
                         regularizer: str | None = None) -> list[ArchSample]:
    """α(λ) for every λ (ValueError if a λ lies outside the trained range). With α*'s logits,
    each sample also gets its distance to α*; with the regularizer, its place on the diversity
    axis (over the hypernetwork's target range [λ_min, λ_max], `LamRange.target`)."""
    lams = [float(x) for x in lams]
    if not lams:
        raise ValueError("no λ values given")
    thetas = hyper(torch.tensor(lams)).float().cpu()  # [n, s]
    star_d = layout.smoothed_distributions(star, tau)
    dist = StarDistance(layout, star, theta_star) if theta_star is not None else None
    lam_range = getattr(hyper, "lam_range", None)
    out = []
    for lam, th in zip(lams, thetas):
        g = layout.discretize(th)
        div = lam_diversity(regularizer, lam, *lam_range.target) if regularizer and lam_range else None
        out.append(ArchSample(lam, th, g, g.matched_edges(star), float(arch_js(layout.distributions(th), star_d)),
                              float(dist(th)) if dist is not None else None, div))
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank); nan when either side is constant."""
    def ranks(v: Sequence[float]) -> torch.Tensor:
        t = torch.tensor([float(a) for a in v], dtype=torch.float64)
        return torch.tensor([float((t < a).sum()) + (float((t == a).sum()) - 1) / 2 for a in t], dtype=torch.float64)

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float((rx.square().sum() * ry.square().sum()).sqrt())
    return float((rx * ry).sum()) / den if den > 0 else float("nan")


def grid_quality(samples: Sequence[ArchSample]) -> dict[str, float | int | None]:
    """How well a hypernetwork controls diversity, from samples along its diversity axis:
    distinct genotypes, Spearman ρ of the distance to α* vs the axis position, and the distance
    and shared edges at the α* end."""
    ordered = sorted(samples, key=lambda s: s.diversity if s.diversity is not None else s.lam)
    dists = [s.distance for s in ordered]
    has = all(d is not None for d in dists) and all(s.diversity is not None for s in ordered)
    rho = spearman([s.diversity for s in ordered], dists) if has and len(ordered) > 2 else None
    return {"samples": len(ordered), "distinct": len({s.genotype for s in ordered}),
            "rho": None if rho is None or math.isnan(rho) else round(rho, 4),
            "star_end_distance": ordered[0].distance if has else None,
            "star_end_matched": ordered[0].matched_edges, "edges": ordered[0].genotype.num_kept_edges()}


def edge_tracking(samples: Sequence[ArchSample]) -> dict[str, float | int]:
    """How closely the `edges` axis follows its target, λ = the number of α*'s edges to share: the
    grid points whose matched edges are the nearest whole number to λ (|matched − λ| ≤ ½) and the
    largest |matched − λ| over the grid, in edges."""
    off = [abs(s.matched_edges - s.lam) for s in samples]
    return {"points": len(off), "on_target": sum(o <= 0.5 + 1e-9 for o in off), "max_off": round(max(off, default=0.0), 3)}


def collapse_warning(quality: dict, wanted: int, regularizer: str) -> str | None:
    """A message when the grid has fewer distinct genotypes than the members asked for."""
    n = quality.get("distinct", 0)
    if n >= wanted:
        return None
    return (f"the {regularizer} hypernetwork gives only {n} distinct genotype(s) on its {quality.get('samples')}-point "
            f"λ grid, fewer than the {wanted} members asked for: an ensemble of them would repeat architectures. "
            "Train it longer (--set epochs=…), use the js-target or edges regularizer, or ask for fewer members.")


def lam_grid(lo: float, hi: float, n: int) -> list[float]:
    """n evenly spaced λ from lo to hi (both included; [lo] if n == 1)."""
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)] if n > 1 else [lo]


def unique_genotypes(samples: Sequence[ArchSample]) -> list[tuple[Genotype, list[float]]]:
    """Distinct genotypes in first-seen order, each with the λ values that produced it."""
    seen: dict[Genotype, list[float]] = {}
    for s in samples:
        seen.setdefault(s.genotype, []).append(s.lam)
    return list(seen.items())


def pick_members(samples: Sequence[ArchSample], n: int, star: Genotype, layers: int | None = None) -> list[ArchSample]:
    """n members for an ensemble, chosen from the architectures alone (never from accuracies):
    the sample nearest the α* end first, then n − 1 distinct genotypes other than α*: for each
    target 1/(n−1), …, 1 on the diversity axis, the nearest sample not taken yet. With `layers`
    (the members' cells), a genotype with a structural flaw (`structural_flaws`: a cell unused, a
    cell without a convolution) is taken only once no other is left. Fewer than n come back when
    the samples hold fewer distinct genotypes."""
    if n < 1 or not samples:
        return []
    ordered = sorted(samples, key=lambda s: s.diversity or 0.0)
    seen, distinct = {star, ordered[0].genotype}, []  # the α* end (α* itself when pinned) is taken
    for s in ordered:
        if s.genotype not in seen:
            seen.add(s.genotype)
            distinct.append(s)
    good, weak = [], []
    for s in distinct:
        (weak if layers is not None and structural_flaws(s.genotype, layers) else good).append(s)
    chosen: list[ArchSample] = []
    for i in range(n - 1):
        pool = good or weak  # each genotype once (distinct above), so a taken one is removed from its list
        if not pool:
            break
        target = (i + 1) / (n - 1)
        chosen.append(pool.pop(min(range(len(pool)), key=lambda k: abs((pool[k].diversity or 0.0) - target))))
    return [ordered[0]] + sorted(chosen, key=lambda s: s.diversity or 0.0)
