"""The bi-level search loop (first-order DARTS; second order behind a flag).

One loop serves the DARTS search, the hypernetwork training and the per-λ search: what differs
is the `ArchModule` that produces the architecture vector θ for a step (a free parameter for
DARTS, h(λ) for the hypernetwork) and its regularizer. Each step:
  1. architecture step on a validation batch: minimize L_val(w, θ) + R w.r.t. the arch module;
  2. weight step on a training batch: minimize L_train(w, θ) w.r.t. w, same draw (same λ).
A checkpoint is written after every epoch; the data order, augmentation and any noise of epoch e
come from generators seeded with (seed, e), so a resume from epoch e replays exactly.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn
import torch.nn.functional as F

from . import __version__
from .artifacts import load_checkpoint, read_json, save_checkpoint, save_tensors, write_json
from .config import SearchConfig, to_dict
from .data import Dataset, DeviceLoader, load_dataset, split_indices
from .runtime import autocast, configure_threads, resolve_device, use_channels_last
from .space import ArchLayout, ArchWeights, Genotype, cell_types_for
from .supernet import Supernet

Progress = Callable[[int, int, dict[str, float]], None]
"""progress(step, total_steps, metrics) — may raise to cancel (the last checkpoint stays)."""


class ArchModule(nn.Module):
    """Produces the architecture vector θ for each step. Subclasses: `DartsArch`, hypernetworks."""

    layout: ArchLayout
    graph_safe = False
    """True when a step may be replayed as a CUDA graph: `theta`, `mixing` and `regularizer` also
    accept the drawn context (a float such as λ, or None) and the progress as 0-d device tensors
    (the graph reads them from static buffers that each replay refills), do no host sync, and keep
    no step tensor beyond what `step_metrics` is handed."""

    def draw(self, generator: torch.Generator, progress: float) -> Any:
        """Per-step random context (λ for a hypernetwork); `progress` ∈ [0, 1) over training."""
        return None

    def theta(self, ctx: Any) -> torch.Tensor:  # [layout.size]
        raise NotImplementedError

    def mixing(self, ctx: Any, theta: torch.Tensor) -> ArchWeights:
        """The supernet's mixing weights for θ (softmax relaxation by default)."""
        return self.layout.weights(theta)

    def regularizer(self, ctx: Any, theta: torch.Tensor, progress: float) -> torch.Tensor | None:
        return None

    def step_metrics(self, ctx: Any, val_loss: torch.Tensor) -> dict[str, Any]:
        """Extra per-step values (e.g. the λ drawn; device tensors are fine: they are only read
        at the end of the epoch, by `epoch_metrics`)."""
        return {}

    def epoch_metrics(self, extra: dict[str, list]) -> dict[str, float]:
        """Per-epoch summary of the collected `step_metrics` values (one device sync per epoch)."""
        return {}

    def final_theta(self) -> torch.Tensor:
        """θ that the run reports as its result (α* for DARTS)."""
        raise NotImplementedError


class DartsArch(ArchModule):
    """DARTS: θ is one free parameter vector (α and β of every used cell type)."""

    graph_safe = True

    def __init__(self, layout: ArchLayout, theta0: torch.Tensor | None = None):
        super().__init__()
        self.layout = layout
        t0 = layout.init_theta() if theta0 is None else theta0.detach().clone().float()
        self.alpha = nn.Parameter(t0)

    def theta(self, ctx: Any) -> torch.Tensor:
        return self.alpha

    def final_theta(self) -> torch.Tensor:
        return self.alpha.detach()


@dataclass
class SearchResult:
    theta: torch.Tensor  # [layout.size] final architecture logits
    genotype: Genotype
    layout: ArchLayout
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0  # optimizer steps completed in total (over all sessions of the run)
    seconds: float = 0.0  # wall time spent training, summed over sessions


def cosine(lr: float, lr_min: float, epoch: int, epochs: int) -> float:
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * epoch / epochs))


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**62)


def prepare_search_data(cfg: SearchConfig, device: torch.device) -> tuple[Dataset, DeviceLoader, DeviceLoader]:
    """The dataset on `device` and loaders over the deterministic train/val halves."""
    ds = load_dataset(cfg.dataset, cfg.data_dir, device, cfg.limit, cfg.test_limit)
    info = ds.info.with_crop(cfg.image_size, cfg.pad)
    tr, va = split_indices(len(ds.train_y), 0.5, cfg.seed)
    cl = use_channels_last(device)
    bs = min(cfg.batch_size, len(tr), len(va))
    tl = DeviceLoader(ds.train_x[tr.to(device)], ds.train_y[tr.to(device)], info, bs, train=True, channels_last=cl)
    vl = DeviceLoader(ds.train_x[va.to(device)], ds.train_y[va.to(device)], info, bs, train=True, channels_last=cl)
    return ds, tl, vl


