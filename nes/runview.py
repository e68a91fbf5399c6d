"""Read-only view of a run folder for the explorer: what exists, α(λ) samples, members, live ensemble.

Everything the app's pages show comes through here (pages stay thin and hold no logic). All
loading goes through `nes.artifacts` (safetensors + JSON, never pickle); a missing or broken
artifact is an `ArtifactError` whose message says what to run.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from .artifacts import ArtifactError, load_tensors, read_json
from .diversity import ArchSample, lam_grid, pairwise_arch_js, sample_architectures
from .hypernet import load_hypernet, load_search, trained_regularizers
from .space import ArchLayout, Genotype


@dataclass(frozen=True)
class MemberInfo:
    name: str
    genotype: Genotype | None
    lam: float | None
    epochs_done: int
    epochs_total: int | None
    history: list[dict[str, float]]


class RunView:
    """Lazy, cached access to one run folder (cheap to create; the app caches one per run)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        if not self.dir.is_dir():
            raise ArtifactError(f"run folder {self.dir} does not exist")

    def validate(self) -> "RunView":
        """Load the search and every trained hypernetwork now (ArtifactError if one is broken)."""
        if self.has_search:
            _ = self.layout
            for r in self.regularizers():
                self.hypernet(r)
        return self

    # -- search --------------------------------------------------------------------------------
    @property
    def has_search(self) -> bool:
        return (self.dir / "search" / "arch.safetensors").exists()

    @cached_property
    def _search(self) -> tuple[Any, ArchLayout, torch.Tensor, Genotype]:
        return load_search(self.dir)

    @property
    def layout(self) -> ArchLayout:
        return self._search[1]

    @property
    def theta_star(self) -> torch.Tensor:
        return self._search[2]

    @property
    def star(self) -> Genotype:
        return self._search[3]

    def search_history(self) -> list[dict[str, float]]:
        p = self.dir / "search" / "history.json"
        return read_json(p) if p.exists() else []

    def cells(self, theta: torch.Tensor) -> dict[str, tuple[torch.Tensor, list[torch.Tensor]]]:
        """θ → per cell type (α [E, 7], [β_i])."""
        return self.layout.split(theta.float())

    # -- hypernetworks -------------------------------------------------------------------------
    def regularizers(self) -> list[str]:
        return trained_regularizers(self.dir)

    @cached_property
    def _hypers(self) -> dict[str, tuple[torch.nn.Module, dict]]:
        return {}

    def hypernet(self, regularizer: str) -> tuple[torch.nn.Module, dict]:
        if regularizer not in self._hypers:
            self._hypers[regularizer] = load_hypernet(self.dir, regularizer)
        return self._hypers[regularizer]

    def lam_bounds(self, regularizer: str) -> tuple[float, float]:
        """The λ range the hypernetwork was trained for (its end pivots sit ε beyond it)."""
        meta = self.hypernet(regularizer)[1]
        return float(meta["lam_min"]), float(meta["lam_max"])

    def star_lam(self, regularizer: str) -> float:
        """The λ meant to reproduce α*: Λ (all edges shared) for `edges`, 0 (no push) for `js`."""
        lo, hi = self.lam_bounds(regularizer)
        return hi if regularizer == "edges" else lo

    def sample(self, regularizer: str, lams: list[float]) -> list[ArchSample]:
        hyper, meta = self.hypernet(regularizer)
        return sample_architectures(hyper, self.layout, self.star, lams, meta["config"]["tau"])

    def pairwise_js(self, samples: list[ArchSample]) -> torch.Tensor:
        return pairwise_arch_js(self.layout, [s.theta for s in samples])

    def curve(self, regularizer: str) -> list[dict[str, Any]]:
        p = self.dir / "hypernet" / regularizer / "curve.json"
        return read_json(p) if p.exists() else [s.to_dict() for s in self.sample(regularizer, lam_grid(*self.lam_bounds(regularizer), 9))]

    # -- baselines -----------------------------------------------------------------------------
    def baselines(self) -> list[dict[str, Any]]:
        """Finished baseline records (RUN/baselines/<method>_s<seed>/baseline.json), by method and seed."""
        d = self.dir / "baselines"
        return [read_json(p) for p in sorted(d.glob("*/baseline.json"))] if d.is_dir() else []

    # -- members -------------------------------------------------------------------------------
    def member_names(self) -> list[str]:
        from .train import list_members

        return list_members(self.dir)

    def member(self, name: str) -> MemberInfo:
        d = self.dir / "members" / name
        g = read_json(d / "genotype.json") if (d / "genotype.json").exists() else {}
        cfg = read_json(d / "config.json") if (d / "config.json").exists() else {}
        epochs = sorted(int(p.stem.split("_")[1]) for p in (d / "probs").glob("epoch_*.safetensors"))
        hist = read_json(d / "history.json") if (d / "history.json").exists() else []
        return MemberInfo(name, Genotype.from_dict(g["genotype"]) if "genotype" in g else None, g.get("lam"),
                          len(epochs), cfg.get("epochs"), hist)

    def members(self) -> list[MemberInfo]:
        return [self.member(n) for n in self.member_names()]

    def member_curve(self, name: str, split: str = "test") -> list[tuple[int, dict[str, float]]]:
        """Per finished epoch: metrics of member NAME's saved probabilities (live while it trains)."""
        from .ensemble import member_metrics

        probs, labels = self._probs(name)
        y = labels[f"{split}_y"]
        return [(e, member_metrics(p[split], y)) for e, p in probs]

    def ensemble_curve(self, names: list[str], split: str = "test") -> list[tuple[int, dict[str, float]]]:
        """Ensemble metrics per epoch e: every member contributes its probabilities of epoch e, or
        of its last saved epoch if it has not reached e yet (what the ensemble would be right then).
        Members with no saved epoch yet are left out; members must share the same test labels."""
        from .ensemble import ensemble_metrics

        loaded = {n: self._probs(n) for n in names}
        loaded = {n: v for n, v in loaded.items() if v[0]}
        if not loaded:
            return []
        ref_name, (_, ref_labels) = next(iter(loaded.items()))
        y = ref_labels[f"{split}_y"]
        for n, (_, labels) in loaded.items():
            if not torch.equal(labels[f"{split}_y"], y):
                raise ArtifactError(f"member {n} was evaluated on other {split} data than {ref_name}; "
                                    "an ensemble needs members trained on the same dataset and limits")
        last = max(e for probs, _ in loaded.values() for e, _ in probs)
        out = []
        for e in range(last + 1):
            stack = []
            for probs, _ in loaded.values():
                upto = [p for ep, p in probs if ep <= e]
                if upto:
                    stack.append(upto[-1][split])
            if stack:
                out.append((e, ensemble_metrics(torch.stack(stack), y)))
        return out

    def size_curve(self, names: list[str], split: str = "test") -> list[tuple[int, dict[str, float]]]:
        """Ensemble metrics of the first m members (m = 1..len(names)), latest epoch of each."""
        from .ensemble import ensemble_metrics

        loaded = [self._probs(n) for n in names]
        if not loaded:
            return []
        y = loaded[0][1][f"{split}_y"]
        stack = [p[-1][1][split] for p, _ in loaded]
        return [(m, ensemble_metrics(torch.stack(stack[:m]), y)) for m in range(1, len(stack) + 1)]

    def predictive_js(self, names: list[str], split: str = "test") -> torch.Tensor:
        """[n, n] predictive JS between members' latest probabilities."""
        from .ensemble import predictive_js

        return predictive_js(torch.stack([self._probs(n)[0][-1][1][split] for n in names]))

    def greedy_selection(self, names: list[str], size: int | None = None, metric: str = "nll") -> list[str]:
        """NES forward selection on the validation split (latest epoch of each member) → names in order."""
        from .ensemble import greedy_selection

        loaded = [self._probs(n) for n in names]
        y = loaded[0][1]["val_y"]
        for n, (_, labels) in zip(names, loaded):
            if not torch.equal(labels["val_y"], y):
                raise ArtifactError(f"member {n} has other validation data than {names[0]}; greedy selection "
                                    "needs members trained with the same dataset, limit and seed of the split")
        picked = greedy_selection(torch.stack([p[-1][1]["val"] for p, _ in loaded]), y, size or len(names), metric)
        return [names[i] for i in picked]

    def _probs(self, name: str) -> tuple[list[tuple[int, dict[str, torch.Tensor]]], dict[str, torch.Tensor]]:
        """([(epoch, {'val', 'test'} float32)], labels). Files are cached by (path, mtime)."""
        d = self.dir / "members" / name
        if not d.is_dir():
            raise ArtifactError(f"member {name!r}: no folder {d}")
        files = sorted((d / "probs").glob("epoch_*.safetensors"))
        probs = [(int(f.stem.split("_")[1]), _load_probs(f)) for f in files]
        labels = _load_probs(d / "labels.safetensors") if (d / "labels.safetensors").exists() else {}
        return probs, labels


_CACHE: dict[tuple[str, float], dict[str, torch.Tensor]] = {}


def _load_probs(path: Path) -> dict[str, torch.Tensor]:
    key = (str(path), path.stat().st_mtime)
    if key not in _CACHE:
        if len(_CACHE) > 512:
            _CACHE.clear()
        tensors, _ = load_tensors(path)
        _CACHE[key] = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    return _CACHE[key]

