"""Every path of a run folder, member names and name checks (the one place that knows the tree).

    RUN/run.json                 what the run is about (dataset info, preset, member settings)
    RUN/search/                  DARTS: arch.safetensors (α*), supernet.safetensors, genotype.json,
                                 config.json, history.json, checkpoint.safetensors
    RUN/hypernet/<reg>/          hypernet.safetensors, curve.json, config.json, history.json, ...
    RUN/fixed_lambda/lam_<λ>/    one per-λ search (arch.safetensors, genotype.json, ...)
    RUN/samples.json             α(λ) samples of the `sample` step
    RUN/members/<name>/          config.json, genotype.json, labels.safetensors,
                                 probs/epoch_XXX.safetensors, checkpoint.safetensors,
                                 weights.safetensors, history.json, metrics.json
    RUN/ensemble.json            the `evaluate` step's metrics
    RUN/baselines/<method>_s<seed>/   a baseline: a run folder of its own (members/, baseline.json)
    RUN/exports/<bundle>/        exported bundles;  RUN/logs/job_<id>.log  worker logs

Core layer: plain paths and JSON only. The typed α* loader (`nes.method.darts.load_search`) sits
in the method layer, which knows genotypes and layouts.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Mapping

from ._version import __version__
from .artifacts import ArtifactError, read_json, write_json

NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def check_name(name: Any, what: str = "member") -> str:
    """`name` if it is a safe folder name (1–100 letters, digits, '-', '_', '.'; not starting
    with '.' or '-'), else ValueError naming `what` and the rule."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{what} name {name!r}: give the {what} a name of 1–100 letters, digits, '-', '_' "
                         "or '.', not starting with '.' or '-' (no spaces or slashes)")
    return name


def member_name(lam: float | None = None, seed: int = 0, prefix: str = "") -> str:
    """The member name for α* (`alpha_star`) or α(λ) (`lam_2_50`, with `prefix`: `edges_lam_2_50`),
    with `_s<seed>` appended for a seed other than 0."""
    base = "alpha_star" if lam is None else f"{prefix}{'_' if prefix else ''}lam_{lam:.2f}".replace(".", "_")
    return base + (f"_s{seed}" if seed else "")


class StepDir:
    """The folder one training loop writes (a search, a hypernetwork, a member)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel

    config = property(lambda self: self.path / "config.json")
    history = property(lambda self: self.path / "history.json")
    checkpoint = property(lambda self: self.path / "checkpoint.safetensors")
    genotype = property(lambda self: self.path / "genotype.json")
    arch = property(lambda self: self.path / "arch.safetensors")
    supernet = property(lambda self: self.path / "supernet.safetensors")
    hypernet = property(lambda self: self.path / "hypernet.safetensors")
    curve = property(lambda self: self.path / "curve.json")

    def exists(self) -> bool:
        return self.path.is_dir()

    def read(self, rel: str, default: Any = None) -> Any:
        """JSON file `rel` of this folder, or `default` when it does not exist."""
        p = self.path / rel
        return read_json(p) if p.exists() else default

    def history_rows(self) -> list[dict[str, Any]]:
        return self.read("history.json", [])

    def seconds(self) -> float:
        """Training seconds recorded by the loop's history (cumulative; 0 if none)."""
        hist = self.history_rows()
        return float(hist[-1].get("seconds", 0.0)) if hist else 0.0


class MemberDir(StepDir):
    """RUN/members/<name>: one retrained member."""

    labels = property(lambda self: self.path / "labels.safetensors")
    probs_dir = property(lambda self: self.path / "probs")
    weights = property(lambda self: self.path / "weights.safetensors")
    metrics = property(lambda self: self.path / "metrics.json")

    @property
    def name(self) -> str:
        return self.path.name

    def probs(self, epoch: int) -> Path:
        return self.probs_dir / f"epoch_{epoch:03d}.safetensors"

    def probs_files(self) -> list[tuple[int, Path]]:
        """(epoch, file) of every saved epoch, in epoch order."""
        files = self.probs_dir.glob("epoch_*.safetensors") if self.probs_dir.is_dir() else []
        return sorted((int(f.stem.split("_")[1]), f) for f in files)

    @property
    def finished(self) -> bool:
        """The training ended (final weights written)."""
        return self.weights.exists()

    def seconds(self) -> float:
        m = self.read("metrics.json")
        return float(m.get("seconds", 0.0)) if m else super().seconds()