def build_supernet(cfg: SearchConfig, ds: Dataset, device: torch.device) -> tuple[Supernet, ArchLayout]:
    layout = ArchLayout(cfg.nodes, cell_types_for(cfg.layers), cfg.inputs_per_node)
    net = Supernet(cfg.c, ds.info.num_classes, cfg.layers, cfg.nodes, ds.info.channels).to(device)
    if use_channels_last(device):
        net = net.to(memory_format=torch.channels_last)
    return net, layout


def _arch_grads_second_order(net, arch, ctx, xt, yt, xv, yv, w_opt, cfg, progress_frac, device):
    """Unrolled DARTS: ∇θ L_val(w', θ) − ξ·(∇θ L_train(w⁺) − ∇θ L_train(w⁻)) / 2r, with
    w' = w − ξ∇w L_train(w, θ) (one virtual SGD step at the current lr ξ), w± = w ± r·∇w' L_val."""
    params = [p for p in net.parameters() if p.requires_grad]
    a_params = [p for p in arch.parameters() if p.requires_grad]
    xi = w_opt.param_groups[0]["lr"]
    backup = [p.detach().clone() for p in params]
    with autocast(device):
        theta = arch.theta(ctx)
        loss_t = F.cross_entropy(net(xt, arch.mixing(ctx, theta.detach())), yt)
    gw = torch.autograd.grad(loss_t, params)
    with torch.no_grad():
        for p, g in zip(params, gw):
            p.sub_(xi * (g + cfg.w_weight_decay * p))
    with autocast(device):
        theta = arch.theta(ctx)
        loss_v = F.cross_entropy(net(xv, arch.mixing(ctx, theta)), yv)
        reg = arch.regularizer(ctx, theta, progress_frac)
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
            loss = F.cross_entropy(net(xt, arch.mixing(ctx, arch.theta(ctx))), yt)
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


def use_cuda_graphs(cfg: SearchConfig, arch: ArchModule, device: torch.device) -> bool:
    """Replay each step as a CUDA graph: on CUDA, first order, a `graph_safe` arch module, unless
    NES_CUDA_GRAPHS=0. A step of the small search networks is a few thousand tiny kernels; their
    launch cost, not the GPU, sets the step time in eager mode (benchmarks/bench_search.py)."""
    return (device.type == "cuda" and not cfg.second_order and arch.graph_safe
            and os.environ.get("NES_CUDA_GRAPHS", "1") != "0")


def _set_capturable(opt: torch.optim.Optimizer, on: bool, device: torch.device) -> None:
    """Adam inside a CUDA graph keeps its step count on the device (`capturable`); a checkpoint
    brings its own flag, so it is set here after loading, for this run's device."""
    for g in opt.param_groups:
        if "capturable" in g:
            g["capturable"] = on
    for st in opt.state.values():
        if torch.is_tensor(st.get("step")):
            st["step"] = st["step"].to(device if on else "cpu", torch.float32)


