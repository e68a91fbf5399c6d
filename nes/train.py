"""Retraining a genotype from scratch: an ensemble member.

Cosine SGD, optional drop-path (ramped linearly) and auxiliary head. After every epoch the
member's validation and test probabilities are saved (`probs/epoch_XXX.safetensors`, float16)
so that ensembles can be scored live while members train, then a checkpoint is written; a resume
continues from the last finished epoch with the same data order and noise.

Files in RUN/members/NAME/: config.json, genotype.json, labels.safetensors (val_y, test_y),
probs/epoch_XXX.safetensors, checkpoint.safetensors, weights.safetensors, history.json, metrics.json.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from . import __version__
from .artifacts import ArtifactError, load_checkpoint, load_tensors, save_checkpoint, save_tensors, write_json
from .config import TrainConfig, to_dict
from .data import DeviceLoader, load_dataset, split_indices
from .ensemble import member_metrics
from .network import Network
from .runtime import autocast, configure_threads, resolve_device, use_channels_last
from .search import Progress, cosine, epoch_seed, write_run_info
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


@torch.no_grad()
def predict_probs(net: nn.Module, loader: DeviceLoader, device: torch.device) -> torch.Tensor:
    """Softmax outputs [N, K] (float32, on CPU) of `net` in eval mode over `loader` (in order)."""
    was_training = net.training
    net.eval()
    out = []
    for x, _ in loader.epoch():
        with autocast(device):
            logits = net(x)
        out.append(torch.softmax(logits.float(), dim=1))
    net.train(was_training)
    return torch.cat(out).cpu()


def member_dir(run_dir: str | Path, name: str) -> Path:
    if not name or any(ch in name for ch in "/\\") or name.startswith("."):
        raise ValueError(f"member name {name!r}: use letters, digits, '-', '_' (no slashes)")
    return Path(run_dir) / "members" / name


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
    out = member_dir(run_dir, name)
    ds = load_dataset(cfg.dataset, cfg.data_dir, device, cfg.limit, cfg.test_limit)
    info = ds.info.with_crop(cfg.image_size, cfg.pad)
    tr, va = split_indices(len(ds.train_y), cfg.val_fraction, SPLIT_SEED)
    tr, va = tr.to(device), va.to(device)
    cl = use_channels_last(device)
    bs = min(cfg.batch_size, len(tr))
    train_loader = DeviceLoader(ds.train_x[tr], ds.train_y[tr], info, bs, train=True, channels_last=cl)
    val_loader = DeviceLoader(ds.train_x[va], ds.train_y[va], info, 256, train=False, channels_last=cl)
    test_loader = DeviceLoader(ds.test_x, ds.test_y, info, 256, train=False, channels_last=cl)

    torch.manual_seed(cfg.seed)
    net = Network(genotype, cfg.c, info.num_classes, cfg.layers, info.channels, auxiliary=cfg.auxiliary).to(device)
    if cl:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    meta_cfg = {"config": to_dict(cfg), "genotype": genotype.to_dict(), **(extra_meta or {})}
    ckpt = out / "checkpoint.safetensors"
    start_epoch, history, steps, seconds = 0, [], 0, 0.0
    if ckpt.exists():
        meta = load_checkpoint(ckpt, {"net": net}, {"w": opt}, device, meta_cfg)
        start_epoch, history, steps, seconds = meta["epoch"] + 1, meta["history"], meta["steps"], meta["seconds"]
    else:
        write_run_info(run_dir, cfg.dataset, ds)
        write_json(out / "config.json", to_dict(cfg))
        write_json(out / "genotype.json", {"genotype": genotype.to_dict(), "compact": genotype.compact(),
                                           **(extra_meta or {})})
        save_tensors(out / "labels.safetensors", {"val_y": ds.train_y[va], "test_y": ds.test_y})

    total = len(train_loader) * cfg.epochs
    if progress is not None:  # at once: the store shows the job as started, and a cancel is seen early
        progress(start_epoch * len(train_loader), total, {"epoch": start_epoch})
    val_y, test_y = ds.train_y[va].cpu(), ds.test_y.cpu()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = cosine(cfg.lr, cfg.lr_min, epoch, cfg.epochs)
        net.drop_prob = cfg.drop_path * epoch / cfg.epochs
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        torch.manual_seed(epoch_seed(cfg.seed, epoch) + 1)
        net.train()
        sums = torch.zeros(2, device=device)
        count = 0
        for i, (x, y) in enumerate(train_loader.epoch(gen)):
            opt.zero_grad(set_to_none=True)
            with autocast(device):
                out_ = net(x)
                logits, aux = out_ if isinstance(out_, tuple) else (out_, None)
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
            step = epoch * len(train_loader) + i + 1
            if progress is not None and (step % cfg.log_every == 0):
                s = (sums / count).tolist()
                progress(step, total, {"epoch": epoch, "train_loss": s[0], "train_acc": s[1]})
        s = (sums / max(count, 1)).tolist()
        val_p, test_p = predict_probs(net, val_loader, device), predict_probs(net, test_loader, device)
        seconds += time.perf_counter() - t0
        steps += len(train_loader)
        val_p, test_p = val_p.half(), test_p.half()  # as saved, so reports and `evaluate` agree
        vm, tm = member_metrics(val_p.float(), val_y), member_metrics(test_p.float(), test_y)
        row = {"epoch": epoch, "train_loss": s[0], "train_acc": s[1], "lr": opt.param_groups[0]["lr"],
               **{f"val_{k}": v for k, v in vm.items()}, **{f"test_{k}": v for k, v in tm.items()},
               "seconds": seconds}
        history.append(row)
        save_tensors(out / "probs" / f"epoch_{epoch:03d}.safetensors",
                     {"val": val_p, "test": test_p}, {"epoch": epoch})
        save_checkpoint(ckpt, {"net": net}, {"w": opt},
                        {**meta_cfg, "epoch": epoch, "history": history, "steps": steps,
                         "seconds": seconds, "version": __version__})
        if progress is not None:
            progress(steps, total, {"epoch": epoch, **row})
    final = history[-1] if history else {}
    metrics = {k: v for k, v in final.items() if k.startswith(("val_", "test_"))}
    if start_epoch < cfg.epochs or not (out / "weights.safetensors").exists():
        save_tensors(out / "weights.safetensors", net.state_dict(),
                     {"genotype": genotype.to_dict(), "config": to_dict(cfg)})
        write_json(out / "history.json", history)
        write_json(out / "metrics.json", {"metrics": metrics, "steps": steps, "seconds": seconds})
    return MemberResult(name, genotype, history, metrics, steps, seconds)


def load_member_probs(run_dir: str | Path, name: str, epoch: int | None = None) -> dict[str, torch.Tensor]:
    """{'val', 'test', 'val_y', 'test_y', 'epoch'} of member NAME at `epoch` (default: the last saved)."""
    d = member_dir(run_dir, name)
    if not d.is_dir():
        raise ArtifactError(f"member {name!r}: no folder {d}")
    files = sorted((d / "probs").glob("epoch_*.safetensors"))
    if not files:
        raise ArtifactError(f"member {name!r}: no saved probabilities yet (has it finished an epoch?)")
    f = files[-1] if epoch is None else d / "probs" / f"epoch_{epoch:03d}.safetensors"
    probs, _ = load_tensors(f)
    labels, _ = load_tensors(d / "labels.safetensors")
    return {"val": probs["val"].float(), "test": probs["test"].float(), "val_y": labels["val_y"],
            "test_y": labels["test_y"], "epoch": int(f.stem.split("_")[1])}


def list_members(run_dir: str | Path) -> list[str]:
    d = Path(run_dir) / "members"
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def finished_members(run_dir: str | Path) -> list[str]:
    """Members whose training ended (final weights written), sorted by name."""
    return [n for n in list_members(run_dir) if (Path(run_dir) / "members" / n / "weights.safetensors").exists()]
