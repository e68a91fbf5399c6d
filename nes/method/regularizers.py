"""Diversity regularizers R(λ, α(λ); α*) for the hypernetwork (and the per-λ search), what their λ
means (`AXES`: written once here, shown by every page and `--help`) and the λ ranges a
hypernetwork is trained on (`LamRange`).

One class per regularizer, in `REGULARIZERS` (keyed like `AXES`):
- `edges` (the thesis and the original code): R = c · (λ − S(α(λ)))², where S is a smoothed count
  of the edges shared with genotype*:
      S = Σ_{edges j→i of genotype*} ⟨GS(α_{j→i}; t), p*_{j→i}⟩ · min(1, k · GS(β_i; t)_j)
  with Gumbel-softmax samples GS at temperature t. λ is the target number of shared edges.
- `js-target` (beyond the paper): R = c · s² · (√λ − √JS_g(θ*, α(λ)))² + c · s² · w · mean_d
  max(0, H(p*_d) − H(q_d))². JS_g is the distance to α* over genotype*'s kept edges and nodes
  (`divergence.StarDistance`, 0 at α*) and λ ∈ [0, JS_max] the target distance, JS_max =
  `StarDistance.reachable()` the farthest an architecture as confident as α* gets; s = Λ / √JS_max
  makes its gradient comparable to `edges`'. The square roots (√JS is the Jensen–Shannon distance,
  a metric) keep the push finite next to α*, where JS_g's own gradient vanishes. The second term
  (`StarDistance.overconfidence`, w = `overconfidence_weight`) keeps every distribution q_d of α(λ)
  no more confident than α*'s p*_d: a saturated softmax passes no JS gradient, so a distribution
  that saturates would never move again.
- `js` (the paper): R = −λ · JS(p*, α(λ)) — larger λ pushes the architecture away from α*. Every
  λ > 0 pushes along the same gradient, so λ scales the push rather than setting a distance: a
  faithful but weak control.
For the two target regularizers c rises linearly target_weight_start → target_weight_end and t
falls t_start → t_end over training (`Warmup`). p* = τ·onehot + (1−τ)/n are the smoothed
distributions of genotype* (`ArchLayout.smoothed`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import REGULARIZER_NAMES, HypernetConfig
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
                  "value) is α*, λ = 0 shares none", "hi", "close, not exact: the count of shared edges follows λ, "
                  "off by up to about 2 edges"),
    "js-target": Axis("λ is the target distance JS_g to α* (over genotype*'s kept edges and nodes): λ = 0 is "
                      "α*, the largest value is the farthest an architecture as confident as α* can get", "lo",
                      "continuous: the distance to α* follows λ"),
    "js": Axis("λ weights the paper's push away from α* in Jensen–Shannon divergence: λ = 0 applies no push "
               "(α*), larger λ pushes harder", "lo",
               "weak: every λ > 0 pushes the same way, so λ scales the push and architectures often collapse "
               "to one genotype"),
}


def diversity_lam(regularizer: str, diversity: float, lo: float, hi: float) -> float:
    """The λ at position `diversity` ∈ [0, 1] of the one diversity axis (0 = α*, 1 = most diverse)
    over the target range [lo, hi] = [λ_min, λ_max]."""
    d = min(max(float(diversity), 0.0), 1.0)
    return hi - d * (hi - lo) if AXES[check_regularizer(regularizer)].star_end == "hi" else lo + d * (hi - lo)


def lam_diversity(regularizer: str, lam: float, lo: float, hi: float) -> float:
    """Inverse of `diversity_lam`: where λ sits on the diversity axis (0 = α*, 1 = most diverse)."""
    d = (float(lam) - lo) / (hi - lo) if hi > lo else 0.0
    return 1.0 - d if AXES[check_regularizer(regularizer)].star_end == "hi" else d


def check_regularizer(name: str) -> str:
    if name not in REGULARIZER_NAMES:
        raise ValueError(f"unknown regularizer {name!r}; choose one of {', '.join(REGULARIZER_NAMES)}")
    return name


@dataclass(frozen=True)
class LamRange:
    """The two λ ranges of a hypernetwork.

    target [lam_min, lam_max]: the λ the regularizer is asked for and the diversity axis spans
    (grids, pages and members sample it). trained [trained_min, trained_max]: the λ training draws
    and the outer pivots sit on — the target widened by a margin ε at each end that is not pinned
    to α*, so that the anchors at the target's ends are trained from both sides. Saved as
    `lam_min`, `lam_max`, `lam_eps` in hypernet.safetensors' metadata and the trained ends as its
    `lam_range` tensor."""

    lam_min: float
    lam_max: float
    trained_min: float
    trained_max: float

    def __post_init__(self) -> None:
        if not self.trained_max > self.trained_min:
            raise ValueError(f"empty λ range [{self.trained_min}, {self.trained_max}]")

    @classmethod
    def exact(cls, lo: float, hi: float) -> "LamRange":
        """A range trained on its target alone (no margins)."""
        return cls(float(lo), float(hi), float(lo), float(hi))

    @classmethod
    def from_config(cls, cfg: HypernetConfig, star: Genotype, default_max: float | None = None) -> "LamRange":
        """The ranges of `cfg`: λ_max is cfg.lam_max, else `default_max` (the regularizer's
        `default_lam_max()`; Λ when not given, as for edges and js). ε = lam_eps · range / Λ, none
        at the end that is α* when `pin_star` (`pinned_end`)."""
        if cfg.lam_max is not None:
            lam_max = float(cfg.lam_max)
        elif cfg.regularizer == "js-target" and default_max is None:
            raise ValueError("js-target: the λ range needs the largest distance to α* (StarDistance.reachable())")
        else:
            lam_max = float(star.num_kept_edges() if default_max is None else default_max)
        lam_min = float(cfg.lam_min)
        eps = cfg.lam_eps * (lam_max - lam_min) / star.num_kept_edges()
        pin = pinned_end(cfg)
        return cls(lam_min, lam_max, lam_min - (0.0 if pin == "lo" else eps), lam_max + (0.0 if pin == "hi" else eps))

    @property
    def target(self) -> tuple[float, float]:
        return self.lam_min, self.lam_max

    @property
    def trained(self) -> tuple[float, float]:
        return self.trained_min, self.trained_max

    @property
    def margin(self) -> float:
        """ε: the margin at the end that has one (saved as `lam_eps`)."""
        return self.trained_max - self.lam_max if self.trained_max > self.lam_max else self.lam_min - self.trained_min


def pinned_end(cfg: HypernetConfig) -> str | None:
    """"lo" / "hi": the end of the λ range whose anchor stays α*'s logits (None without `pin_star`)."""
    return AXES[check_regularizer(cfg.regularizer)].star_end if cfg.pin_star else None