class _GraphedStep:
    """`step(xt, yt, xv, yv, ctx, frac, sums)` run eagerly for a few warm-up steps on a side
    stream, then captured once and replayed with the batch copied into static inputs and the
    drawn context (float or None) and progress written into static 0-d device tensors. A batch of
    another shape (a last partial batch) runs eagerly. If capture fails, `ok` turns False after a
    warning and the caller goes on eagerly."""

    WARMUP = 3

    def __init__(self, step: Callable, sums: torch.Tensor) -> None:
        self.step, self.sums, self.ok = step, sums, True
        self.done, self.replays = 0, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: list[torch.Tensor] = []
        self.ctx: torch.Tensor | None = None
        self.frac: torch.Tensor | None = None
        self.out: torch.Tensor | None = None

    def _scalars(self, ctx, frac) -> None:
        if self.ctx is not None:
            self.ctx.fill_(ctx)
        self.frac.fill_(frac)

    def __call__(self, xt, yt, xv, yv, ctx, frac) -> torch.Tensor:
        batch = (xt, yt, xv, yv)
        if self.graph is not None:
            if any(b.shape != s.shape for b, s in zip(batch, self.static)):
                return self.step(*batch, ctx, frac, self.sums)
            for s, b in zip(self.static, batch):
                s.copy_(b, non_blocking=True)
            self._scalars(ctx, frac)
            self.graph.replay()
            self.replays += 1
            return self.out.clone()
        if self.done < self.WARMUP:
            self.done += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step(*batch, ctx, frac, self.sums)
            torch.cuda.current_stream().wait_stream(side)
            return out
        try:
            if not (ctx is None or isinstance(ctx, (int, float))):
                raise RuntimeError(f"a step context of type {type(ctx).__name__} cannot be replayed")
            self.static = [b.clone() for b in batch]
            self.ctx = None if ctx is None else torch.tensor(float(ctx), device=xt.device)
            self.frac = torch.tensor(float(frac), device=xt.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.out = self.step(*self.static, self.ctx, self.frac, self.sums)
            self.graph = graph
        except RuntimeError as e:  # e.g. an op that cannot be captured
            warnings.warn(f"CUDA graph capture failed ({str(e).splitlines()[0]}); going on without graphs "
                          f"(set NES_CUDA_GRAPHS=0 to skip the attempt)")
            self.ok, self.graph, self.static = False, None, []
            torch.cuda.synchronize()
            return self.step(*batch, ctx, frac, self.sums)
        self.graph.replay()
        self.replays += 1
        return self.out.clone()


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
) -> SearchResult:
    """Run (or resume) the bi-level loop; checkpoint `out_dir/checkpoint.safetensors` each epoch."""
    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoint.safetensors"
    w_opt = torch.optim.SGD(net.parameters(), cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay)
    a_params = [p for p in arch.parameters() if p.requires_grad]
    a_opt = torch.optim.Adam(a_params, cfg.a_lr, betas=(cfg.a_beta1, cfg.a_beta2), weight_decay=cfg.a_weight_decay)
    meta_cfg = {"config": to_dict(cfg), **dict(extra_meta or {})}
    start_epoch, history, steps_done, seconds = 0, [], 0, 0.0
    if ckpt.exists():
        meta = load_checkpoint(ckpt, {"net": net, "arch": arch}, {"w": w_opt, "a": a_opt}, device, meta_cfg)
        start_epoch, history = meta["epoch"] + 1, meta["history"]
        steps_done, seconds = meta["steps"], meta["seconds"]
    graphs = use_cuda_graphs(cfg, arch, device) and bool(a_params)
    _set_capturable(a_opt, graphs, device)
    steps_per_epoch = min(len(train_loader), len(val_loader))
    total = steps_per_epoch * cfg.epochs

    def one_step(xt, yt, xv, yv, ctx, frac, sums):
        """Architecture step then weight step; adds the batch metrics to `sums` (no host sync)."""
        # (1) architecture step: only θ's gradient is asked for, so autograd skips every weight
        # gradient and every op whose input does not depend on θ.
        if a_params:
            a_opt.zero_grad(set_to_none=True)
            if cfg.second_order:
                grads, loss_v = _arch_grads_second_order(net, arch, ctx, xt, yt, xv, yv, w_opt, cfg, frac, device)
                logits_v = None
            else:
                with autocast(device):
                    theta = arch.theta(ctx)
                    logits_v = net(xv, arch.mixing(ctx, theta))
                    loss_v = F.cross_entropy(logits_v, yv)
                    reg = arch.regularizer(ctx, theta, frac)
                    total_v = loss_v + reg if reg is not None else loss_v
                grads = torch.autograd.grad(total_v, a_params, allow_unused=True)
            for p, gr in zip(a_params, grads):
                p.grad = torch.zeros_like(p) if gr is None else gr
            a_opt.step()
        else:
            with torch.no_grad(), autocast(device):
                theta = arch.theta(ctx)
                logits_v = net(xv, arch.mixing(ctx, theta))
                loss_v = F.cross_entropy(logits_v, yv)
        # (2) weight step with the updated architecture, same draw
        with torch.no_grad():
            theta = arch.theta(ctx)
            mix = arch.mixing(ctx, theta)
        w_opt.zero_grad(set_to_none=True)
        with autocast(device):
            logits_t = net(xt, mix)
            loss_t = F.cross_entropy(logits_t, yt)
        loss_t.backward()
        nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        w_opt.step()
        with torch.no_grad():
            sums[0] += loss_t.detach().float() * len(yt)
            sums[1] += (logits_t.argmax(1) == yt).sum()
            sums[2] += loss_v.detach().float() * len(yv)
            if logits_v is not None:
                sums[3] += (logits_v.argmax(1) == yv).sum()
        return loss_v.detach()

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        for g in w_opt.param_groups:
            g["lr"] = cosine(cfg.w_lr, cfg.w_lr_min, epoch, cfg.epochs)
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        torch.manual_seed(epoch_seed(cfg.seed, epoch) + 1)  # drop-out style noise, Gumbel samples
        net.train()
        sums = torch.zeros(4, device=device)  # train loss, train correct, val loss, val correct
        count, extra_sums = 0, {}
        # the learning rate is baked into a captured graph: one graph per epoch
        graphed = _GraphedStep(one_step, sums) if graphs else None
        batches = zip(train_loader.epoch(gen), val_loader.epoch(gen))
        for i, ((xt, yt), (xv, yv)) in enumerate(batches):
            frac = (epoch * steps_per_epoch + i) / max(1, total)
            ctx = arch.draw(gen, frac)
            if graphed is not None and graphed.ok:
                loss_v = graphed(xt, yt, xv, yv, ctx, frac)
            else:
                loss_v = one_step(xt, yt, xv, yv, ctx, frac, sums)
            count += len(yt)
            for k, v in arch.step_metrics(ctx, loss_v).items():
                extra_sums.setdefault(k, []).append(v)
            step = epoch * steps_per_epoch + i + 1
            if progress is not None and (step % cfg.log_every == 0 or i == steps_per_epoch - 1):
                s = (sums / max(count, 1)).tolist()
                progress(step, total, {"epoch": epoch, "train_loss": s[0], "train_acc": s[1],
                                       "val_loss": s[2], "val_acc": s[3]})
        if graphed is not None and not graphed.ok:
            graphs = False  # capture failed (warned once): the rest of the run is eager
            _set_capturable(a_opt, False, device)
        s = (sums / max(count, 1)).tolist()
        seconds += time.perf_counter() - t0
        steps_done += steps_per_epoch
        row = {"epoch": epoch, "train_loss": s[0], "train_acc": s[1], "val_loss": s[2], "val_acc": s[3],
               "lr": w_opt.param_groups[0]["lr"], "seconds": seconds}
        if graphed is not None:
            row["graph_steps"] = graphed.replays  # steps of this epoch replayed from a CUDA graph
        row.update(arch.epoch_metrics(extra_sums))
        history.append(row)
        save_checkpoint(ckpt, {"net": net, "arch": arch}, {"w": w_opt, "a": a_opt},
                        {**meta_cfg, "epoch": epoch, "history": history, "steps": steps_done,
                         "seconds": seconds, "version": __version__})
    theta = arch.final_theta().float().cpu()
    return SearchResult(theta, arch.layout.discretize(theta), arch.layout, history, steps_done, seconds)


