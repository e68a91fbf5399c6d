"""Read-only view of a run folder for the explorer: what exists, α(λ) samples, members, live ensemble.

Everything the app's pages show comes through here (pages stay thin and hold no logic). All
paths come from `nes.layout.RunDir`, all loading goes through `nes.artifacts` (safetensors + JSON,
never pickle) and the scoring of members through `nes.method.scoring`; a missing or broken
artifact is an `ArtifactError` whose message says what to run.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..artifacts import ArtifactError, read_json, reading
from ..layout import RunDir
from ..method import scoring
from ..method.baselines import method_differences
from ..method.darts import SearchArtifacts, confidence, load_search
from ..method.divergence import pairwise_arch_js
from ..method.diversity import ArchSample, edge_tracking, grid_quality, lam_grid
from ..method.regularizers import LamRange, diversity_lam
from ..method.hypernet import TrainedHypernet, load_hypernet, trained_regularizers
from ..method.flaws import structural_flaws_note
from ..method.space import ArchLayout, Genotype
from ..runs.tasks import member_config


@dataclass(frozen=True)
class MemberInfo:
    name: str
    genotype: Genotype | None
    lam: float | None
    epochs_done: int
    history: list[dict[str, float]]


class RunView:
    """Lazy, cached access to one run folder (cheap to create; the app caches one per run)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.run = RunDir(self.dir)
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
        return self.run.has_search

    @cached_property
    def _search(self) -> SearchArtifacts:
        return load_search(self.dir)

    @property
    def layout(self) -> ArchLayout:
        return self._search.layout

    @property
    def theta_star(self) -> torch.Tensor:
        return self._search.theta

    @property
    def star(self) -> Genotype:
        return self._search.star

    @cached_property
    def member_layers(self) -> int:
        """Cells of a member retrained in this run (its preset and member settings)."""
        return member_config(self.dir, {}).layers

    def flaws_note(self, genotype: Genotype) -> str | None:
        """Why a member of `genotype` would be weaker than it looks: a cell unused, a cell without a
        convolution (None for a sound genotype)."""
        return structural_flaws_note(genotype, self.member_layers)

    def search_history(self) -> list[dict[str, float]]:
        return self.run.search.history_rows()

    def search_confidence(self) -> dict[str, Any]:
        """How sure the search is of α* (`confidence`), and for how many final epochs its genotype
        stayed the same (`epochs`: epochs that recorded a genotype; 0 for earlier versions)."""
        genos = [h["genotype"] for h in self.search_history() if "genotype" in h]
        stable = 0
        while stable < len(genos) and genos[-1 - stable] == genos[-1]:
            stable += 1
        return {**confidence(self.layout, self.theta_star), "stable_epochs": stable, "epochs": len(genos)}

    def cells(self, theta: torch.Tensor) -> dict[str, tuple[torch.Tensor, list[torch.Tensor]]]:
        """θ → per cell type (α [E, 7], [β_i])."""
        return self.layout.split(theta.float())

    # -- hypernetworks -------------------------------------------------------------------------
    def regularizers(self) -> list[str]:
        return trained_regularizers(self.dir)

    @cached_property
    def _hypers(self) -> dict[str, TrainedHypernet]:
        return {}

    def hypernet(self, regularizer: str) -> TrainedHypernet:
        if regularizer not in self._hypers:
            self._hypers[regularizer] = load_hypernet(self.dir, regularizer)
        return self._hypers[regularizer]

    def lam_range(self, regularizer: str) -> LamRange:
        """The hypernetwork's λ ranges: `.target` [λ_min, λ_max] is the diversity axis (its end
        pivots sit ε beyond it, on `.trained`)."""
        return self.hypernet(regularizer).lam_range

    def axis_grid(self, regularizer: str, n: int = 9) -> list[float]:
        """λ of n evenly spaced positions on the diversity axis, from α* (0) to the most diverse (1)."""
        lo, hi = self.lam_range(regularizer).target
        return [diversity_lam(regularizer, i / (n - 1), lo, hi) for i in range(n)]

    def quality(self, regularizer: str) -> dict[str, Any]:
        """How well the hypernetwork controls diversity on a 9-point grid (recorded after training,
        measured now for hypernetworks of earlier versions)."""
        meta = self.hypernet(regularizer).meta
        if not meta.get("quality"):  # measured once per loaded hypernetwork, not on every page rerun
            meta["quality"] = grid_quality(self.sample(regularizer, self.axis_grid(regularizer)))
        return meta["quality"]

    def edge_tracking(self, n: int = 33) -> dict[str, Any] | None:
        """`diversity.edge_tracking` of the `edges` hypernetwork on an n-point λ grid (None without one)."""
        if "edges" not in self.regularizers():
            return None
        lo, hi = self.lam_range("edges").target
        return edge_tracking(self.sample("edges", lam_grid(lo, hi, n)))

    def sample(self, regularizer: str, lams: list[float]) -> list[ArchSample]:
        return self.hypernet(regularizer).sample(self._search, lams)

    def pairwise_js(self, samples: list[ArchSample]) -> torch.Tensor:
        return pairwise_arch_js(self.layout, [s.theta for s in samples])

    def curve(self, regularizer: str) -> list[dict[str, Any]]:
        p = self.run.hypernet(regularizer).curve
        return read_json(p, list, "the hypernetwork's λ curve") if p.exists() else [s.to_dict() for s in self.sample(regularizer, lam_grid(*self.lam_range(regularizer).target, 9))]

    # -- baselines -----------------------------------------------------------------------------
    def baselines(self) -> list[dict[str, Any]]:
        """Finished baseline records (RUN/baselines/<method>_s<seed>/baseline.json), by method and seed."""
        return self.run.baseline_records()

    def method_differences(self, reference: str) -> list[dict[str, Any]]:
        """Each method's ensemble against `reference`'s of the same seed, with paired bootstrap
        intervals over the test images (`nes.method.baselines.method_differences`)."""
        return method_differences(self.dir, self.baselines(), reference)

    # -- members -------------------------------------------------------------------------------
    def member_names(self) -> list[str]:
        return self.run.list_members()

    def finished_members(self) -> list[str]:
        return self.run.finished_members()

    def member(self, name: str) -> MemberInfo:
        d = self.run.member(name)
        g = d.read("genotype.json", {})
        with reading(d.genotype, "a member's genotype record"):
            return MemberInfo(name, Genotype.from_dict(g["genotype"]) if "genotype" in g else None, g.get("lam"),
                              len(d.probs_files()), d.history_rows())

    def members(self) -> list[MemberInfo]:
        return [self.member(n) for n in self.member_names()]

    def member_curve(self, name: str, split: str = "test") -> list[tuple[int, dict[str, float]]]:
        """Per finished epoch: metrics of member NAME's saved probabilities (live while it trains)."""
        return scoring.member_curve(self.dir, name, split)

    def ensemble_curve(self, names: list[str], split: str = "test") -> list[tuple[int, dict[str, float]]]:
        """Ensemble metrics per epoch (see `nes.method.scoring.ensemble_curve`)."""
        return scoring.ensemble_curve(self.dir, names, split)

    def size_curve(self, names: list[str]) -> list[tuple[int, dict[str, float]]]:
        """Test metrics of the ensemble of the first m members (m = 1..len(names)), latest epoch of each."""
        return scoring.size_curve(self.dir, names)

    def predictive_js(self, names: list[str]) -> torch.Tensor:
        """[n, n] predictive JS between members' latest test probabilities."""
        return scoring.members_predictive_js(self.dir, names)

    def disagreement(self, names: list[str]) -> torch.Tensor:
        """[n, n] fraction of test images on which two members' latest predictions differ."""
        return scoring.members_disagreement(self.dir, names)

    def members_stamp(self, names: list[str]) -> tuple:
        """What every member view above depends on, cheaply (files and mtimes): a live page compares it."""
        return scoring.members_stamp(self.dir, names)

    def live_ensemble(self, names: list[str]) -> scoring.LiveEnsemble:
        """The headline ensemble of the finished members, the members still training apart."""
        return scoring.live_ensemble(self.dir, names)

    def greedy_selection(self, names: list[str], size: int | None = None, metric: str = "nll") -> list[str]:
        """NES forward selection on the validation split (latest epoch of each member) → names in order."""
        return scoring.greedy_names(self.dir, names, size, metric)
