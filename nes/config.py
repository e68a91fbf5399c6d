"""Frozen run configurations with commented defaults and named presets.

Every checkpoint stores the config it was made with (`to_dict`), and a resume refuses a
checkpoint whose config differs. `from_preset(name, overrides)` applies `--set key=value`
strings with the field's type.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping, TypeVar

T = TypeVar("T")
DATASET_NAMES = ("fashion-mnist", "cifar10", "cifar100", "digits")  # loaders: nes.data (its DATASETS)
# The most members an ensemble (pipeline, baseline) may have: each one is a retraining job, and
# scoring compares members pairwise; above this a typo (--members 1000) would queue for days.
MAX_MEMBERS = 64
REGULARIZER_NAMES = ("js", "edges", "js-target")  # their classes and what λ means: nes.method.regularizers
SCHEDULES = ("cosine", "onecycle")  # TrainConfig.schedule
SEARCH_MODES = {  # SearchConfig.mode → what it does (shown by the Search page and `search --help`)
    "darts": "every op on every edge, mixed by softmax(α): full fidelity (the paper's)",
    "pc": "PC-DARTS partial channels: an edge's ops see 1/partial_k of its channels, the rest bypass them",
    "gdas": "GDAS: each step samples one op per edge (Gumbel-softmax, straight-through) and runs only it",
}

# SearchConfig.arch_every choices offered by the Search page (0: leave the preset's)
ARCH_EVERY_CHOICES = {0: "the preset's", 1: "every step (DARTS)", 2: "every 2nd step", 4: "every 4th step"}


@dataclass(frozen=True)
class SearchConfig:
    """DARTS search (and the settings the hypernetwork training shares with it)."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None  # where to look first for the dataset files
    limit: int | None = None  # training images used (None = all); split into train/val halves
    test_limit: int | None = None  # test images used for reports (None = all)
    image_size: int | None = None  # network input size (None = dataset default; 32 for Fashion-MNIST)
    pad: int | None = None  # zero padding before the random crop (None = dataset default: 4, digits 1)
    channels: int = 10  # initial channels C (the cell works on 2·C after the first reduction)
    layers: int = 1  # cells; 1 = a single reduction cell, as in the original experiments
    nodes: int = 4  # intermediate nodes per cell
    inputs_per_node: int = 1  # k inputs kept per node when discretizing (2 = classic DARTS)
    batch_size: int = 64
    epochs: int = 50
    w_lr: float = 0.025  # SGD for the supernet weights, cosine-annealed to w_lr_min
    w_lr_min: float = 1e-3
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0
    a_lr: float = 3e-4  # Adam for α (or the hypernetwork)
    a_beta1: float = 0.5
    a_beta2: float = 0.999
    a_weight_decay: float = 1e-3
    second_order: bool = False  # unrolled DARTS (finite-difference Hessian-vector product)
    unrolled_eps: float = 0.01  # finite-difference step scale for second order
    # cheaper search steps (nes.method.supernet; measured in benchmarks/bench_search.py):
    mode: str = "darts"  # "darts": every op on every edge; "pc": PC-DARTS partial channels; "gdas": one sampled op per edge
    partial_k: int = 2  # pc: the ops of an edge see 1/partial_k of its channels (PC-DARTS used 4 on wider cells)
    gumbel_start: float = 10.0  # gdas: the Gumbel-softmax temperature falls linearly from this …
    gumbel_end: float = 0.1  # … to this over the search
    downsample: int = 1  # search on images shrunk by this factor (area average; 1 = full resolution)
    # the architecture step on every k-th step only, at k·a_lr (Adam moves θ about a_lr per update,
    # so θ travels as far); the weight step runs every step. 1 = DARTS's alternation
    arch_every: int = 1
    # epochs of weight steps alone before the first architecture step (PC-DARTS, P-DARTS): on
    # untrained convolutions the parameter-free ops (pools, skip) look best, and θ learns that
    arch_warmup: int = 0
    seed: int = 0
    log_every: int = 10  # steps between progress callbacks (each one syncs the device)


