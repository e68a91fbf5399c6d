"""The bi-level search loop (first-order DARTS; second order behind a flag).

One loop serves the DARTS search, the hypernetwork training and the per-λ search: what differs
is the `ArchModule` that produces the architecture vector θ for a step (a free parameter for
DARTS, h(λ) for the hypernetwork) and its regularizer. Each step:
  1. architecture step on a validation batch: minimize L_val(w, θ) + R w.r.t. the arch module;
  2. weight step on a training batch: minimize L_train(w, θ) w.r.t. w, same draw (same λ).
With `arch_every` k > 1 step 1 runs on every k-th step only, at k·a_lr: a step without it costs
about 0.6× one with it (benchmarks/results/README.md, "Search step"); with `arch_warmup` E > 0 it
first runs after E epochs of weight steps alone.
The epoch skeleton (resume, cosine lr, seeding, history, checkpoint) is `nes.method.loop.EpochLoop`,
shared with member training; CUDA-graph replay of the steps is `nes.method.cuda_graphs`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
import torch.nn.functional as F

from ..artifacts import write_json
from ..config import SearchConfig, to_dict
from ..data import Dataset, DeviceLoader, downsample, load_dataset, split_indices
from ..runtime import autocast, use_channels_last
from .cuda_graphs import GraphedStep, set_capturable, use_cuda_graphs
from .loop import EpochLoop, Progress, TrainingDiverged
from .space import ArchLayout, ArchWeights, Genotype, cell_types_for
from .supernet import Supernet

Draw = float | torch.Tensor | None
"""The step's draw: what `ArchModule.draw` picks once per step, and that step's θ, mixing and
regularizer read — λ for a hypernetwork, the search progress for GDAS's temperature, None for
DARTS. A float when drawn; a 0-d device tensor when a CUDA graph replays the step (it reads the
draw from a buffer that each replay refills)."""


class ArchModule(nn.Module):
    """Produces the architecture vector θ for each step. Subclasses: `DartsArch`, hypernetworks."""

    layout: ArchLayout
    weight_decay: float | None = None  # the architecture optimizer's; None: the config's a_weight_decay
    graph_safe = False
    """True when a step may be replayed as a CUDA graph: `theta`, `mixing` and `regularizer` also
    accept the draw and the progress as 0-d device tensors (see `Draw`), do no host sync, and keep
    no step tensor beyond what `step_metrics` is handed."""

    def draw(self, generator: torch.Generator, progress: float) -> Draw:
        """The step's draw (λ for a hypernetwork); `progress` ∈ [0, 1) over training."""
        return None

    def theta(self, drawn: Draw) -> torch.Tensor:  # [layout.size]
        raise NotImplementedError

    def mixing(self, drawn: Draw, theta: torch.Tensor) -> ArchWeights:
        """The supernet's mixing weights for θ (softmax relaxation by default)."""
        return self.layout.weights(theta)

    def regularizer(self, drawn: Draw, theta: torch.Tensor, progress: float) -> torch.Tensor | None:
        return None

    def step_metrics(self, drawn: Draw, val_loss: torch.Tensor) -> dict[str, Any]:
        """Extra per-step values (e.g. the λ drawn; device tensors are fine: they are only read
        at the end of the epoch, by `epoch_metrics`)."""
        return {}

    def epoch_metrics(self, extra: dict[str, list]) -> dict[str, float]:
        """Per-epoch summary of the collected `step_metrics` values (one device sync per epoch)."""
        return {}

    def final_theta(self) -> torch.Tensor:
        """θ that the run reports as its result (α* for DARTS)."""
        raise NotImplementedError

    def at_moment(self, epoch: int, done: int, steps: int) -> None:
        """Called on the host when θ holds the architecture after `done` of the `steps` steps of
        epoch `epoch` (0: before its first step; a resumed session starts with θ as checkpointed).
        DARTS records θ at a few such moments for the Search page's replay; default: nothing."""

    def epoch_saved(self, epoch: int) -> None:
        """Called once epoch `epoch`'s checkpoint is written, so that what a module saves beside
        the checkpoint never runs ahead of what a resume restores. Default: nothing."""


@dataclass
class SearchResult:
    theta: torch.Tensor  # [layout.size] final architecture logits
    genotype: Genotype
    layout: ArchLayout
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0  # optimizer steps completed in total (over all sessions of the run)
    seconds: float = 0.0  # wall time spent training, summed over sessions


