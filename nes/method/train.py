"""Retraining a genotype from scratch: an ensemble member.

Cosine SGD, optional drop-path (ramped linearly) and auxiliary head. After every epoch the
member's validation and test probabilities are saved (`probs/epoch_XXX.safetensors`, float16)
so that ensembles can be scored live while members train, then a checkpoint is written; a resume
continues from the last finished epoch with the same data order and noise.

Files in RUN/members/NAME/: config.json, genotype.json, labels.safetensors (val_y, test_y),
probs/epoch_XXX.safetensors, checkpoint.safetensors, weights.safetensors, history.json, metrics.json.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from ..artifacts import ArtifactError, read_json, save_tensors, write_json
from ..config import TrainConfig, epoch_sizes, from_dict, to_dict, upgrade_keys, validate
from ..data import Dataset, DeviceLoader, load_dataset, resized, split_indices
from ..layout import MemberDir, RunDir
from ..runtime import autocast, configure_threads, resolve_device, use_channels_last
from .ensemble import member_metrics
from .loop import EpochLoop, Progress
from .network import Network
from .space import Genotype

SPLIT_SEED = 0  # the val split is the same for every member of a run (needed for selection)


@dataclass
class MemberResult:
    name: str
    genotype: Genotype
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class SavedMember:
    """A retrained member's records as saved: its training config (checked; `raw` is the JSON with
    earlier setting names upgraded), its genotype record (genotype.json) and genotype."""

    config: TrainConfig
    raw: dict[str, Any]
    record: dict[str, Any]
    genotype: Genotype


def read_member(d: MemberDir) -> SavedMember:
    """Member D's config.json and genotype.json, checked (ArtifactError naming the file)."""
    raw = read_json(d.config, dict, "a member's training config")
    record = read_json(d.genotype, dict, "a member's genotype record")
    try:
        raw = upgrade_keys(raw)  # settings saved under earlier names (c → channels)
        cfg = from_dict(TrainConfig, raw)
        validate(cfg)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{d.config}: not a member's training config ({e}); retrain the member") from None
    try:
        g = Genotype.from_dict(record["genotype"])
    except (KeyError, ValueError, TypeError) as e:
        raise ArtifactError(f"{d.genotype}: no valid genotype ({e}); retrain the member") from None
    return SavedMember(cfg, raw, record, g)


