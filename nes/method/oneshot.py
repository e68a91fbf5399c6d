"""One-shot accuracy: a discrete architecture scored with the search's shared supernet weights.

The hypernetwork gives any architecture on its path at once; this says, without training, roughly
how good it is: the supernet of the run's search runs only the architecture's chosen ops (exact
one-hot mixing, the sparse path GDAS uses) on a fixed slice of the search's validation half, with
batch-statistics batch norm (the supernet's BN never tracked a single architecture). Shared weights
are known to rank architectures loosely, so `rank_agreement` measures how far to trust it on the
run's own retrained members (Spearman ρ between estimate and retrained test accuracy).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..artifacts import ArtifactError, load_tensors
from ..data import DeviceLoader, downsample, load_dataset, split_indices
from ..layout import RunDir
from ..runtime import resolve_device, use_channels_last
from .bilevel import build_supernet
from .darts import load_search
from .diversity import spearman
from .ensemble import accuracy
from .space import ArchLayout, ArchWeights, Genotype
from .supernet import Supernet

DEFAULT_IMAGES = 2000  # of the search's validation half: ~0.15 s per architecture on 2 CPU cores


@dataclass
class OneShot:
    """The run's supernet with the search's weights and a fixed validation slice to score on."""

    net: Supernet
    layout: ArchLayout
    loader: DeviceLoader  # the first `images` of the search's validation half, no augmentation


def one_shot_setup(run_dir: str | Path, images: int = DEFAULT_IMAGES, device: str | None = None) -> OneShot:
    """Load the run's search (config, layout, supernet weights) and its validation slice; an
    ArtifactError naming the file when the search or its supernet is missing or does not fit."""
    dev = resolve_device(device)
    search = load_search(run_dir)
    cfg = search.config
    ds = load_dataset(cfg.dataset, cfg.data_dir, dev, cfg.limit, cfg.test_limit, download=False)
    ds, info = downsample(ds, ds.info.with_crop(cfg.image_size, cfg.pad), cfg.downsample)
    _, va = split_indices(len(ds.train_y), 0.5, cfg.seed)  # the search's own validation half
    va = va[:images].to(dev)
    loader = DeviceLoader(ds.train_x[va], ds.train_y[va], info, 256, train=False,
                          channels_last=use_channels_last(dev))
    net, layout = build_supernet(cfg, ds, dev)
    path = RunDir(run_dir).search.supernet
    state, _ = load_tensors(path, dev, finite=True)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ArtifactError(f"{path}: the supernet weights do not fit the search's config "
                            f"({str(e).splitlines()[0]}); run the search again") from None
    return OneShot(net.set_sparse(True), layout, loader)


def discrete_weights(layout: ArchLayout, genotype: Genotype) -> ArchWeights:
    """Exact one-hot mixing weights of GENOTYPE: op weight 1 on each kept edge's op, input weight 1
    on each kept input, 0 elsewhere (so the sparse supernet runs only the genotype's ops)."""
    parts = layout.split(layout.genotype_logits(genotype, scale=1.0))
    return {ct: (alpha.clone(), torch.cat(list(betas))) for ct, (alpha, betas) in parts.items()}


@torch.no_grad()
def one_shot_probs(setup: OneShot, genotype: Genotype) -> torch.Tensor:
    """Class probabilities [N, K] (float32, on the CPU) of GENOTYPE with the shared weights on the
    validation slice (`setup.loader`'s images in order; their labels are `setup.loader.y`)."""
    w = {ct: (a.to(setup.loader.y.device), i.to(setup.loader.y.device))
         for ct, (a, i) in discrete_weights(setup.layout, genotype).items()}
    setup.net.train()  # batch statistics: the supernet's running BN stats mix every op
    return torch.cat([torch.softmax(setup.net(x, w).float(), 1).cpu() for x, _ in setup.loader.epoch()])


def one_shot_accuracy(setup: OneShot, genotype: Genotype) -> float:
    """Top-1 accuracy in [0, 1] of GENOTYPE with the shared weights on the validation slice."""
    return accuracy(one_shot_probs(setup, genotype), setup.loader.y)


def rank_agreement(estimates: Sequence[float], retrained: Sequence[float]) -> float | None:
    """Spearman ρ between one-shot estimates and retrained accuracies of the same architectures
    (None with fewer than 3 of them, where a rank correlation says nothing)."""
    if len(estimates) != len(retrained):
        raise ValueError(f"{len(estimates)} estimates for {len(retrained)} retrained accuracies")
    return spearman(list(estimates), list(retrained)) if len(estimates) >= 3 else None
