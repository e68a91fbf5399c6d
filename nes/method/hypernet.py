"""The piecewise-linear hypernetwork α(λ), its training, and the per-λ search.

α(λ): K anchors a_0..a_{K−1} ∈ R^s and pivots r_0 < … < r_{K−1}; r_0 and r_{K−1} are fixed at
the ends of the trained λ range [λ_min − ε, λ_max + ε], the interior pivots are trainable and stay
sorted (cumulative softplus increments). For λ ∈ [r_k, r_{k+1}], t = (λ − r_k)/(r_{k+1} − r_k) and
α(λ) = (1 − t)·a_k + t·a_{k+1}, so α(r_k) = a_k exactly.

Training reuses `nes.method.bilevel.train_bilevel`: each step draws λ ~ U(λ_min − ε, λ_max + ε), takes an
architecture step on L_val(w, α(λ)) + R(λ, α(λ)) w.r.t. the hypernetwork and a weight step on
L_train(w, α(λ)) with the same λ. Files: RUN/hypernet/{js,edges}/ (hypernet.safetensors,
checkpoint.safetensors, config.json, history.json, curve.json); the per-λ search writes
RUN/fixed_lambda/lam_X/ (arch.safetensors, genotype.json, ...).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from ..artifacts import ArtifactError, load_tensors, save_tensors, write_json
from ..config import INHERITED_FROM_SEARCH, HypernetConfig, from_preset, to_dict
from ..layout import RunDir
from ..runtime import configure_threads, resolve_device
from .bilevel import ArchModule, Progress, SearchResult, build_supernet, prepare_search_data, train_bilevel
from .darts import DartsArch, load_search
from .diversity import lam_grid, sample_architectures
from .regularizers import REGULARIZERS, Regularizer, Warmup, check_regularizer
from .space import ArchLayout, Genotype


class PiecewiseLinearHypernet(nn.Module):
    """α(λ) = (1 − t)·a_k + t·a_{k+1} on the segment [r_k, r_{k+1}] that holds λ."""

    def __init__(self, theta_star: torch.Tensor, lam_lo: float, lam_hi: float, pivots: int = 5,
                 init_noise: float = 1e-3, generator: torch.Generator | None = None):
        super().__init__()
        if pivots < 2:
            raise ValueError(f"pivots must be >= 2 (a piecewise-linear map needs two anchors), got {pivots}")
        if not lam_hi > lam_lo:
            raise ValueError(f"empty λ range [{lam_lo}, {lam_hi}]")
        s = theta_star.numel()
        noise = init_noise * torch.randn(pivots, s, generator=generator)
        self.anchors = nn.Parameter(theta_star.detach().float().cpu().reshape(1, s) + noise)  # [K, s]
        # equal logits → equal softplus increments → evenly spaced interior pivots at the start
        self.pivot_logits = nn.Parameter(torch.zeros(pivots - 1))  # [K − 1]
        self.register_buffer("lam_range", torch.tensor([float(lam_lo), float(lam_hi)]))
        self.lam_lo, self.lam_hi = float(lam_lo), float(lam_hi)  # host copies: checks need no device sync

    def pivots(self) -> torch.Tensor:
        """[K] sorted pivots; the two ends fixed, the interior ones differentiable."""
        inc = F.softplus(self.pivot_logits)  # [K−1] > 0 keeps the pivots strictly sorted
        frac = torch.cumsum(inc, 0)[:-1] / inc.sum()  # [K−2] in (0, 1)
        lo, hi = self.lam_range[0:1], self.lam_range[1:2]
        return torch.cat([lo, lo + (hi - lo) * frac, hi])

    def check_lams(self, lam: torch.Tensor) -> None:
        tol = 1e-6 * max(1.0, self.lam_hi - self.lam_lo)
        if not bool(torch.isfinite(lam).all()):
            raise ValueError(f"λ must be a finite number, got {float(lam[~torch.isfinite(lam)][0])}")
        bad = (lam < self.lam_lo - tol) | (lam > self.lam_hi + tol)
        if bool(bad.any()):
            v = float(lam[bad][0])
            raise ValueError(f"λ={v:g} is outside the range this hypernetwork was trained on "
                             f"[{self.lam_lo:g}, {self.lam_hi:g}]")

    def forward(self, lam: float | torch.Tensor) -> torch.Tensor:
        """λ scalar → θ [s]; λ [n] → θ [n, s]. ValueError outside the trained range."""
        lam_t = torch.as_tensor(lam, dtype=self.anchors.dtype)
        scalar = lam_t.dim() == 0
        lam_t = lam_t.reshape(-1)
        if lam_t.device.type == "cpu":  # checked on the host: no device sync in the training loop
            self.check_lams(lam_t)
        lam_t = lam_t.to(self.anchors.device)
        r = self.pivots()
        k = (torch.searchsorted(r.detach(), lam_t.detach(), right=True) - 1).clamp(0, len(r) - 2)
        t = ((lam_t - r[k]) / (r[k + 1] - r[k])).unsqueeze(-1)  # [n, 1]
        theta = (1 - t) * self.anchors[k] + t * self.anchors[k + 1]  # [n, s]
        return theta[0] if scalar else theta


class HypernetArch(ArchModule):
    """The search loop's view of a hypernetwork: draw λ, θ = h(λ), regularizer R(λ, θ)."""

    graph_safe = True  # λ and the progress may come as device tensors (see ArchModule.graph_safe)

    def __init__(self, layout: ArchLayout, hyper: PiecewiseLinearHypernet, reg: Regularizer,
                 lam_min: float, lam_max: float, eps: float):
        super().__init__()
        self.layout, self.hyper, self.reg = layout, hyper, reg
        self.lam_min, self.lam_max, self.eps = lam_min, lam_max, eps

    def draw(self, generator: torch.Generator, progress: float) -> float:
        lo, hi = self.lam_min - self.eps, self.lam_max + self.eps
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    def theta(self, lam: float) -> torch.Tensor:
        return self.hyper(lam)

    def regularizer(self, lam: float, theta: torch.Tensor, progress: float) -> torch.Tensor:
        return self.reg(lam, theta, progress)

    def step_metrics(self, lam: float, val_loss: torch.Tensor) -> dict[str, Any]:
        return {"lam": lam, "val_loss": val_loss}

    def epoch_metrics(self, extra: dict[str, list]) -> dict[str, float]:
        """Mean validation loss per λ bucket (4 equal buckets over [λ_min, λ_max])."""
        if not extra.get("lam"):
            return {}
        lams = torch.tensor(extra["lam"])
        losses = torch.stack([v.float() for v in extra["val_loss"]]).cpu()
        edges = torch.linspace(self.lam_min, self.lam_max, 5)
        idx = (torch.bucketize(lams, edges[1:-1]))
        out = {}
        for b in range(4):
            m = idx == b
            if m.any():
                out[f"val_loss_lam_{edges[b]:.2g}_{edges[b + 1]:.2g}"] = float(losses[m].mean())
        return out

    def final_theta(self) -> torch.Tensor:
        return self.hyper((self.lam_min + self.lam_max) / 2).detach()


