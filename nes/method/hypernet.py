"""The piecewise-linear hypernetwork α(λ), its training, and the per-λ search.

α(λ): K anchors a_0..a_{K−1} ∈ R^s and pivots r_0 < … < r_{K−1}; r_0 and r_{K−1} are fixed at
the ends of the trained λ range (`LamRange.trained`: the target range [λ_min, λ_max] widened by ε),
the interior pivots are trainable and stay sorted (cumulative softplus increments). For
λ ∈ [r_k, r_{k+1}], t = (λ − r_k)/(r_{k+1} − r_k) and α(λ) = (1 − t)·a_k + t·a_{k+1}, so
α(r_k) = a_k exactly.

Training reuses `nes.method.bilevel.train_bilevel`: each step draws λ uniformly over the trained
range, takes an architecture step on L_val(w, α(λ)) + R(λ, α(λ)) w.r.t. the hypernetwork and a
weight step on L_train(w, α(λ)) with the same λ. Files: RUN/hypernet/<regularizer>/
(hypernet.safetensors, checkpoint.safetensors, config.json, history.json, curve.json); the per-λ
search writes RUN/fixed_lambda/lam_X/ (arch.safetensors, genotype.json, ...).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ..artifacts import ArtifactError, load_tensors, save_tensors, write_json
from ..config import INHERITED_FROM_SEARCH, HypernetConfig, from_preset, to_dict
from ..data import DeviceLoader
from ..layout import RunDir
from ..runtime import configure_threads, resolve_device
from .bilevel import ArchModule, Draw, Progress, SearchResult, build_supernet, prepare_search_data, train_bilevel
from .darts import DartsArch, SearchArtifacts, load_search
from .diversity import ArchSample, grid_quality, lam_grid, sample_architectures
from .regularizers import REGULARIZERS, LamRange, Regularizer, check_regularizer, pinned_end
from .space import ArchLayout
from .supernet import Supernet

# The key of the trained range's ends [2] in hypernet.safetensors and checkpoints (every version).
TRAINED_ENDS_KEY = "lam_range"


class PiecewiseLinearHypernet(nn.Module):
    """α(λ) = (1 − t)·a_k + t·a_{k+1} on the segment [r_k, r_{k+1}] that holds λ."""

    def __init__(self, theta_star: torch.Tensor, lam_range: LamRange, pivots: int = 5,
                 init_noise: float = 1e-3, generator: torch.Generator | None = None,
                 pin: str | None = None, train_pivots: bool = True):
        """`lam_range`: the outer pivots sit on its trained ends; its target range is the
        diversity axis. `pin` ("lo" / "hi"): the anchor at that end is α*'s logits θ* and stays
        there (its gradient is zeroed), so α(λ) at that end is exactly α*. `train_pivots`: whether
        the interior pivots move in training (else they stay evenly spaced)."""
        super().__init__()
        if pivots < 2:
            raise ValueError(f"pivots must be >= 2 (a piecewise-linear map needs two anchors), got {pivots}")
        if pin not in (None, "lo", "hi"):
            raise ValueError(f"pin must be 'lo', 'hi' or None, got {pin!r}")
        s = theta_star.numel()
        star = theta_star.detach().float().cpu().reshape(1, s)
        anchors = star + init_noise * torch.randn(pivots, s, generator=generator)
        mask = torch.ones(pivots, 1)
        if pin is not None:
            row = 0 if pin == "lo" else pivots - 1
            anchors[row], mask[row] = star[0], 0.0
        self.pin = pin
        self.anchors = nn.Parameter(anchors)  # [K, s]
        self.register_buffer("grad_mask", mask, persistent=False)
        if pin is not None:
            self.anchors.register_hook(lambda g: g * self.grad_mask)
        # equal logits → equal softplus increments → evenly spaced interior pivots
        self.pivot_logits = nn.Parameter(torch.zeros(pivots - 1), requires_grad=train_pivots)  # [K − 1]
        self.lam_range = lam_range  # host copy: λ checks need no device sync
        self.register_buffer("trained_ends", torch.tensor(lam_range.trained))  # [2], on the module's device

    # state dicts keep the trained ends under their file key (torch's hooks for a renamed entry)
    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + TRAINED_ENDS_KEY] = destination.pop(prefix + "trained_ends")

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        if prefix + TRAINED_ENDS_KEY in state_dict:
            state_dict[prefix + "trained_ends"] = state_dict.pop(prefix + TRAINED_ENDS_KEY)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def pivots(self) -> torch.Tensor:
        """[K] sorted pivots; the two ends fixed, the interior ones differentiable."""
        inc = F.softplus(self.pivot_logits)  # [K−1] > 0 keeps the pivots strictly sorted
        frac = torch.cumsum(inc, 0)[:-1] / inc.sum()  # [K−2] in (0, 1)
        lo, hi = self.trained_ends[0:1], self.trained_ends[1:2]
        return torch.cat([lo, lo + (hi - lo) * frac, hi])

    def check_lams(self, lam: torch.Tensor) -> None:
        lo, hi = self.lam_range.trained
        tol = 1e-6 * max(1.0, hi - lo)
        if not bool(torch.isfinite(lam).all()):
            raise ValueError(f"λ must be a finite number, got {float(lam[~torch.isfinite(lam)][0])}")
        bad = (lam < lo - tol) | (lam > hi + tol)
        if bool(bad.any()):
            v = float(lam[bad][0])
            raise ValueError(f"λ={v:g} is outside the range this hypernetwork was trained on [{lo:g}, {hi:g}]")

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
    """The search loop's view of a hypernetwork: the step's draw is λ, θ = h(λ), regularizer R(λ, θ)."""

    graph_safe = True  # λ and the progress may come as device tensors (see ArchModule.graph_safe)
    weight_decay = 0.0  # decay would pull the anchors toward uniform logits, not toward anything meant

    def __init__(self, layout: ArchLayout, hyper: PiecewiseLinearHypernet, reg: Regularizer):
        super().__init__()
        self.layout, self.hyper, self.reg = layout, hyper, reg

    def draw(self, generator: torch.Generator, progress: float) -> float:
        """λ ~ U over the trained range (ε beyond [λ_min, λ_max], none at a pinned end)."""
        lo, hi = self.hyper.lam_range.trained
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    def theta(self, lam: Draw) -> torch.Tensor:
        return self.hyper(lam)

    def regularizer(self, lam: Draw, theta: torch.Tensor, progress: float) -> torch.Tensor:
        return self.reg(lam, theta, progress)

    def step_metrics(self, lam: Draw, val_loss: torch.Tensor) -> dict[str, Any]:
        return {"lam": lam, "val_loss": val_loss}

    def epoch_metrics(self, extra: dict[str, list]) -> dict[str, float]:
        """Mean validation loss per λ bucket (4 equal buckets over the target range [λ_min, λ_max])."""
        if not extra.get("lam"):
            return {}
        lams = torch.tensor(extra["lam"])
        losses = torch.stack([v.float() for v in extra["val_loss"]]).cpu()
        edges = torch.linspace(*self.hyper.lam_range.target, 5)
        idx = (torch.bucketize(lams, edges[1:-1]))
        out = {}
        for b in range(4):
            m = idx == b
            if m.any():
                out[f"val_loss_lam_{edges[b]:.2g}_{edges[b + 1]:.2g}"] = float(losses[m].mean())
        return out

    def final_theta(self) -> torch.Tensor:
        lam_min, lam_max = self.hyper.lam_range.target
        return self.hyper((lam_min + lam_max) / 2).detach()


class FixedLambdaArch(DartsArch):
    """The per-λ search: a free θ (from α*) trained with R(λ_fixed, θ) — one search per λ."""

    def __init__(self, layout: ArchLayout, theta0: torch.Tensor, reg: Regularizer, lam: float):
        super().__init__(layout, theta0)
        self.reg, self.lam = reg, lam

    def regularizer(self, drawn: Draw, theta: torch.Tensor, progress: float) -> torch.Tensor:
        return self.reg(self.lam, theta, progress)


# ---------------------------------------------------------------------------------------------
# Run-level functions
# ---------------------------------------------------------------------------------------------
def hypernet_config(run_dir: str | Path, preset: str = "paper", sets: dict[str, Any] | None = None) -> HypernetConfig:
    """Preset loop settings + the run's data/supernet settings + explicit overrides."""
    search_cfg = load_search(run_dir).config
    inherited = {k: getattr(search_cfg, k) for k in INHERITED_FROM_SEARCH}
    return from_preset(HypernetConfig, preset, {**inherited, **(sets or {})})


