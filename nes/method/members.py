"""Scoring members from their saved probabilities: per-epoch curves, ensembles, greedy selection.

Every member saves its val/test probabilities after each epoch (`nes.method.train`), so all of
this works while members still train (the live ensemble of the app) and needs no data or model.
Files are cached by (path, mtime): a page that reruns every two seconds reads each epoch once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..artifacts import ArtifactError, load_tensors
from ..layout import RunDir
from .ensemble import (calibrated_metrics, ensemble_metrics, greedy_selection, member_metrics, pairwise_disagreement,
                       predictive_js)
from .stats import vs_best_member

Probs = tuple[list[tuple[int, dict[str, torch.Tensor]]], dict[str, torch.Tensor]]
"""([(epoch, {'val', 'test'} float32)], labels {'val_y', 'test_y'})"""

_CACHE: dict[tuple[str, float], dict[str, torch.Tensor]] = {}


def _load_probs(path: Path) -> dict[str, torch.Tensor]:
    key = (str(path), path.stat().st_mtime)
    if key not in _CACHE:
        if len(_CACHE) > 512:
            _CACHE.clear()
        tensors, _ = load_tensors(path)
        _CACHE[key] = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    return _CACHE[key]


def member_probs(run_dir: str | Path, name: str) -> Probs:
    """Every saved epoch of member NAME, and its labels (cached)."""
    d = RunDir(run_dir).member(name)
    if not d.exists():
        raise ArtifactError(f"member {name!r}: no folder {d.path}")
    probs = [(e, _load_probs(f)) for e, f in d.probs_files()]
    labels = _load_probs(d.labels) if d.labels.exists() else {}
    return probs, labels


def _same_labels(loaded: dict[str, Probs], split: str, why: str) -> torch.Tensor:
    """The shared `split` labels of the loaded members (ArtifactError naming the odd one out)."""
    ref_name, (_, ref_labels) = next(iter(loaded.items()))
    y = ref_labels[f"{split}_y"]
    for n, (_, labels) in loaded.items():
        if not torch.equal(labels[f"{split}_y"], y):
            raise ArtifactError(f"member {n} was evaluated on other {split} data than {ref_name}; {why}")
    return y


def member_curve(run_dir: str | Path, name: str, split: str = "test") -> list[tuple[int, dict[str, float]]]:
    """Per finished epoch: metrics of member NAME's saved probabilities (live while it trains)."""
    probs, labels = member_probs(run_dir, name)
    y = labels[f"{split}_y"]
    return [(e, member_metrics(p[split], y)) for e, p in probs]


def ensemble_curve(run_dir: str | Path, names: list[str], split: str = "test") -> list[tuple[int, dict[str, float]]]:
    """Ensemble metrics per epoch e: every member contributes its probabilities of epoch e, or
    of its last saved epoch if it has not reached e yet (what the ensemble would be right then).
    Members with no saved epoch yet are left out; members must share the same labels."""
    loaded = {n: member_probs(run_dir, n) for n in names}
    loaded = {n: v for n, v in loaded.items() if v[0]}
    if not loaded:
        return []
    y = _same_labels(loaded, split, "an ensemble needs members trained on the same dataset and limits")
    last = max(e for probs, _ in loaded.values() for e, _ in probs)
    out = []
    for e in range(last + 1):
        stack = [upto[-1][split] for probs, _ in loaded.values() if (upto := [p for ep, p in probs if ep <= e])]
        if stack:
            out.append((e, ensemble_metrics(torch.stack(stack), y)))
    return out


def latest(loaded: dict[str, Probs], split: str) -> torch.Tensor:
    """[M, N, K] the latest saved `split` probabilities of every loaded member."""
    return torch.stack([probs[-1][1][split] for probs, _ in loaded.values()])


def size_curve(run_dir: str | Path, names: list[str], split: str = "test") -> list[tuple[int, dict[str, float]]]:
    """Ensemble metrics of the first m members (m = 1..len(names)), latest epoch of each."""
    if not names:
        return []
    loaded = {n: member_probs(run_dir, n) for n in names}
    y = loaded[names[0]][1][f"{split}_y"]
    stack = latest(loaded, split)
    return [(m, ensemble_metrics(stack[:m], y)) for m in range(1, len(names) + 1)]


