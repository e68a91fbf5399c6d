"""Jensen–Shannon divergences between architectures (natural log, so 0 ≤ JS ≤ ln 2).

The architecture JS of two θ (or of a θ and a genotype's smoothed distributions p*) is the mean,
over every categorical distribution of both cell types (each edge's 7 ops, each node's inputs),
of JS(p, p'). The same definition serves the regularizer, the diversity curves, the heatmaps and
the export's architecture-JS matrix.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

from .space import ArchLayout, Genotype, edge_index


def js_divergence(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Jensen–Shannon divergence (natural log) along the last dim; 0 ≤ JS ≤ ln 2."""
    m = 0.5 * (p + q)
    kl_pm = (p * (torch.log(p + eps) - torch.log(m + eps))).sum(-1)
    kl_qm = (q * (torch.log(q + eps) - torch.log(m + eps))).sum(-1)
    return (0.5 * (kl_pm + kl_qm)).clamp(0.0, math.log(2.0))

def entropy(p: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Shannon entropy (natural log) along the last dim."""
    return -(p * torch.log(p + eps)).sum(-1)


def arch_js(p_dists: Iterable[torch.Tensor], q_dists: Iterable[torch.Tensor]) -> torch.Tensor:
    """Architecture JS: mean over all categorical distributions of JS(p, p')."""
    vals = [js_divergence(p, q) for p, q in zip(p_dists, q_dists, strict=True)]
    return torch.stack(vals).mean()


@torch.no_grad()
def pairwise_arch_js(layout: ArchLayout, thetas: Sequence[torch.Tensor]) -> torch.Tensor:
    """[n, n] architecture JS between softmax(θ_i) and softmax(θ_j): symmetric, zero diagonal."""
    dists = [layout.distributions(t.float().cpu()) for t in thetas]
    n = len(dists)
    m = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            m[i, j] = m[j, i] = float(arch_js(dists[i], dists[j]))
    return m


def layout_for(gs: Sequence[Genotype]) -> ArchLayout | None:
    """One α layout that fits every genotype (None if their cells or node counts differ)."""
    if len({(g.cell_types, g.nodes) for g in gs}) != 1:
        return None
    k = max(len(node) for g in gs for ct in g.cell_types for node in g.cell(ct))
    return ArchLayout(nodes=gs[0].nodes, cell_types=gs[0].cell_types, inputs_per_node=k)


def genotype_js_matrix(genotypes: Sequence[Genotype], tau: float = 0.99) -> list[list[float]] | None:
    """Pairwise architecture JS between the genotypes' smoothed distributions (as in DESIGN.md)."""
    layout = layout_for(genotypes)
    if layout is None:
        return None
    d = [layout.smoothed_distributions(g, tau) for g in genotypes]
    n = len(d)
    m = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            m[i][j] = m[j][i] = round(float(arch_js(d[i], d[j])), 6)
    return m


class StarDistance:
    """JS_g(θ*, θ): the distance to α* measured where genotype* lives.

    The mean, over genotype*'s kept edges (their op distributions) and over its nodes (their input
    distributions), of JS(softmax θ*, softmax θ), θ* being α*'s logits; so JS_g(θ*, θ*) = 0 by
    construction. (The architecture JS over every distribution also counts the edges genotype*
    does not keep, whose uniform mass gives α* a non-zero score against itself.) Differentiable in θ.
    """

    def __init__(self, layout: ArchLayout, star: Genotype, theta_star: torch.Tensor) -> None:
        self.layout = layout
        ref = layout.split(theta_star.detach().float())
        self.parts = {}
        for ct, (alpha, betas) in ref.items():
            e_idx = torch.tensor([edge_index(i, inp) for ct_, i, inp, _ in star.edges() if ct_ == ct])
            self.parts[ct] = (e_idx, torch.softmax(alpha[e_idx], -1), [torch.softmax(b, -1) for b in betas])

    def to(self, device: torch.device) -> "StarDistance":
        self.parts = {ct: (e.to(device), p.to(device), [b.to(device) for b in bs]) for ct, (e, p, bs) in self.parts.items()}
        return self

    def _per_distribution(self, theta: torch.Tensor, fn) -> torch.Tensor:
        """fn(softmax θ, softmax θ*) for each of genotype*'s kept edges' op distributions and its
        nodes' input distributions → [..., number of distributions]."""
        vals = []
        for ct, (alpha, betas) in self.layout.split(theta).items():
            e_idx, p_ops, p_inputs = self.parts[ct]
            vals.append(fn(torch.softmax(alpha[..., e_idx, :], -1), p_ops))  # [..., Λ_c]
            vals.append(torch.stack([fn(torch.softmax(b, -1), p) for b, p in zip(betas, p_inputs)], -1))
        return torch.cat(vals, -1)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """JS_g for θ [size] (scalar) or θ [n, size] ([n])."""
        return self._per_distribution(theta, js_divergence).mean(-1)

    def overconfidence(self, theta: torch.Tensor) -> torch.Tensor:
        """Mean over the same distributions of max(0, H(softmax θ*) − H(softmax θ))²: how much more
        confident than α*'s the distributions of θ are (0 when none is). Differentiable in θ."""
        gap = self._per_distribution(theta, lambda q, p: entropy(p) - entropy(q))
        return torch.relu(gap).pow(2).mean(-1)

    def reachable(self) -> float:
        """JS_max: the distance of the farthest architecture as confident as α* — per distribution,
        JS to α*'s own probabilities in reverse order (its strongest op or input on its weakest).
        The js-target range ends here rather than at the one-hot vertices (which need infinite
        logits) because trained architectures stay about as confident as α* (the overconfidence
        term keeps them so), so a farther target would not be reached."""
        def reversed_js(p: torch.Tensor) -> float:
            order = torch.argsort(p)
            q = torch.empty_like(p)
            q[order] = p[order.flip(0)]
            return float(js_divergence(p, q))
        return self._mean_over_distributions(reversed_js)

    def _mean_over_distributions(self, per_dist) -> float:
        vals = [per_dist(p) for _, p_ops, p_inputs in self.parts.values() for p in [*p_ops.unbind(0), *p_inputs]]
        return sum(vals) / len(vals)
