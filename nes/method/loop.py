"""The epoch skeleton shared by the bi-level search loop and member training.

Resume from the folder's checkpoint, cosine learning rate, per-epoch seeding (the data order,
augmentation and any noise of epoch e come from generators seeded with (seed, e), so a resume from
epoch e replays exactly), the training clock, the history and a checkpoint after every epoch.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from .._version import __version__
from ..artifacts import load_checkpoint, save_checkpoint
from ..config import upgrade_keys
from ..layout import StepDir

Progress = Callable[[int, int, dict[str, float]], None]
"""progress(step, total_steps, metrics) — may raise to cancel (the last checkpoint stays)."""


class TrainingDiverged(ValueError):
    """A loss or metric turned NaN or infinite (the message names the setting to lower)."""


def cosine(lr: float, lr_min: float, epoch: int, epochs: int) -> float:
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * epoch / epochs))


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**62)


class EpochLoop:
    """`for epoch, gen in loop:` … `loop.end_epoch(epoch, row, steps)`.

    `modules` and `optimizers` are what the checkpoint holds; `lr_opt` follows the cosine schedule
    from `lr` to `lr_min`; `meta` (the config, …) must match a checkpoint being resumed; `lr_names`
    are the settings a diverged run should lower (named in the message)."""

    def __init__(self, folder: str | Path, modules: Mapping[str, nn.Module],
                 optimizers: Mapping[str, torch.optim.Optimizer], lr_opt: torch.optim.Optimizer,
                 lr: float, lr_min: float, epochs: int, seed: int, device: torch.device,
                 meta: Mapping[str, Any], lr_names: str = "lr") -> None:
        self.lr_names = lr_names
        self.ckpt = StepDir(folder).checkpoint
        self.modules, self.optimizers, self.lr_opt = dict(modules), dict(optimizers), lr_opt
        self.lr, self.lr_min, self.epochs, self.seed = lr, lr_min, epochs, seed
        self.meta = dict(meta)
        self.start, self.history, self.steps, self.seconds = 0, [], 0, 0.0
        self.resumed = self.ckpt.exists()
        if self.resumed:
            m = load_checkpoint(self.ckpt, self.modules, self.optimizers, device, self.meta, upgrade_keys)
            self.start, self.history, self.steps, self.seconds = m["epoch"] + 1, m["history"], m["steps"], m["seconds"]
        self._t0 = time.perf_counter()

    def __iter__(self) -> Iterator[tuple[int, torch.Generator]]:
        for epoch in range(self.start, self.epochs):
            self._t0 = time.perf_counter()
            for g in self.lr_opt.param_groups:
                g["lr"] = cosine(self.lr, self.lr_min, epoch, self.epochs)
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            torch.manual_seed(epoch_seed(self.seed, epoch) + 1)  # drop-path style noise, Gumbel samples
            yield epoch, gen

    @property
    def current_lr(self) -> float:
        return self.lr_opt.param_groups[0]["lr"]

    def check_finite(self, epoch: int, row: Mapping[str, Any]) -> None:
        """TrainingDiverged when a metric of the epoch is NaN or infinite (the last checkpoint,
        from before this epoch, stays)."""
        bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(f"training diverged in epoch {epoch}: {', '.join(bad)} became "
                                   f"{row[bad[0]]}; lower {self.lr_names} (--set {self.lr_names.split()[0]}=…) "
                                   "and start a new run or member")

    def end_epoch(self, epoch: int, row: Mapping[str, Any], steps: int) -> dict[str, Any]:
        """Stop the epoch's clock, add `row` (with lr and the cumulative seconds) to the history
        and write the checkpoint. Returns the history row."""
        self.check_finite(epoch, row)
        self.seconds += time.perf_counter() - self._t0
        self.steps += steps
        full = {"epoch": epoch, **row, "lr": self.current_lr, "seconds": self.seconds}
        self.history.append(full)
        save_checkpoint(self.ckpt, self.modules, self.optimizers,
                        {**self.meta, "epoch": epoch, "history": self.history, "steps": self.steps,
                         "seconds": self.seconds, "version": __version__})
        return full
