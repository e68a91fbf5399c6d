"""Diversity regularizers R(λ, α(λ); α*) for the hypernetwork (and the per-λ search), and what
their λ means (`AXES`: written once here, shown by every page and `--help`).

- `js`    (the paper): R = −λ · JS(p*, α(λ)) — larger λ pushes the architecture away from α*. Every
  λ > 0 pushes along the same gradient, so λ scales the push rather than setting a distance: a
  faithful but weak control (the paper's own Table 1 shows 1–2 matched ops for all λ = 5…40).
- `js-target` (beyond the paper): R = c · s² · (√λ − √JS_g(θ*, α(λ)))², with JS_g the distance to
  α* over genotype*'s kept edges and nodes (`divergence.StarDistance`, 0 at α*), λ ∈ [0, JS_max]
  the target distance (JS_max = `StarDistance.reachable()`, the farthest an architecture as
  confident as α* gets), s = Λ / √JS_max (so that its gradient is comparable to `edges`') and the
  same warm-up of c as `edges`. The square roots (√JS is the Jensen–Shannon distance, a metric)
  keep the push finite next to α*, where JS_g's own gradient vanishes: with (λ − JS_g)² a confident
  α* held the anchors near it and the distance plateaued at ≈ 0.13 for every λ.
  Plus an overconfidence term c · s² · w · mean_d max(0, H(p*_d) − H(q_d))² over the same
  distributions (`StarDistance.overconfidence`, w = `overconfidence_weight`): no distribution of
  α(λ) may grow more confident than α*'s. Without it the anchors' logits saturated on the edges α*
  is surest of (the CE loss sharpens them; a saturated softmax passes no JS gradient), those edges
  never changed, and the distance plateaued at 0.26–0.31 against targets up to 0.45–0.50, so the
  far half of the axis gave one genotype (3–6 distinct of 9 over 3 quick-preset seeds; with it
  5–6, the distance following λ to the far end). A two-sided version (also no flatter than α*)
  held the distance back instead (3–5 distinct).
- `edges` (the thesis and the original code): R = c · (λ − S(α(λ)))², where S is a smoothed count
  of the edges shared with genotype*:
      S = Σ_{edges j→i of genotype*} ⟨GS(α_{j→i}; t), p*_{j→i}⟩ · min(1, k · GS(β_i; t)_j)
  with Gumbel-softmax samples GS at temperature t. λ is the target number of shared edges.
  c rises linearly target_weight_start → target_weight_end and t falls t_start → t_end over training (warm-up).
p* = τ·onehot + (1−τ)/n are the smoothed distributions of genotype* (`ArchLayout.smoothed`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import REGULARIZERS
from .divergence import StarDistance, arch_js
from .space import ArchLayout, Genotype, edge_index



@dataclass(frozen=True)
class Axis:
    """What λ means for a regularizer, and which end of its range is α*."""

    lam: str  # the meaning of λ, one sentence
    star_end: str  # "lo" or "hi": the end of the λ range whose architecture is α*
    strength: str  # how well λ controls the distance to α*


AXES: dict[str, Axis] = {
    "edges": Axis("λ is the number of genotype*'s edges the architecture should share: λ = Λ (the largest "
                  "value) is α*, λ = 0 shares none", "hi", "exact: the count of shared edges follows λ"),
    "js-target": Axis("λ is the target distance JS_g to α* (over genotype*'s kept edges and nodes): λ = 0 is "
                      "α*, the largest value is the farthest an architecture as confident as α* can get", "lo",
                      "continuous: the distance to α* follows λ"),
    "js": Axis("λ weights the paper's push away from α* in Jensen–Shannon divergence: λ = 0 applies no push "
               "(α*), larger λ pushes harder", "lo",
               "weak: every λ > 0 pushes the same way, so λ scales the push and architectures often collapse "
               "to one genotype"),
}


def diversity_lam(regularizer: str, diversity: float, lo: float, hi: float) -> float:
    """The λ at position `diversity` ∈ [0, 1] of the one diversity axis (0 = α*, 1 = most diverse)."""
    d = min(max(float(diversity), 0.0), 1.0)
    return hi - d * (hi - lo) if AXES[check_regularizer(regularizer)].star_end == "hi" else lo + d * (hi - lo)


def lam_diversity(regularizer: str, lam: float, lo: float, hi: float) -> float:
    """Inverse of `diversity_lam`: where λ sits on the diversity axis (0 = α*, 1 = most diverse)."""
    d = (float(lam) - lo) / (hi - lo) if hi > lo else 0.0
    return 1.0 - d if AXES[check_regularizer(regularizer)].star_end == "hi" else d


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
        self.total = star.num_kept_edges()  # Λ

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
    """R(λ, θ) of any kind, with the warm-up of the target regularizers (`edges`, `js-target`)
    driven by training progress ∈ [0, 1]. `js-target` needs α*'s logits `theta_star`."""

    def __init__(self, name: str, layout: ArchLayout, star: Genotype, tau: float = 0.99,
                 warmup: Warmup = Warmup(), theta_star: torch.Tensor | None = None, overconfidence_weight: float = 0.0):
        self.name = check_regularizer(name)
        self.layout = layout
        self.star_dists = layout.smoothed_distributions(star, tau)
        self.shared = SharedEdges(layout, star, tau)
        self.warmup = warmup
        self.distance: StarDistance | None = None
        self.overconfidence_weight = float(overconfidence_weight)
        if not self.overconfidence_weight >= 0:
            raise ValueError(f"overconfidence_weight must be ≥ 0 (got {overconfidence_weight}); 0 turns the confidence term off")
        if name == "js-target":
            if theta_star is None:
                raise ValueError("the js-target regularizer needs α*'s logits (theta_star)")
            self.distance = StarDistance(layout, star, theta_star)
            self.scale = star.num_kept_edges() / self.distance.reachable() ** 0.5  # s = Λ / √JS_max

    def to(self, device: torch.device) -> "Regularizer":
        self.star_dists = [d.to(device) for d in self.star_dists]
        self.shared.to(device)
        if self.distance is not None:
            self.distance.to(device)
        return self

    def __call__(self, lam: float | torch.Tensor, theta: torch.Tensor, progress: float | torch.Tensor) -> torch.Tensor:
        if self.name == "js":
            return -lam * js_to_star(self.layout, theta, self.star_dists)
        c, t = self.warmup.at(progress)
        if self.distance is not None:  # the 1e-8 keeps the gradient finite (zero) at α* itself
            target = torch.as_tensor(lam, dtype=theta.dtype, device=theta.device).clamp(min=0.0).sqrt()
            r = c * self.scale ** 2 * (target - (self.distance(theta) + 1e-8).sqrt()) ** 2
            if self.overconfidence_weight:  # no distribution more confident than α*'s (saturated: no gradient)
                r = r + c * self.scale ** 2 * self.overconfidence_weight * self.distance.overconfidence(theta)
            return r
        return c * (lam - self.shared(theta, t)) ** 2