def prepare_search_data(cfg: SearchConfig, device: torch.device) -> tuple[Dataset, DeviceLoader, DeviceLoader]:
    """The dataset on `device` and loaders over the deterministic train/val halves."""
    ds = load_dataset(cfg.dataset, cfg.data_dir, device, cfg.limit, cfg.test_limit)
    ds, info = downsample(ds, ds.info.with_crop(cfg.image_size, cfg.pad), cfg.downsample)
    tr, va = split_indices(len(ds.train_y), 0.5, cfg.seed)
    cl = use_channels_last(device)
    bs = min(cfg.batch_size, len(tr), len(va))
    tl = DeviceLoader(ds.train_x[tr.to(device)], ds.train_y[tr.to(device)], info, bs, train=True, channels_last=cl)
    vl = DeviceLoader(ds.train_x[va.to(device)], ds.train_y[va.to(device)], info, bs, train=True, channels_last=cl)
    return ds, tl, vl


def build_supernet(cfg: SearchConfig, ds: Dataset, device: torch.device) -> tuple[Supernet, ArchLayout]:
    layout = ArchLayout(cfg.nodes, cell_types_for(cfg.layers), cfg.inputs_per_node)
    net = Supernet(cfg.channels, ds.info.num_classes, cfg.layers, cfg.nodes, ds.info.channels,
                   partial_k=cfg.partial_k if cfg.mode == "pc" else 1).to(device)
    if use_channels_last(device):
        net = net.to(memory_format=torch.channels_last)
    return net, layout


def _arch_grads_second_order(net, arch, drawn, xt, yt, xv, yv, w_opt, cfg, progress_frac, device):
    """Unrolled DARTS: ∇θ L_val(w', θ) − ξ·(∇θ L_train(w⁺) − ∇θ L_train(w⁻)) / 2r, with
    w' = w − ξ∇w L_train(w, θ) (one virtual SGD step at the current lr ξ), w± = w ± r·∇w' L_val."""
    params = [p for p in net.parameters() if p.requires_grad]
    a_params = [p for p in arch.parameters() if p.requires_grad]
    xi = w_opt.param_groups[0]["lr"]
    backup = [p.detach().clone() for p in params]
    with autocast(device):
        theta = arch.theta(drawn)
        loss_t = F.cross_entropy(net(xt, arch.mixing(drawn, theta.detach())), yt)
    gw = torch.autograd.grad(loss_t, params)
    with torch.no_grad():
        for p, g in zip(params, gw):
            p.sub_(xi * (g + cfg.w_weight_decay * p))
    with autocast(device):
        theta = arch.theta(drawn)
        loss_v = F.cross_entropy(net(xv, arch.mixing(drawn, theta)), yv)
        reg = arch.regularizer(drawn, theta, progress_frac)
        if reg is not None:
            loss_v = loss_v + reg
    grads = torch.autograd.grad(loss_v, a_params + params, allow_unused=True)
    ga, dw = grads[: len(a_params)], grads[len(a_params) :]
    dw = [torch.zeros_like(p) if g is None else g for p, g in zip(params, dw)]
    r = cfg.unrolled_eps / (torch.sqrt(sum((g.float() ** 2).sum() for g in dw)) + 1e-12)
    hess = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, b, g in zip(params, backup, dw):
                p.copy_(b + sign * r * g)
        with autocast(device):
            loss = F.cross_entropy(net(xt, arch.mixing(drawn, arch.theta(drawn))), yt)
        hess.append(torch.autograd.grad(loss, a_params, allow_unused=True))
    with torch.no_grad():
        for p, b in zip(params, backup):
            p.copy_(b)
    out = []
    for g, hp, hm, p in zip(ga, hess[0], hess[1], a_params):
        g = torch.zeros_like(p) if g is None else g
        if hp is not None and hm is not None:
            g = g - xi * (hp - hm) / (2 * r)
        out.append(g)
    return out, loss_v.detach()


