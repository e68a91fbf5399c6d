"""Diversity regularizers R(λ, α(λ); α*) for the hypernetwork (and the per-λ search).

- `js`    (the paper): R = −λ · JS(p*, α(λ)) — larger λ pushes the architecture away from α*.
- `edges` (the thesis and the original code): R = c · (λ − S(α(λ)))², where S is a smoothed count
  of the edges shared with genotype*:
      S = Σ_{edges j→i of genotype*} ⟨GS(α_{j→i}; t), p*_{j→i}⟩ · min(1, k · GS(β_i; t)_j)
  with Gumbel-softmax samples GS at temperature t. λ is the target number of shared edges.
  c rises linearly edges_weight_start → edges_weight_end and t falls t_start → t_end over training (warm-up).
p* = τ·onehot + (1−τ)/n are the smoothed distributions of genotype* (`ArchLayout.smoothed`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .divergence import arch_js
from .space import ArchLayout, Genotype, edge_index

REGULARIZERS = ("js", "edges")


def check_regularizer(name: str) -> str:
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {name!r}; choose one of {', '.join(REGULARIZERS)}")
    return name


@dataclass(frozen=True)
class Warmup:
    """Linear schedules of the `edges` regularizer's weight c and Gumbel temperature t."""

    weight_start: float = 0.3
    weight_end: float = 3.0
    t_start: float = 1.0
    t_end: float = 0.05

    def at(self, progress: float | torch.Tensor) -> tuple[float, float] | tuple[torch.Tensor, torch.Tensor]:
        """(c, t) at `progress` ∈ [0, 1]: floats, or 0-d tensors for a tensor progress (a CUDA
        graph reads it from a buffer)."""
        p = progress.clamp(0.0, 1.0) if torch.is_tensor(progress) else min(max(progress, 0.0), 1.0)
        return self.weight_start + (self.weight_end - self.weight_start) * p, self.t_start + (self.t_end - self.t_start) * p


def js_to_star(layout: ArchLayout, theta: torch.Tensor, star_dists: list[torch.Tensor]) -> torch.Tensor:
    """Architecture JS between softmax(θ) and genotype*'s smoothed distributions (scalar)."""
    return arch_js(layout.distributions(theta), star_dists)


class SharedEdges:
    """S(θ): the smoothed number of genotype*'s edges that θ shares (see module docstring).

    Precomputes, per cell type, genotype*'s edge indices [Λ_c], node of each [Λ_c], input [Λ_c]
    and the smoothed op distributions p* on those edges [Λ_c, 7]."""

    def __init__(self, layout: ArchLayout, star: Genotype, tau: float = 0.99):
        self.layout = layout
        smoothed = layout.smoothed(star, tau)
        self.parts = {}
        for ct in layout.cell_types:
            edges = [(i, inp, op) for ct_, i, inp, op in star.edges() if ct_ == ct]
            e_idx = torch.tensor([edge_index(i, inp) for i, inp, _ in edges])
            self.parts[ct] = (e_idx, [i for i, _, _ in edges], [inp for _, inp, _ in edges], smoothed[ct][0][e_idx])
        self.total = star.num_edges()  # Λ

    def to(self, device: torch.device) -> "SharedEdges":
        """Move the precomputed index and p* tensors once (not on every call)."""
        self.parts = {ct: (e.to(device), n, i, p.to(device)) for ct, (e, n, i, p) in self.parts.items()}
        return self

    def __call__(self, theta: torch.Tensor, temperature: float | torch.Tensor, noise: bool = True) -> torch.Tensor:
        """S for θ [size]: Gumbel-softmax samples at `temperature` (plain tempered softmax if not noise)."""
        k = self.layout.inputs_per_node
        total = theta.new_zeros(())

        def gs(logits: torch.Tensor) -> torch.Tensor:
            if noise:
                return F.gumbel_softmax(logits, tau=temperature, hard=False, dim=-1)
            return torch.softmax(logits / temperature, dim=-1)

        for ct, (alpha, betas) in self.layout.split(theta).items():
            e_idx, nodes, inps, p_star = self.parts[ct]
            op_match = (gs(alpha[e_idx]) * p_star).sum(-1)  # [Λ_c]
            node_gs = [gs(b) for b in betas]  # one sample per node, shared by its edges
            inp_w = torch.stack([torch.clamp(k * node_gs[i][j], max=1.0) for i, j in zip(nodes, inps)])
            total = total + (op_match * inp_w).sum()
        return total


class Regularizer:
    """R(λ, θ) of either kind, with the warm-up of `edges` driven by training progress ∈ [0, 1]."""

    def __init__(self, name: str, layout: ArchLayout, star: Genotype, tau: float = 0.99,
                 warmup: Warmup = Warmup()):
        self.name = check_regularizer(name)
        self.layout = layout
        self.star_dists = layout.smoothed_distributions(star, tau)
        self.shared = SharedEdges(layout, star, tau)
        self.warmup = warmup

    def to(self, device: torch.device) -> "Regularizer":
        self.star_dists = [d.to(device) for d in self.star_dists]
        self.shared.to(device)
        return self

    def __call__(self, lam: float | torch.Tensor, theta: torch.Tensor, progress: float | torch.Tensor) -> torch.Tensor:
        if self.name == "js":
            return -lam * js_to_star(self.layout, theta, self.star_dists)
        c, t = self.warmup.at(progress)
        return c * (lam - self.shared(theta, t)) ** 2