class RunDir:
    """A run folder: every path in it, and the run's own small records."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    run_json = property(lambda self: self.path / "run.json")
    samples_json = property(lambda self: self.path / "samples.json")
    ensemble_json = property(lambda self: self.path / "ensemble.json")
    demo_json = property(lambda self: self.path / "demo.json")
    baseline_json = property(lambda self: self.path / "baseline.json")
    logs = property(lambda self: self.path / "logs")
    exports = property(lambda self: self.path / "exports")

    def job_log(self, job_id: int) -> Path:
        return self.logs / f"job_{job_id}.log"

    # -- run.json -------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """run.json ({} before anything wrote it); ArtifactError when it is not a JSON object."""
        info = read_json(self.run_json) if self.run_json.exists() else {}
        if not isinstance(info, dict):
            raise ArtifactError(f"{self.run_json}: expected a JSON object (the run's dataset and settings), got "
                                f"{type(info).__name__}; restore it, or delete it and retrain a member to write it again")
        return info

    def update_info(self, **fields: Any) -> dict[str, Any]:
        info = {**self.info(), **fields}
        write_json(self.run_json, info)
        return info

    def write_dataset_info(self, dataset: str, info: Mapping[str, Any]) -> None:
        """Record the dataset the run trains on (once; keys written before, e.g. the preset, stay)."""
        old = self.info()
        if "dataset" not in old:
            write_json(self.run_json, {"dataset": dataset, "info": dict(info), "version": __version__,
                                       "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **old})

    # -- steps ----------------------------------------------------------------------------------
    @property
    def search(self) -> StepDir:
        return StepDir(self.path / "search")

    @property
    def has_search(self) -> bool:
        return self.search.arch.exists()

    def hypernet(self, regularizer: str) -> StepDir:
        return StepDir(self.path / "hypernet" / regularizer)

    def fixed_lambda(self, lam: float) -> StepDir:
        return StepDir(self.path / "fixed_lambda" / f"lam_{lam:g}")

    def stamp(self) -> tuple[tuple[str, float], ...]:
        """Modification times of α* and every hypernetwork: changes when one is (re)written."""
        files = [self.search.arch, *sorted(self.path.glob("hypernet/*/hypernet.safetensors"))]
        return tuple((f.parent.name, f.stat().st_mtime) for f in files if f.exists())

    # -- members --------------------------------------------------------------------------------
    def member(self, name: str) -> MemberDir:
        return MemberDir(self.path / "members" / check_name(name))

    def list_members(self) -> list[str]:
        """Member folders, sorted (folders whose names no member can have, e.g. hidden ones, are skipped)."""
        d = self.path / "members"
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and NAME_PATTERN.fullmatch(p.name))

    def finished_members(self) -> list[str]:
        """Members whose training ended (final weights written), sorted by name."""
        return [n for n in self.list_members() if self.member(n).finished]

    # -- baselines ------------------------------------------------------------------------------
    def baseline(self, method: str, seed: int) -> "RunDir":
        """RUN/baselines/<method>_s<seed>: a run folder of its own (its members, baseline.json)."""
        return RunDir(self.path / "baselines" / f"{method}_s{seed}")

    def baseline_records(self) -> list[dict[str, Any]]:
        """Finished baseline records, by method and seed."""
        d = self.path / "baselines"
        return [read_json(p) for p in sorted(d.glob("*/baseline.json"))] if d.is_dir() else []