class BilevelStep:
    """One step: the architecture step on a validation batch (on every `cfg.arch_every`-th step
    of the run from step `arch_from` on; the loop sets `done`, the run's step index, and `arch_from`),
    then the weight step on a training batch with the same draw (λ); adds the batch metrics to
    `sums` (train loss, train correct, val loss, val correct, val images) without a host sync. Called as
    `step(xt, yt, xv, yv, drawn, frac, sums)`; returns the validation loss, None on a step
    without the architecture step."""

    def __init__(self, cfg: SearchConfig, net: Supernet, arch: ArchModule, device: torch.device) -> None:
        self.cfg, self.net, self.arch, self.device = cfg, net, arch, device
        self.done = 0
        self.arch_from = 0  # the run's first step with the architecture step (the loop sets it: arch_warmup)
        self.w_opt = torch.optim.SGD(net.parameters(), cfg.w_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_weight_decay)
        self.a_params = [p for p in arch.parameters() if p.requires_grad]
        wd = cfg.a_weight_decay if arch.weight_decay is None else arch.weight_decay
        self.a_opt = torch.optim.Adam(self.a_params, cfg.a_lr * cfg.arch_every, betas=(cfg.a_beta1, cfg.a_beta2),
                                      weight_decay=wd)

    def _arch_step(self, xt, yt, xv, yv, drawn, frac):
        """(1) Only θ's gradient is asked for, so autograd skips every weight gradient and every
        op whose input does not depend on θ. Returns (validation logits or None, loss)."""
        arch, net, device = self.arch, self.net, self.device
        if not self.a_params:
            with torch.no_grad(), autocast(device):
                logits_v = net(xv, arch.mixing(drawn, arch.theta(drawn)))
                return logits_v, F.cross_entropy(logits_v, yv)
        self.a_opt.zero_grad(set_to_none=True)
        if self.cfg.second_order:
            grads, loss_v = _arch_grads_second_order(net, arch, drawn, xt, yt, xv, yv, self.w_opt, self.cfg, frac,
                                                     device)
            logits_v = None
        else:
            with autocast(device):
                theta = arch.theta(drawn)
                logits_v = net(xv, arch.mixing(drawn, theta))
                loss_v = F.cross_entropy(logits_v, yv)
                reg = arch.regularizer(drawn, theta, frac)
                total_v = loss_v + reg if reg is not None else loss_v
            grads = torch.autograd.grad(total_v, self.a_params, allow_unused=True)
        for p, gr in zip(self.a_params, grads):
            p.grad = torch.zeros_like(p) if gr is None else gr
        self.a_opt.step()
        return logits_v, loss_v

    def __call__(self, xt, yt, xv, yv, drawn, frac, sums) -> torch.Tensor | None:
        logits_v, loss_v = None, None
        if self.done >= self.arch_from and self.done % self.cfg.arch_every == 0:
            logits_v, loss_v = self._arch_step(xt, yt, xv, yv, drawn, frac)
        # (2) weight step with the updated architecture, same draw
        with torch.no_grad():
            mix = self.arch.mixing(drawn, self.arch.theta(drawn))
        self.w_opt.zero_grad(set_to_none=True)
        with autocast(self.device):
            logits_t = self.net(xt, mix)
            loss_t = F.cross_entropy(logits_t, yt)
        loss_t.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.w_opt.step()
        with torch.no_grad():
            sums[0] += loss_t.detach().float() * len(yt)
            sums[1] += (logits_t.argmax(1) == yt).sum()
            if loss_v is not None:
                sums[2] += loss_v.detach().float() * len(yv)
                sums[4] += len(yv)
            if logits_v is not None:
                sums[3] += (logits_v.argmax(1) == yv).sum()
        return None if loss_v is None else loss_v.detach()


def _epoch_metrics(sums: torch.Tensor, count: int) -> dict[str, float]:
    """Means over the epoch's training images (`count`) and its validation images (`sums[4]`);
    no validation means before the first architecture step (an `arch_warmup` epoch has none)."""
    s = sums.tolist()
    row = {"train_loss": s[0] / max(count, 1), "train_acc": s[1] / max(count, 1)}
    if s[4] > 0:
        row.update(val_loss=s[2] / s[4], val_acc=s[3] / s[4])
    return row