class FixedLambdaArch(DartsArch):
    """The per-λ search: a free θ (from α*) trained with R(λ_fixed, θ) — one search per λ."""

    def __init__(self, layout: ArchLayout, theta0: torch.Tensor, reg: Regularizer, lam: float):
        super().__init__(layout, theta0)
        self.reg, self.lam = reg, lam

    def regularizer(self, lam: Any, theta: torch.Tensor, progress: float) -> torch.Tensor:
        return self.reg(self.lam, theta, progress)


# ---------------------------------------------------------------------------------------------
# Run-level functions
# ---------------------------------------------------------------------------------------------
def hypernet_config(run_dir: str | Path, preset: str = "paper", sets: dict[str, Any] | None = None) -> HypernetConfig:
    """Preset loop settings + the run's data/supernet settings + explicit overrides."""
    search_cfg = load_search(run_dir).config
    inherited = {k: getattr(search_cfg, k) for k in INHERITED_FROM_SEARCH}
    return from_preset(HypernetConfig, preset, {**inherited, **(sets or {})})


def lam_range(cfg: HypernetConfig, star: Genotype) -> tuple[float, float]:
    return cfg.lam_min, float(star.num_edges()) if cfg.lam_max is None else cfg.lam_max


def _setup(cfg: HypernetConfig, run_dir: str | Path, device: torch.device):
    configure_threads()
    torch.manual_seed(cfg.seed)
    _, layout, theta_star, star = load_search(run_dir)
    ds, tl, vl = prepare_search_data(cfg, device)
    net, net_layout = build_supernet(cfg, ds, device)
    if net_layout != layout:
        raise ArtifactError(f"the settings {net_layout.to_dict()} do not fit the run's search space "
                            f"{layout.to_dict()}; keep c, layers, nodes and inputs_per_node of the search")
    if cfg.warm_start:
        state, _ = load_tensors(RunDir(run_dir).search.supernet, device)
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ArtifactError(f"search supernet weights do not fit: {str(e).splitlines()[0]}; "
                                "keep the search's c/layers/nodes or --set warm_start=false") from None
    reg = Regularizer(cfg.regularizer, layout, star, cfg.tau,
                      Warmup(cfg.edges_weight_start, cfg.edges_weight_end, cfg.t_start, cfg.t_end)).to(device)
    return layout, theta_star, star, ds, tl, vl, net, reg