@dataclass(frozen=True)
class Warmup:
    """Linear schedules of the target regularizers' weight c and Gumbel temperature t."""

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
    """R(λ, θ, progress) → scalar: what the search loop adds to the validation loss. λ and the
    progress ∈ [0, 1] may be floats or 0-d device tensors (a replayed CUDA graph)."""

    name: str

    def __init__(self, star: Genotype):
        self.kept_edges = star.num_kept_edges()  # Λ

    @classmethod
    def from_config(cls, cfg: HypernetConfig, layout: ArchLayout, star: Genotype,
                    theta_star: torch.Tensor) -> "Regularizer":
        """The regularizer `cfg` trains with (the search's layout, genotype* and α*'s logits θ*)."""
        raise NotImplementedError

    def default_lam_max(self) -> float:
        """λ_max when the config sets none: the far end of the regularizer's axis (Λ by default)."""
        return float(self.kept_edges)

    def to(self, device: torch.device) -> "Regularizer":
        return self

    def __call__(self, lam: float | torch.Tensor, theta: torch.Tensor, progress: float | torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class EdgesRegularizer(Regularizer):
    """`edges`: R = c · (λ − S(θ))², S the smoothed count of genotype*'s edges θ shares."""

    name = "edges"

    def __init__(self, layout: ArchLayout, star: Genotype, tau: float = 0.99, warmup: Warmup = Warmup()):
        super().__init__(star)
        self.shared, self.warmup = SharedEdges(layout, star, tau), warmup

    @classmethod
    def from_config(cls, cfg: HypernetConfig, layout: ArchLayout, star: Genotype,
                    theta_star: torch.Tensor) -> "EdgesRegularizer":
        return cls(layout, star, cfg.tau, warmup_of(cfg))

    def to(self, device: torch.device) -> "EdgesRegularizer":
        self.shared.to(device)
        return self

    def __call__(self, lam: float | torch.Tensor, theta: torch.Tensor,
                 progress: float | torch.Tensor) -> torch.Tensor:
        c, t = self.warmup.at(progress)
        return c * (lam - self.shared(theta, t)) ** 2


class JsTargetRegularizer(Regularizer):
    """`js-target`: R = c · s² · (√λ − √JS_g(θ*, θ))² + c · s² · w · overconfidence(θ), s = Λ / √JS_max."""

    name = "js-target"

    def __init__(self, layout: ArchLayout, star: Genotype, theta_star: torch.Tensor, warmup: Warmup = Warmup(),
                 overconfidence_weight: float = 0.0):
        super().__init__(star)
        self.overconfidence_weight = float(overconfidence_weight)
        if not self.overconfidence_weight >= 0:
            raise ValueError(f"overconfidence_weight must be ≥ 0 (got {overconfidence_weight}); 0 turns the confidence term off")
        self.warmup = warmup
        self.distance = StarDistance(layout, star, theta_star)
        self.scale = self.kept_edges / self.distance.reachable() ** 0.5  # s = Λ / √JS_max

    @classmethod
    def from_config(cls, cfg: HypernetConfig, layout: ArchLayout, star: Genotype,
                    theta_star: torch.Tensor) -> "JsTargetRegularizer":
        return cls(layout, star, theta_star, warmup_of(cfg), cfg.overconfidence_weight)

    def default_lam_max(self) -> float:
        """JS_max: the farthest an architecture as confident as α* gets."""
        return float(self.distance.reachable())

    def to(self, device: torch.device) -> "JsTargetRegularizer":
        self.distance.to(device)
        return self

    def __call__(self, lam: float | torch.Tensor, theta: torch.Tensor,
                 progress: float | torch.Tensor) -> torch.Tensor:
        c, _ = self.warmup.at(progress)
        target = torch.as_tensor(lam, dtype=theta.dtype, device=theta.device).clamp(min=0.0).sqrt()
        # the 1e-8 keeps the gradient finite (zero) at α* itself
        r = c * self.scale ** 2 * (target - (self.distance(theta) + 1e-8).sqrt()) ** 2
        if self.overconfidence_weight:
            r = r + c * self.scale ** 2 * self.overconfidence_weight * self.distance.overconfidence(theta)
        return r


class JsRegularizer(Regularizer):
    """`js` (the paper): R = −λ · JS(p*, softmax θ) over every distribution of the architecture."""

    name = "js"

    def __init__(self, layout: ArchLayout, star: Genotype, tau: float = 0.99):
        super().__init__(star)
        self.layout, self.star_dists = layout, layout.smoothed_distributions(star, tau)

    @classmethod
    def from_config(cls, cfg: HypernetConfig, layout: ArchLayout, star: Genotype,
                    theta_star: torch.Tensor) -> "JsRegularizer":
        return cls(layout, star, cfg.tau)

    def to(self, device: torch.device) -> "JsRegularizer":
        self.star_dists = [d.to(device) for d in self.star_dists]
        return self

    def __call__(self, lam: float | torch.Tensor, theta: torch.Tensor,
                 progress: float | torch.Tensor) -> torch.Tensor:
        return -lam * js_to_star(self.layout, theta, self.star_dists)


def warmup_of(cfg: HypernetConfig) -> Warmup:
    """The warm-up of the target regularizers' weight and temperature set in `cfg`."""
    return Warmup(cfg.target_weight_start, cfg.target_weight_end, cfg.t_start, cfg.t_end)


# name → class, keyed like `AXES`, in the order of `config.REGULARIZER_NAMES` (pages and --help list them so)
REGULARIZERS: dict[str, type[Regularizer]] = {"js": JsRegularizer, "edges": EdgesRegularizer,
                                              "js-target": JsTargetRegularizer}