@dataclass(frozen=True)
class HypernetConfig(SearchConfig):
    """Hypernetwork α(λ) training (and the per-λ search): the search loop's settings plus these.

    The data and supernet fields (`INHERITED_FROM_SEARCH`) are taken from the run's search."""

    # "edges": c·(λ − S)²; "js-target": c·s²·(√λ − √JS_g)² + c·s²·w·overconfidence; "js": −λ·JS
    # (nes.method.regularizers)
    regularizer: str = "edges"
    pivots: int = 5  # K anchors of the piecewise-linear hypernetwork
    train_pivots: bool = False  # move the interior pivots in training (else evenly spaced)
    pin_star: bool = True  # the anchor at the α* end of the λ range stays α*'s logits
    lam_min: float = 0.0
    lam_max: float | None = None  # None: Λ (edges, js) or the largest distance to α* (js-target)
    lam_eps: float = 0.2  # λ ~ U(lam_min − ε, lam_max + ε), ε = lam_eps·range/Λ; none at a pinned end
    tau: float = 0.99  # smoothing of genotype*'s one-hot distributions
    target_weight_start: float = 0.3  # weight c of the target regularizers (edges, js-target), warm-up
    target_weight_end: float = 3.0
    overconfidence_weight: float = 1.0  # js-target: weight of the penalty on distributions more confident than α*'s
    t_start: float = 1.0  # Gumbel-softmax temperature, linear decay
    t_end: float = 0.05
    init_noise: float = 1e-3  # anchors start at α*'s logits plus this much Gaussian noise
    warm_start: bool = True  # supernet weights w start from the search's


@dataclass(frozen=True)
class TrainConfig:
    """Retraining a genotype from scratch (an ensemble member)."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    limit: int | None = None  # training images used (None = all), before the val split
    test_limit: int | None = None
    image_size: int | None = None
    pad: int | None = None
    val_fraction: float = 0.1  # held out from the training images for ensemble selection
    channels: int = 16  # initial channels C
    layers: int = 2  # cells (2 = two reduction cells, as in the original experiments)
    batch_size: int = 64
    epochs: int = 50
    lr: float = 0.025  # SGD, cosine-annealed to lr_min
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    drop_path: float = 0.0  # drop-path probability, ramped linearly over the epochs
    auxiliary: bool = False  # auxiliary head after the last reduction cell
    aux_weight: float = 0.4
    label_smoothing: float = 0.0
    schedule: str = "cosine"  # "cosine": per epoch, lr → lr_min (the paper's); "onecycle": per step, see warmup
    warmup: float = 0.2  # onecycle: the fraction of steps rising from lr/10 to lr, then linear decay to lr_min
    nesterov: bool = False
    tta_flip: bool = False  # final scores average the image and its mirror (datasets that flip; earlier epochs: image only)
    # progressive resizing: the image size of each of the first epochs ("16,22"; each is scored at
    # its size), later epochs at image_size; an epoch at 20×20 costs half of one at 28×28
    epoch_sizes: str = ""
    seed: int = 0
    log_every: int = 20


SEARCH_PRESETS: dict[str, dict[str, Any]] = {
    # seconds on 2 CPU cores: tests and the CLI's end-to-end check
    "smoke": dict(dataset="digits", limit=256, test_limit=128, channels=4, nodes=4, batch_size=32, epochs=2,
                  a_lr=3e-3, log_every=2),
    # half a minute on 2 CPU cores: a Fashion-MNIST subset searched at half resolution (14×14) with
    # the architecture step on every 4th step (the fastest search mode whose α* holds: the same α*
    # as a step every step, benchmarks/bench_search.py --quality quick); a_lr 0.03 for 8 epochs so
    # that α* is confident on its kept edges and its genotype settles before the end
    # (figures: benchmarks/results/README.md)
    "quick": dict(dataset="fashion-mnist", limit=4000, test_limit=2000, image_size=28, pad=2, channels=8,
                  batch_size=64, epochs=8, a_lr=0.03, downsample=2, arch_every=4),
    # the original experiment: 1 searched cell, C=10, 4 nodes, 1 input per node, batch 64, 50 epochs
    "paper": dict(dataset="fashion-mnist", channels=10, layers=1, nodes=4, inputs_per_node=1, batch_size=64,
                  epochs=50),
}

HYPERNET_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(SEARCH_PRESETS["smoke"], a_lr=0.05, epochs=2),
    # the search's θ/4 too (arch_every 4: ρ and distinct genotypes hold on 3 seeds, the hypernetwork
    # in ≈ 0.7× the time; benchmarks/bench_hypernet.py)
    "quick": dict(SEARCH_PRESETS["quick"], a_lr=0.06, epochs=10),
    "paper": dict(SEARCH_PRESETS["paper"], a_lr=3e-3),
}

TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(dataset="digits", limit=256, test_limit=128, channels=4, batch_size=32, epochs=2, log_every=2),
    # ≥ 90 % on Fashion-MNIST's validation split in under 2 minutes on 2 CPU cores
    # (benchmarks/bench_retrain.py --recipes all; figures: benchmarks/results/README.md): all 54k
    # training images for 3 epochs, the first two shrunk to 14 and 20 px (progressive resizing: 0.6×
    # the time of three full-size epochs, ~1 point of accuracy), no random crop (a 3-epoch member
    # underfits: the crop cost 0.4 points), a per-step one-cycle schedule peaking at 0.2, Nesterov
    # momentum, label smoothing 0.1 (pooling-heavy genotypes reach 90 % in 3 epochs only with it),
    # flip test-time augmentation of the final scores. `--set epoch_sizes=` trains every epoch at 28 px
    "quick": dict(dataset="fashion-mnist", limit=None, image_size=28, pad=0, channels=12, batch_size=128,
                  epochs=3, lr=0.2, nesterov=True, schedule="onecycle", weight_decay=5e-4, tta_flip=True,
                  label_smoothing=0.1, epoch_sizes="14,20"),
    # the original experiment: 2 cells, C=16, 50 epochs
    "paper": dict(dataset="fashion-mnist", channels=16, layers=2, batch_size=64, epochs=50),
}

PRESETS = {SearchConfig: SEARCH_PRESETS, HypernetConfig: HYPERNET_PRESETS, TrainConfig: TRAIN_PRESETS}
# Fields a hypernetwork / per-λ search takes from the run's search (data and supernet shape).
INHERITED_FROM_SEARCH = ("dataset", "data_dir", "limit", "test_limit", "image_size", "pad", "channels", "layers",
                         "nodes", "inputs_per_node", "batch_size", "mode", "partial_k", "downsample")


def _parse_value(cls: type, name: str, text: str, typed: str | None = None) -> Any:
    """`text` as a value of field `name`; the message of a bad value names the setting as `typed`."""
    ftype = {f.name: f.type for f in fields(cls)}[name]
    t = str(ftype)
    if text.lower() in ("none", "null") and "None" in t:
        return None
    try:
        if t.startswith("bool"):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if t.startswith("int"):
            return int(text)
        if t.startswith("float"):
            return float(text)
    except ValueError:
        raise ValueError(f"--set {typed or name}={text}: expected {t.split(' ')[0]}") from None
    return text


# Settings renamed since an earlier version: old name → new name (read from old files and --set).
RENAMED = {"c_start": "target_weight_start", "c_end": "target_weight_end", "c": "channels"}


def upgrade_keys(d: Mapping[str, Any]) -> dict[str, Any]:
    """`d` with the settings of earlier versions under their current names."""
    return {RENAMED.get(k, k): v for k, v in d.items()}


def from_preset(cls: type[T], preset: str = "paper", overrides: Mapping[str, Any] | None = None) -> T:
    """Build config `cls` from a named preset plus overrides (strings are parsed by field type)."""
    presets = PRESETS[cls]
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    values = dict(presets[preset])
    names = {f.name for f in fields(cls)}
    for typed, v in (overrides or {}).items():
        k = RENAMED.get(typed, typed)
        if k not in names:
            raise ValueError(f"unknown setting {typed!r} for {cls.__name__}; known: {', '.join(sorted(names))}")
        values[k] = _parse_value(cls, k, v, typed) if isinstance(v, str) else v
    cfg = cls(**values)
    validate(cfg)
    return cfg


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """['a=1', 'b=x'] → {'a': '1', 'b': 'x'}; ValueError on an item without '='."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


