"""Sampling architectures from a hypernetwork and measuring their diversity.

For each λ: θ = α(λ), its genotype (top-k inputs, argmax ops), the number of edges it shares
with genotype*, and the architecture JS between softmax(θ) and genotype*'s smoothed
distributions p*. Pairwise architecture JS between samples uses the same definition (mean over
all edge-op and node-input distributions of both cell types; natural log, so 0 ≤ JS ≤ ln 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .divergence import arch_js
from .space import ArchLayout, Genotype


@dataclass(frozen=True)
class ArchSample:
    lam: float
    theta: torch.Tensor  # [layout.size] logits
    genotype: Genotype
    matched_edges: int  # edges shared with genotype*
    js_to_star: float

    def to_dict(self) -> dict:
        """JSON form used by `python -m nes sample --json` (θ left out)."""
        return {"lam": self.lam, "matched_edges": self.matched_edges, "js_to_star": self.js_to_star,
                "genotype": self.genotype.to_dict(), "compact": self.genotype.compact()}


@torch.no_grad()
def sample_architectures(hyper: torch.nn.Module, layout: ArchLayout, star: Genotype,
                         lams: Sequence[float], tau: float = 0.99) -> list[ArchSample]:
    """α(λ) for every λ (ValueError if a λ lies outside the trained range)."""
    lams = [float(x) for x in lams]
    if not lams:
        raise ValueError("no λ values given")
    thetas = hyper(torch.tensor(lams)).float().cpu()  # [n, s]
    star_d = layout.smoothed_distributions(star, tau)
    out = []
    for lam, th in zip(lams, thetas):
        g = layout.discretize(th)
        out.append(ArchSample(lam, th, g, g.matched_edges(star), float(arch_js(layout.distributions(th), star_d))))
    return out


def lam_grid(lo: float, hi: float, n: int) -> list[float]:
    """n evenly spaced λ from lo to hi (both included; [lo] if n == 1)."""
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)] if n > 1 else [lo]


def unique_genotypes(samples: Sequence[ArchSample]) -> list[tuple[Genotype, list[float]]]:
    """Distinct genotypes in first-seen order, each with the λ values that produced it."""
    seen: dict[Genotype, list[float]] = {}
    for s in samples:
        seen.setdefault(s.genotype, []).append(s.lam)
    return list(seen.items())