def inference_network(net: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """NET traced and frozen for inference on the CPU: batch norms folded into the convolutions
    before them and constants inlined (measured 1.5–1.9× faster on the demo's members, outputs
    within 1e-6). NET itself when tracing fails or the frozen copy disagrees with it beyond 1e-4."""
    if example.device.type != "cpu":
        return net
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python values taken as constants
            frozen = torch.jit.freeze(torch.jit.trace(net.eval(), example).eval())
            gap = (frozen(example).float() - net(example).float()).abs().max().item()
    except (RuntimeError, ValueError):
        return net
    return frozen if gap < 1e-4 else net


@torch.inference_mode()
def infer(net: torch.nn.Module, loader: DeviceLoader, flip: bool) -> torch.Tensor:
    """Softmax outputs [N, K] float32 (CPU) of an eval-mode (or frozen) NET over LOADER, in order; with
    FLIP the mean with the mirror image's (test-time augmentation)."""
    out = []
    for x, _ in loader.epoch():
        with autocast(x.device):
            p = torch.softmax(net(x).float(), dim=1)
            if flip:
                p = 0.5 * (p + torch.softmax(net(x.flip(3)).float(), dim=1))
        out.append(p)
    return torch.cat(out).cpu()


def step_lr(cfg: TrainConfig, step: int, total: int) -> float | None:
    """The `onecycle` learning rate before step `step` of `total` (None for the per-epoch cosine):
    linear from lr/10 to lr over the first `warmup` of the steps, then linear to lr_min."""
    if cfg.schedule != "onecycle":
        return None
    t = step / max(total, 1)
    if t < cfg.warmup:
        return cfg.lr * (0.1 + 0.9 * t / cfg.warmup)
    return cfg.lr_min + (cfg.lr - cfg.lr_min) * (1.0 - t) / (1.0 - cfg.warmup)


@dataclass
class MemberData:
    """A member's data: the loaders over its train / val / test splits and the labels it scores."""

    ds: Dataset
    train: DeviceLoader
    val: DeviceLoader
    test: DeviceLoader
    val_y: torch.Tensor  # on the data's device
    test_y: torch.Tensor
    train_x: torch.Tensor  # uint8 [N, C, H, W]: the training split's images (the early epochs shrink them)
    val_index: torch.Tensor  # the validation split's indices into ds.train_x
    small: dict[int, tuple[DeviceLoader, ...]] = field(default_factory=dict)  # early epochs' (train, val, test)

    def loaders(self, cfg: TrainConfig, epoch: int) -> tuple[DeviceLoader, DeviceLoader, DeviceLoader]:
        """EPOCH's (train, val, test) loaders: for the early epochs of cfg.epoch_sizes the same images
        shrunk to that size (same batches and random draws as at full size; scored at the size the
        member trains on, so that its live curve means what it says), else the full-size ones."""
        sizes = epoch_sizes(cfg)
        if epoch >= len(sizes) or sizes[epoch] >= self.train.info.image_size:
            return self.train, self.val, self.test
        size = sizes[epoch]
        if size not in self.small:
            self.small[size] = tuple(
                DeviceLoader(*_shrunk(x, ld, size), ld.batch_size, train=ld.train, channels_last=ld.channels_last)
                for x, ld in ((self.train_x, self.train), (self.ds.train_x[self.val_index], self.val),
                              (self.ds.test_x, self.test)))
        return self.small[size]


def _shrunk(x: torch.Tensor, ld: DeviceLoader, size: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(images, labels, info) of loader LD's images X shrunk to SIZE."""
    small, info = resized(x, ld.info, size)
    return small, ld.y, info


def member_data(cfg: TrainConfig, device: torch.device) -> MemberData:
    """The dataset on `device`, split with the run-wide SPLIT_SEED (the same val split for every member)."""
    ds = load_dataset(cfg.dataset, cfg.data_dir, device, cfg.limit, cfg.test_limit)
    info = ds.info.with_crop(cfg.image_size, cfg.pad)
    tr, va = split_indices(len(ds.train_y), cfg.val_fraction, SPLIT_SEED)
    tr, va = tr.to(device), va.to(device)
    cl = use_channels_last(device)
    bs = min(cfg.batch_size, len(tr))
    return MemberData(
        ds,
        DeviceLoader(ds.train_x[tr], ds.train_y[tr], info, bs, train=True, channels_last=cl),
        DeviceLoader(ds.train_x[va], ds.train_y[va], info, 256, train=False, channels_last=cl),
        DeviceLoader(ds.test_x, ds.test_y, info, 256, train=False, channels_last=cl),
        ds.train_y[va], ds.test_y, ds.train_x[tr], va)


def _train_epoch(cfg: TrainConfig, net: nn.Module, opt: torch.optim.Optimizer, loader: DeviceLoader,
                 gen: torch.Generator, epoch: int, device: torch.device,
                 progress: Progress | None) -> dict[str, float]:
    """One epoch of SGD steps (label smoothing, auxiliary head, gradient clipping)."""
    net.train()
    sums = torch.zeros(2, device=device)
    count, total = 0, len(loader) * cfg.epochs
    for i, (x, y) in enumerate(loader.epoch(gen)):
        lr = step_lr(cfg, epoch * len(loader) + i, total)
        if lr is not None:
            for g in opt.param_groups:
                g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            out = net(x)
            logits, aux = out if isinstance(out, tuple) else (out, None)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            if aux is not None:
                loss = loss + cfg.aux_weight * F.cross_entropy(aux, y, label_smoothing=cfg.label_smoothing)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            sums[0] += loss.detach().float() * len(y)
            sums[1] += (logits.argmax(1) == y).sum()
        count += len(y)
        step = epoch * len(loader) + i + 1
        if progress is not None and step % cfg.log_every == 0:
            s = (sums / count).tolist()
            progress(step, total, {"epoch": epoch, "train_loss": s[0], "train_acc": s[1]})
    s = (sums / max(count, 1)).tolist()
    return {"train_loss": s[0], "train_acc": s[1]}


def _evaluate_epoch(net: nn.Module, loaders: tuple[DeviceLoader, ...], data: MemberData, out: MemberDir,
                    epoch: int, flip: bool) -> dict[str, float]:
    """Save this epoch's val/test probabilities (float16) over the epoch's LOADERS (train, val, test)
    and return their metrics, computed on the saved values so that reports and `evaluate` agree."""
    was_training = net.training
    fast = inference_network(net.eval(), next(iter(loaders[1].epoch()))[0])  # one trace serves both splits
    val_p, test_p = infer(fast, loaders[1], flip).half(), infer(fast, loaders[2], flip).half()
    net.train(was_training)
    save_tensors(out.probs(epoch), {"val": val_p, "test": test_p}, {"epoch": epoch})
    vm = member_metrics(val_p.float(), data.val_y.cpu())
    tm = member_metrics(test_p.float(), data.test_y.cpu())
    return {**{f"val_{k}": v for k, v in vm.items()}, **{f"test_{k}": v for k, v in tm.items()}}


def retrain(
    cfg: TrainConfig,
    genotype: Genotype,
    run_dir: str | Path,
    name: str,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> MemberResult:
    """Train `genotype` from scratch (or resume) into RUN/members/NAME."""
    configure_threads()
    device = resolve_device(device)
    run = RunDir(run_dir)
    out = run.member(name)
    data = member_data(cfg, device)
    info = data.ds.info.with_crop(cfg.image_size, cfg.pad)
    torch.manual_seed(cfg.seed)
    net = Network(genotype, cfg.channels, info.num_classes, cfg.layers, info.channels, auxiliary=cfg.auxiliary).to(device)
    if use_channels_last(device):
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov and cfg.momentum > 0)
    loop = EpochLoop(out.path, {"net": net}, {"w": opt}, opt, cfg.lr, cfg.lr_min, cfg.epochs, cfg.seed, device,
                     {"config": to_dict(cfg), "genotype": genotype.to_dict(), **(extra_meta or {})})
    if not loop.resumed:
        run.write_dataset_info(cfg.dataset, data.ds.info.to_dict())
        write_json(out.config, to_dict(cfg))
        write_json(out.genotype, {"genotype": genotype.to_dict(), "compact": genotype.compact(), **(extra_meta or {})})
        save_tensors(out.labels, {"val_y": data.val_y, "test_y": data.test_y})
    steps_per_epoch = len(data.train)
    if progress is not None:  # at once: the store shows the job as started, and a cancel is seen early
        progress(loop.start * steps_per_epoch, steps_per_epoch * cfg.epochs, {"epoch": loop.start})
    for epoch, gen in loop:
        net.drop_prob = cfg.drop_path * epoch / cfg.epochs
        loaders = data.loaders(cfg, epoch)
        row = _train_epoch(cfg, net, opt, loaders[0], gen, epoch, device, progress)
        loop.check_finite(epoch, row)  # before this epoch's probabilities are saved
        # the mirror images cost a second pass: only the final scores (the member's) use them
        flip = cfg.tta_flip and info.flip and epoch == cfg.epochs - 1
        scores = _evaluate_epoch(net, loaders, data, out, epoch, flip)
        row = loop.end_epoch(epoch, {**row, **scores}, steps_per_epoch)
        if progress is not None:
            progress(loop.steps, steps_per_epoch * cfg.epochs, row)
    final = loop.history[-1] if loop.history else {}
    metrics = {k: v for k, v in final.items() if k.startswith(("val_", "test_"))}
    if loop.start < cfg.epochs or not out.finished:
        save_tensors(out.weights, net.state_dict(), {"genotype": genotype.to_dict(), "config": to_dict(cfg)})
        write_json(out.history, loop.history)
        write_json(out.metrics, {"metrics": metrics, "steps": loop.steps, "seconds": loop.seconds})
    return MemberResult(name, genotype, loop.history, metrics, loop.steps, loop.seconds)