def members_predictive_js(run_dir: str | Path, names: list[str], split: str = "test") -> torch.Tensor:
    """[n, n] predictive JS between members' latest probabilities."""
    return predictive_js(latest({n: member_probs(run_dir, n) for n in names}, split))


def members_disagreement(run_dir: str | Path, names: list[str], split: str = "test") -> torch.Tensor:
    """[n, n] fraction of `split` images on which two members' latest predictions differ."""
    return pairwise_disagreement(latest({n: member_probs(run_dir, n) for n in names}, split))


def greedy_names(run_dir: str | Path, names: list[str], size: int | None = None, metric: str = "nll") -> list[str]:
    """NES forward selection on the validation split (latest epoch of each member) → names in order."""
    loaded = {n: member_probs(run_dir, n) for n in names}
    y = _same_labels(loaded, "val", "greedy selection needs members trained with the same dataset, limit "
                                    "and seed of the split")
    picked = greedy_selection(latest(loaded, "val"), y, size or len(names), metric)
    return [names[i] for i in picked]


@dataclass(frozen=True)
class LiveEnsemble:
    """The live ensemble of chosen members, honestly split: the headline is the ensemble of the
    members that *finished* training; members still training are listed apart with their latest
    epoch. `joins[m-1]` = (member that joined, metrics of the ensemble of the first m finished
    members, in the order they finished)."""

    finished: list[str]
    training: list[tuple[str, int, dict[str, float]]]  # (name, epochs saved, latest test metrics)
    metrics: dict[str, float] | None  # ensemble of the finished members (None: none finished)
    vs_best: dict | None  # `stats.vs_best_member` of the finished members (None: fewer than 2)
    joins: list[tuple[str, dict[str, float]]]
    test_images: int
    calibrated: dict[str, float] | None = None  # `ensemble.calibrated_metrics` of the finished members


def live_ensemble(run_dir: str | Path, names: list[str], split: str = "test") -> LiveEnsemble:
    """Score the chosen members from their saved probabilities (see `LiveEnsemble`)."""
    run = RunDir(run_dir)
    loaded = {n: member_probs(run_dir, n) for n in names}
    loaded = {n: v for n, v in loaded.items() if v[0]}
    if not loaded:
        return LiveEnsemble([], [], None, None, [], 0)
    y = _same_labels(loaded, split, "an ensemble needs members trained on the same dataset and limits")
    done = sorted((n for n in loaded if run.member(n).finished), key=lambda n: run.member(n).weights.stat().st_mtime)
    training = [(n, len(p), member_metrics(p[-1][1][split], y)) for n, (p, _) in loaded.items() if n not in done]
    if not done:
        return LiveEnsemble([], training, None, None, [], int(y.shape[0]))
    stack = latest({n: loaded[n] for n in done}, split)
    joins = [(n, ensemble_metrics(stack[:m], y)) for m, n in enumerate(done, start=1)]
    fin = {n: loaded[n] for n in done}
    val_y = _same_labels(fin, "val", "an ensemble needs members trained on the same dataset and limits")
    val = latest(fin, "val")
    vs = vs_best_member(val, val_y, stack, y, done) if len(done) > 1 else None
    return LiveEnsemble(done, training, joins[-1][1], vs, joins, int(y.shape[0]), calibrated_metrics(val, val_y, stack, y))


def final_probs(run_dir: str | Path, names: list[str]) -> dict[str, torch.Tensor]:
    """{"val", "test"} [M, N, K] latest probabilities of the members and their {"val_y", "test_y"}."""
    loaded = {n: member_probs(run_dir, n) for n in names}
    empty = [n for n, (p, _) in loaded.items() if not p]
    if empty:
        raise ArtifactError(f"member(s) {', '.join(empty)} of {run_dir}: no saved probabilities yet")
    why = "the members were trained on other data or limits"
    return {"val": latest(loaded, "val"), "test": latest(loaded, "test"),
            "val_y": _same_labels(loaded, "val", why), "test_y": _same_labels(loaded, "test", why)}