@dataclass(frozen=True)
class HypernetSetup:
    """What a hypernetwork's training and a per-λ search start from: the run's search, the data
    loaders over its train/val halves, the supernet (warm-started from the search's weights), the
    regularizer, the λ ranges and the end pinned to α*."""

    search: SearchArtifacts
    train_loader: DeviceLoader
    val_loader: DeviceLoader
    net: Supernet
    reg: Regularizer
    lam_range: LamRange
    pin: str | None  # "lo" / "hi": the end of the λ range whose anchor stays α*'s logits


def _setup(cfg: HypernetConfig, run_dir: str | Path, device: torch.device) -> HypernetSetup:
    configure_threads()
    torch.manual_seed(cfg.seed)
    search = load_search(run_dir)
    ds, tl, vl = prepare_search_data(cfg, device)
    net, net_layout = build_supernet(cfg, ds, device)
    if net_layout != search.layout:
        raise ArtifactError(f"the settings {net_layout.to_dict()} do not fit the run's search space "
                            f"{search.layout.to_dict()}; keep channels, layers, nodes and inputs_per_node of the search")
    if cfg.warm_start:
        state, _ = load_tensors(RunDir(run_dir).search.supernet, device, finite=True)
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ArtifactError(f"search supernet weights do not fit: {str(e).splitlines()[0]}; "
                                "keep the search's channels/layers/nodes or --set warm_start=false") from None
    reg = REGULARIZERS[check_regularizer(cfg.regularizer)].from_config(cfg, search.layout, search.star, search.theta)
    lam_range = LamRange.from_config(cfg, search.star, reg.default_lam_max())
    return HypernetSetup(search, tl, vl, net, reg.to(device), lam_range, pinned_end(cfg))