# Range of every numeric setting: (test, what the message says it must be).
_AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
_POSITIVE = (lambda v: v > 0, "> 0")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
_FRACTION = (lambda v: 0 <= v < 1, "in [0, 1)")
RANGES: dict[str, tuple[Any, str]] = {
    **{k: _AT_LEAST_1 for k in ("channels", "layers", "nodes", "batch_size", "epochs", "log_every", "image_size",
                                "partial_k", "downsample", "arch_every")},
    **{k: (lambda v: v >= 2, ">= 2 (or none)") for k in ("limit", "test_limit")},
    "inputs_per_node": (lambda v: v in (1, 2), "1 or 2"),
    "pivots": (lambda v: v >= 2, ">= 2 (a piecewise-linear map needs two anchors)"),
    "pad": _NON_NEGATIVE, "seed": _NON_NEGATIVE, "arch_warmup": _NON_NEGATIVE,
    **{k: _POSITIVE for k in ("w_lr", "a_lr", "lr", "grad_clip", "unrolled_eps", "t_start", "t_end",
                              "gumbel_start", "gumbel_end")},
    **{k: _NON_NEGATIVE for k in ("w_lr_min", "lr_min", "w_weight_decay", "a_weight_decay", "weight_decay",
                                  "lam_eps", "target_weight_start", "target_weight_end", "init_noise", "aux_weight",
                                  "overconfidence_weight")},
    **{k: _FRACTION for k in ("w_momentum", "momentum", "a_beta1", "a_beta2", "drop_path", "label_smoothing")},
    "val_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "warmup": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "tau": (lambda v: 0 < v <= 1, "in (0, 1]"),
}