def train_hypernet(cfg: HypernetConfig, run_dir: str | Path, device: str | torch.device | None = None,
                   progress: Progress | None = None) -> tuple[PiecewiseLinearHypernet, SearchResult]:
    """Train (or resume) α(λ) with `cfg.regularizer` → RUN/hypernet/<regularizer>/."""
    check_regularizer(cfg.regularizer)
    device = resolve_device(device)
    layout, theta_star, star, ds, tl, vl, net, reg = _setup(cfg, run_dir, device)
    lam_min, lam_max = lam_range(cfg, star)
    hyper = PiecewiseLinearHypernet(theta_star, lam_min - cfg.lam_eps, lam_max + cfg.lam_eps, cfg.pivots,
                                    cfg.init_noise, torch.Generator().manual_seed(cfg.seed))
    arch = HypernetArch(layout, hyper, reg, lam_min, lam_max, cfg.lam_eps).to(device)
    out = RunDir(run_dir).hypernet(cfg.regularizer)
    write_json(out.config, to_dict(cfg))
    res = train_bilevel(cfg, net, arch, tl, vl, out.path, device, progress)
    hyper = hyper.cpu()
    save_tensors(out.hypernet, hyper.state_dict(),
                 {"layout": layout.to_dict(), "pivots": cfg.pivots, "regularizer": cfg.regularizer,
                  "lam_min": lam_min, "lam_max": lam_max, "lam_eps": cfg.lam_eps, "config": to_dict(cfg)})
    write_json(out.history, res.history)
    curve = sample_architectures(hyper, layout, star, lam_grid(lam_min, lam_max, 9), cfg.tau)
    write_json(out.curve, [s.to_dict() for s in curve])
    return hyper, res


def trained_regularizers(run_dir: str | Path) -> list[str]:
    """The regularizers whose hypernetwork this run has trained, `edges` first (the default)."""
    run = RunDir(run_dir)
    return [r for r in sorted(REGULARIZERS, key=lambda r: r != "edges") if run.hypernet(r).hypernet.exists()]


def load_hypernet(run_dir: str | Path, regularizer: str | None = None) -> tuple[PiecewiseLinearHypernet, dict]:
    """The trained hypernetwork of a run, checked against the run's search space."""
    trained = trained_regularizers(run_dir)
    if regularizer is None:
        if not trained:
            raise ArtifactError(f"{run_dir}: no trained hypernetwork; run "
                                f"`python -m nes hypernet --run {run_dir} --regularizer edges` first")
        regularizer = trained[0]
    check_regularizer(regularizer)
    path = RunDir(run_dir).hypernet(regularizer).hypernet
    if not path.exists():
        raise ArtifactError(f"{path} missing: train it with `python -m nes hypernet --run {run_dir} "
                            f"--regularizer {regularizer}`" + (f" (trained here: {', '.join(trained)})" if trained else ""))
    tensors, meta = load_tensors(path)
    layout = load_search(run_dir).layout
    if not isinstance(meta, dict) or "layout" not in meta or "anchors" not in tensors:
        raise ArtifactError(f"{path}: not a hypernetwork file (no layout metadata or anchors)")
    mine = ArchLayout.from_dict(meta["layout"])
    if mine != layout:
        diff = ", ".join(f"{k} {getattr(mine, k)} vs {getattr(layout, k)}" for k in ("nodes", "cell_types", "inputs_per_node")
                         if getattr(mine, k) != getattr(layout, k))
        raise ArtifactError(f"{path}: the hypernetwork does not fit this run's search space ({diff})")
    k, s = tensors["anchors"].shape
    if s != layout.size or tensors.get("pivot_logits", torch.zeros(0)).shape != (k - 1,):
        raise ArtifactError(f"{path}: anchors {tuple(tensors['anchors'].shape)} do not fit the search space "
                            f"(expected [K, {layout.size}] and K−1 pivot logits)")
    lo, hi = tensors["lam_range"].tolist()
    hyper = PiecewiseLinearHypernet(torch.zeros(s), lo, hi, k)
    hyper.load_state_dict(tensors)
    return hyper, meta


def fixed_lambda_search(cfg: HypernetConfig, run_dir: str | Path, lam: float,
                        device: str | torch.device | None = None,
                        progress: Progress | None = None) -> SearchResult:
    """One search with the regularizer at a fixed λ (the cost the hypernetwork avoids)."""
    device = resolve_device(device)
    layout, theta_star, star, ds, tl, vl, net, reg = _setup(cfg, run_dir, device)
    lam_min, lam_max = lam_range(cfg, star)
    if not lam_min - cfg.lam_eps <= lam <= lam_max + cfg.lam_eps:
        raise ValueError(f"λ={lam:g} is outside [{lam_min - cfg.lam_eps:g}, {lam_max + cfg.lam_eps:g}]")
    arch = FixedLambdaArch(layout, theta_star, reg, lam).to(device)
    out = RunDir(run_dir).fixed_lambda(lam)
    write_json(out.config, {**to_dict(cfg), "lam": lam})
    res = train_bilevel(cfg, net, arch, tl, vl, out.path, device, progress, extra_meta={"lam": lam})
    save_tensors(out.arch, {"theta": res.theta}, {"layout": layout.to_dict(), "lam": lam})
    write_json(out.genotype, {"genotype": res.genotype.to_dict(), "compact": res.genotype.compact(),
                              "lam": lam, "matched_edges": res.genotype.matched_edges(star)})
    write_json(out.history, res.history)
    return res