def train_hypernet(cfg: HypernetConfig, run_dir: str | Path, device: str | torch.device | None = None,
                   progress: Progress | None = None) -> tuple[PiecewiseLinearHypernet, SearchResult]:
    """Train (or resume) α(λ) with `cfg.regularizer` → RUN/hypernet/<regularizer>/."""
    check_regularizer(cfg.regularizer)
    device = resolve_device(device)
    setup = _setup(cfg, run_dir, device)
    s, lam_range = setup.search, setup.lam_range
    hyper = PiecewiseLinearHypernet(s.theta, lam_range, cfg.pivots, cfg.init_noise,
                                    torch.Generator().manual_seed(cfg.seed), setup.pin, cfg.train_pivots)
    arch = HypernetArch(s.layout, hyper, setup.reg).to(device)
    out = RunDir(run_dir).hypernet(cfg.regularizer)
    res = train_bilevel(cfg, setup.net, arch, setup.train_loader, setup.val_loader, out.path, device, progress,
                        start_files={out.config: to_dict(cfg)})
    hyper = hyper.cpu()
    curve = sample_architectures(hyper, s.layout, s.star, lam_grid(*lam_range.target, 9), cfg.tau, s.theta,
                                 cfg.regularizer)
    save_tensors(out.hypernet, hyper.state_dict(),
                 {"layout": s.layout.to_dict(), "pivots": cfg.pivots, "regularizer": cfg.regularizer,
                  "lam_min": lam_range.lam_min, "lam_max": lam_range.lam_max, "lam_eps": lam_range.margin,
                  "pin": setup.pin, "quality": grid_quality(curve), "config": to_dict(cfg)})
    write_json(out.history, res.history)
    write_json(out.curve, [x.to_dict() for x in curve])
    return hyper, res