def search(
    cfg: SearchConfig,
    run_dir: str | Path,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
) -> SearchResult:
    """DARTS search → RUN/search/{arch,supernet}.safetensors, genotype.json, config.json, history.json."""
    configure_threads()
    device = resolve_device(device)
    torch.manual_seed(cfg.seed)
    out = Path(run_dir) / "search"
    ds, tl, vl = prepare_search_data(cfg, device)
    net, layout = build_supernet(cfg, ds, device)
    arch = DartsArch(layout, layout.init_theta(generator=torch.Generator().manual_seed(cfg.seed))).to(device)
    write_json(out / "config.json", to_dict(cfg))
    write_run_info(run_dir, cfg.dataset, ds)
    res = train_bilevel(cfg, net, arch, tl, vl, out, device, progress)
    save_tensors(out / "arch.safetensors", {"theta": res.theta}, {"layout": layout.to_dict()})
    save_tensors(out / "supernet.safetensors", net.state_dict(), {"config": to_dict(cfg)})
    write_json(out / "genotype.json", {"genotype": res.genotype.to_dict(), "layout": layout.to_dict(),
                                       "compact": res.genotype.compact()})
    write_json(out / "history.json", res.history)
    return res


def write_run_info(run_dir: str | Path, dataset: str, ds: Dataset) -> None:
    """RUN/run.json: what the run is about (dataset, classes, library version)."""
    path = Path(run_dir) / "run.json"
    old = read_json(path) if path.exists() else {}
    if "dataset" not in old:  # keys written before (preset, member settings) are kept
        write_json(path, {"dataset": dataset, "info": ds.info.to_dict(), "version": __version__,
                          "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **old})