def _run_epoch(step, graphed: GraphedStep | None, arch: ArchModule, loaders, epoch: int, gen: torch.Generator,
               sums: torch.Tensor, total: int, log_every: int, progress: Progress | None) -> dict[str, Any]:
    """One epoch of steps (`total` steps in the whole run); returns the epoch's metrics, the arch
    module's own included."""
    train_loader, val_loader = loaders
    steps_per_epoch = min(len(train_loader), len(val_loader))
    count, extra = 0, {}
    arch.at_moment(epoch, 0, steps_per_epoch)
    for i, ((xt, yt), (xv, yv)) in enumerate(zip(train_loader.epoch(gen), val_loader.epoch(gen))):
        done = epoch * steps_per_epoch + i
        frac = done / max(1, total)
        drawn = arch.draw(gen, frac)
        step.done = done
        if graphed is not None and graphed.ok:
            loss_v = graphed(xt, yt, xv, yv, drawn, frac)
        else:
            loss_v = step(xt, yt, xv, yv, drawn, frac, sums)
        count += len(yt)
        arch.at_moment(epoch, i + 1, steps_per_epoch)
        if loss_v is not None:  # a step with the architecture step
            for k, v in arch.step_metrics(drawn, loss_v).items():
                extra.setdefault(k, []).append(v)
        if progress is not None and ((done + 1) % log_every == 0 or i == steps_per_epoch - 1):
            progress(done + 1, total, {"epoch": epoch, **_epoch_metrics(sums, count)})
    row = _epoch_metrics(sums, count)
    if graphed is not None:
        row["graph_steps"] = graphed.replays  # steps of this epoch replayed from a CUDA graph
    return {**row, **arch.epoch_metrics(extra)}


def train_bilevel(
    cfg: SearchConfig,
    net: Supernet,
    arch: ArchModule,
    train_loader: DeviceLoader,
    val_loader: DeviceLoader,
    out_dir: str | Path,
    device: torch.device,
    progress: Progress | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    start_files: Mapping[Path, Any] | None = None,
) -> SearchResult:
    """Run (or resume) the bi-level loop; checkpoint `out_dir/checkpoint.safetensors` each epoch.

    `start_files` (path → JSON: the step's config.json, …) are written once the checkpoint, if any,
    was found to fit: a refused resume writes nothing. When the loop fails before its first
    checkpoint they are removed again, so a failed fresh start leaves no stray files."""
    step = BilevelStep(cfg, net, arch, device)
    loop = EpochLoop(out_dir, {"net": net, "arch": arch}, {"w": step.w_opt, "a": step.a_opt}, step.w_opt,
                     cfg.w_lr, cfg.w_lr_min, cfg.epochs, cfg.seed, device,
                     {"config": to_dict(cfg), **dict(extra_meta or {})}, lr_names="w_lr or a_lr")
    fresh = [Path(p) for p in (start_files or {}) if not Path(p).exists()]
    new_folder = not Path(out_dir).exists()
    for path, obj in (start_files or {}).items():
        write_json(path, obj)
    try:
        _epochs(cfg, net, arch, step, loop, (train_loader, val_loader), device, progress)
    except BaseException:
        if not loop.ckpt.exists():
            for p in fresh:
                p.unlink(missing_ok=True)
            if new_folder:
                with contextlib.suppress(OSError):  # not empty: something else wrote there meanwhile
                    Path(out_dir).rmdir()
        raise
    theta = arch.final_theta().float().cpu()
    if not bool(torch.isfinite(theta).all()):
        raise TrainingDiverged(f"training diverged: θ holds NaN or infinite values; lower w_lr or a_lr "
                               f"(--set w_lr=…) and start again; nothing in {out_dir} was replaced")
    return SearchResult(theta, arch.layout.discretize(theta), arch.layout, loop.history, loop.steps, loop.seconds)


def _epochs(cfg: SearchConfig, net: Supernet, arch: ArchModule, step: BilevelStep, loop: EpochLoop,
            loaders: tuple[DeviceLoader, DeviceLoader], device: torch.device, progress: Progress | None) -> None:
    """The loop's remaining epochs, each ending in a checkpoint (CUDA-graph replay where it may)."""
    # a graph replays one fixed step: not the steps that skip the architecture step
    graphs = (use_cuda_graphs(cfg, arch, device) and bool(step.a_params) and cfg.arch_every == 1
              and cfg.arch_warmup == 0)
    set_capturable(step.a_opt, graphs, device)
    steps_per_epoch = min(len(loaders[0]), len(loaders[1]))
    step.arch_from = cfg.arch_warmup * steps_per_epoch
    for epoch, gen in loop:
        net.train()
        sums = torch.zeros(5, device=device)
        # the learning rate is baked into a captured graph: one graph per epoch
        graphed = GraphedStep(step, sums) if graphs else None
        row = _run_epoch(step, graphed, arch, loaders, epoch, gen, sums,
                         steps_per_epoch * cfg.epochs, cfg.log_every, progress)
        if graphed is not None and not graphed.ok:
            graphs = False  # capture failed (warned once): the rest of the run is eager
            set_capturable(step.a_opt, False, device)
        loop.end_epoch(epoch, row, steps_per_epoch)
        arch.epoch_saved(epoch)