def trained_regularizers(run_dir: str | Path) -> list[str]:
    """The regularizers whose hypernetwork this run has trained, `edges` first (the default)."""
    run = RunDir(run_dir)
    return [r for r in sorted(REGULARIZERS, key=lambda r: r != "edges") if run.hypernet(r).hypernet.exists()]


@dataclass(frozen=True)
class TrainedHypernet:
    """A trained hypernetwork as saved in RUN/hypernet/<regularizer>/hypernet.safetensors: the
    module α(λ) and the file's metadata (layout, pivots, lam_min/lam_max/lam_eps, pin, quality —
    the 9-point grid's, config — its HypernetConfig as a dict)."""

    module: PiecewiseLinearHypernet
    regularizer: str
    meta: dict[str, Any]

    @property
    def lam_range(self) -> LamRange:
        return self.module.lam_range

    def sample(self, search: SearchArtifacts, lams: Sequence[float]) -> list[ArchSample]:
        """α(λ) for every λ, with each sample's distance to α* and place on the diversity axis."""
        return sample_architectures(self.module, search.layout, search.star, lams, self.meta["config"]["tau"],
                                    search.theta, self.regularizer)


def load_hypernet(run_dir: str | Path, regularizer: str | None = None) -> TrainedHypernet:
    """The trained hypernetwork of a run (`edges` when trained, else the first trained),
    checked against the run's search space."""
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
    tensors, meta = load_tensors(path, finite=True)
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
    lo, hi = tensors[TRAINED_ENDS_KEY].tolist()
    if "lam_min" in meta and "lam_max" in meta:
        ends = (meta["lam_min"], meta["lam_max"])
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in ends):
            raise ArtifactError(f"{path}: its λ range {list(ends)} is not two finite numbers; retrain the hypernetwork")
        lam_range = LamRange(float(meta["lam_min"]), float(meta["lam_max"]), lo, hi)
    else:  # a file without its target range: the trained range stands for it
        lam_range = LamRange.exact(lo, hi)
    hyper = PiecewiseLinearHypernet(torch.zeros(s), lam_range, k, pin=meta.get("pin"))
    hyper.load_state_dict(tensors)
    return TrainedHypernet(hyper, meta.get("regularizer", regularizer), meta)


def fixed_lambda_search(cfg: HypernetConfig, run_dir: str | Path, lam: float,
                        device: str | torch.device | None = None,
                        progress: Progress | None = None) -> SearchResult:
    """One search with the regularizer at a fixed λ (the cost the hypernetwork avoids)."""
    device = resolve_device(device)
    setup = _setup(cfg, run_dir, device)
    s = setup.search
    lo, hi = setup.lam_range.trained
    if not lo <= lam <= hi:
        raise ValueError(f"λ={lam:g} is outside [{lo:g}, {hi:g}]")
    arch = FixedLambdaArch(s.layout, s.theta, setup.reg, lam).to(device)
    out = RunDir(run_dir).fixed_lambda(lam)
    res = train_bilevel(cfg, setup.net, arch, setup.train_loader, setup.val_loader, out.path, device, progress,
                        extra_meta={"lam": lam}, start_files={out.config: {**to_dict(cfg), "lam": lam}})
    save_tensors(out.arch, {"theta": res.theta}, {"layout": s.layout.to_dict(), "lam": lam})
    write_json(out.genotype, {"genotype": res.genotype.to_dict(), "compact": res.genotype.compact(),
                              "lam": lam, "matched_edges": res.genotype.matched_edges(s.star)})
    write_json(out.history, res.history)
    return res