def _check_type(name: str, ftype: str, v: Any) -> None:
    """ValueError when `v` is not of the field's declared type (e.g. a string where a count goes)."""
    if v is None and "None" in ftype:
        return
    kind = ftype.split("|")[0].strip()
    ok = {"bool": lambda: isinstance(v, bool), "str": lambda: isinstance(v, str),
          "int": lambda: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda: isinstance(v, (int, float)) and not isinstance(v, bool)}.get(kind, lambda: True)()
    if not ok:
        raise ValueError(f"setting {name} must be {'an' if kind == 'int' else 'a'} {kind}, got {v!r}")


def validate(cfg: Any) -> None:
    """Range checks with messages that name the setting: every number finite and in its range."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        _check_type(f.name, str(f.type), v)
        if v is None or isinstance(v, (bool, str)):
            continue
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"setting {f.name} must be a finite number, got {v!r}; set it with --set {f.name}=VALUE")
        test, rule = RANGES.get(f.name, (None, ""))
        if test is not None and not test(v):
            raise ValueError(f"setting {f.name} must be {rule}, got {v}")
    if getattr(cfg, "dataset", DATASET_NAMES[0]) not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(DATASET_NAMES)} "
                         "(--dataset or --set dataset=…)")
    _check_split(cfg)
    if getattr(cfg, "mode", "darts") not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {cfg.mode!r}; choose one of {', '.join(SEARCH_MODES)}")
    if hasattr(cfg, "epoch_sizes"):
        epoch_sizes(cfg)  # ValueError naming the setting
    if getattr(cfg, "schedule", "cosine") not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if hasattr(cfg, "regularizer") and cfg.regularizer not in REGULARIZER_NAMES:
        raise ValueError(f"unknown regularizer {cfg.regularizer!r}; choose one of {', '.join(REGULARIZER_NAMES)}")
    if getattr(cfg, "arch_warmup", 0) and cfg.arch_warmup >= cfg.epochs:
        raise ValueError(f"arch_warmup ({cfg.arch_warmup}) must be smaller than epochs ({cfg.epochs}): θ would "
                         f"never be trained; lower it (--set arch_warmup=…) or raise epochs")
    if getattr(cfg, "lam_max", None) is not None and cfg.lam_max <= cfg.lam_min:
        raise ValueError(f"lam_max ({cfg.lam_max}) must be larger than lam_min ({cfg.lam_min})")


def epoch_sizes(cfg: Any) -> list[int]:
    """TrainConfig.epoch_sizes as ints (one per early epoch); ValueError naming the setting when an
    entry is not a size from 4 to image_size or there are not fewer of them than epochs."""
    text = cfg.epoch_sizes.replace(" ", "")
    try:
        sizes = [int(v) for v in text.split(",")] if text else []
    except ValueError:
        raise ValueError(f"setting epoch_sizes={cfg.epoch_sizes!r} must be comma-separated image sizes, "
                         "e.g. --set epoch_sizes=16,22") from None
    top = cfg.image_size
    if any(s < 4 or (top is not None and s > top) for s in sizes) or len(sizes) >= cfg.epochs:
        raise ValueError(f"setting epoch_sizes={cfg.epoch_sizes!r} must hold fewer sizes than epochs ({cfg.epochs}), "
                         f"each from 4 to image_size ({top})")
    return sizes


def _check_split(cfg: Any) -> None:
    """With a known number of training images (`limit`), the validation split (`val_fraction`)
    must hold at least one image and leave at least one for training: members are selected and
    calibrated on it. Without `limit`, `nes.data.split_indices` checks it once the data is loaded."""
    vf, limit = getattr(cfg, "val_fraction", None), getattr(cfg, "limit", None)
    if vf is None or limit is None:
        return
    n_val = round(limit * vf)
    if not 1 <= n_val <= limit - 1:
        raise ValueError(f"setting val_fraction={vf} of limit={limit} training images leaves {n_val} validation "
                         f"and {limit - n_val} training images; --set val_fraction=… so that both get at least one "
                         f"(e.g. val_fraction={max(0.1, 1.5 / limit):.3g})")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], d: Mapping[str, Any]) -> T:
    """Rebuild a config from a checkpoint; unknown keys are an error (a foreign or newer file)."""
    names = {f.name for f in fields(cls)}
    d = upgrade_keys(d)
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)} (made by another version?)")
    return cls(**d)
