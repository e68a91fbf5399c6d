"""Every path of a run folder, member names and name checks (the one place that knows the tree).

    RUN/run.json                 what the run is about (dataset info, preset, member settings)
    RUN/search/                  DARTS: arch.safetensors (α*), supernet.safetensors, genotype.json,
                                 config.json, history.json, checkpoint.safetensors,
                                 theta_history.safetensors (θ at recorded moments, for the replay)
    RUN/hypernet/<reg>/          hypernet.safetensors, curve.json, config.json, history.json, ...
    RUN/fixed_lambda/lam_<λ>/    one per-λ search (arch.safetensors, genotype.json, ...)
    RUN/samples.json             α(λ) samples of the `sample` step
    RUN/members/<name>/          config.json, genotype.json, labels.safetensors,
                                 probs/epoch_XXX.safetensors, checkpoint.safetensors,
                                 weights.safetensors, history.json, metrics.json
                                 (<name> from `member_name`: alpha_star, edges_lam_1_00_s1, ...)
    RUN/ensemble.json            the `evaluate` step's metrics
    RUN/baselines/<method>_s<seed>/   a baseline: a run folder of its own (members/, baseline.json)
    RUN/exports/<bundle>/        exported bundles;  RUN/logs/job_<id>.log  worker logs

Core layer: plain paths and JSON only. The typed α* loader (`nes.method.darts.load_search`) sits
in the method layer, which knows genotypes and layouts.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ._version import __version__
from .artifacts import ArtifactError, read_json, reading, write_json

NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def check_name(name: Any, what: str = "member") -> str:
    """`name` if it is a safe folder name (1–100 letters, digits, '-', '_', '.'; not starting
    with '.' or '-'), else ValueError naming `what` and the rule."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{what} name {name!r}: give the {what} a name of 1–100 letters, digits, '-', '_' "
                         "or '.', not starting with '.' or '-' (no spaces or slashes)")
    return name


# run.json's fields and the JSON type each must have (a key may be absent; null is never written)
RUN_JSON_FIELDS = {"dataset": (str, "a dataset name"), "preset": (str, "a preset name"),
                   "info": (dict, "an object of dataset facts"), "train_sets": (dict, "an object of member settings"),
                   "version": (str, "a version string"), "created": (str, "a date")}

STAR = "alpha_star"  # the name of α* retrained (with `_s<seed>` for another seed)


def member_name(origin: str = STAR, lam: float | None = None, seed: int = 0) -> str:
    """The folder name of a member, saying where its architecture came from: `origin` is
    `alpha_star` (α*), the regularizer of the hypernetwork it was sampled from (`edges`, `js`,
    `js-target`: then `lam` is its λ), or the baseline generator that made it (`darts`, `dev2`,
    `rs`, `re`, `per-lambda`); `_lam_<λ>` (two decimals) follows when `lam` is given and
    `_s<seed>` for a seed other than 0: `alpha_star`, `edges_lam_1_00`, `js-target_lam_0_25_s1`.

    The one place names are built, so that two members differ in name exactly when they differ
    in origin, λ or seed. Runs named before (`lam_1_50`, `star_seed0`) still load: nothing parses
    a name back; a member's λ, regularizer and seed are read from its record (`MemberDir.record`)."""
    if origin == STAR and lam is not None:
        raise ValueError(f"member_name: λ = {lam:g} needs the hypernetwork it was sampled from (origin='edges', ...)")
    lam_part = "" if lam is None else f"_lam_{lam:.2f}".replace(".", "_")
    return check_name(f"{origin}{lam_part}{f'_s{seed}' if seed else ''}")


def fixed_lambda_name(lam: float) -> str:
    """The folder of the per-λ search at `lam` (RUN/fixed_lambda/lam_<λ>), also its cost key."""
    return f"lam_{lam:g}"


@dataclass(frozen=True)
class MemberRecord:
    """Where a member came from, as its files record it: the regularizer and λ of the α(λ) it was
    retrained from (None for α* and baselines; a member of a run from before the regularizer was
    recorded has lam but no regularizer) and its training seed (None when not recorded)."""

    name: str
    regularizer: str | None
    lam: float | None
    seed: int | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "MemberRecord":
        """The record a retrain job's config asks for (name, regularizer, lam, seed)."""
        lam, seed = config.get("lam"), config.get("seed")
        return cls(str(config.get("name") or ""), config.get("regularizer"), None if lam is None else float(lam),
                   None if seed is None else int(seed))

    def same_member(self, other: "MemberRecord") -> bool:
        """The same name, or the same α(λ) of the same hypernetwork trained with the same seed."""
        if self.name and self.name == other.name:
            return True
        return (self.lam is not None and self.regularizer is not None and self.seed is not None
                and (self.regularizer, round(self.lam, 6), self.seed)
                == (other.regularizer, None if other.lam is None else round(other.lam, 6), other.seed))


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
    theta_history = property(lambda self: self.path / "theta_history.safetensors")  # a search's θ replay record

    def exists(self) -> bool:
        return self.path.is_dir()

    def read(self, rel: str, default: Any = None) -> Any:
        """JSON file `rel` of this folder, or `default` when it does not exist; a file that holds
        another JSON type than `default` (an object for {}, a list for []) is an ArtifactError
        naming it."""
        p = self.path / rel
        return read_json(p, None if default is None else type(default)) if p.exists() else default

    def history_rows(self) -> list[dict[str, Any]]:
        """The loop's history: one JSON object per epoch (ArtifactError naming the file otherwise)."""
        rows = self.read("history.json", [])
        if not all(isinstance(r, dict) for r in rows):
            raise ArtifactError(f"{self.history}: expected a list of JSON objects (one per epoch); the file was "
                                "edited or damaged: restore it, or delete it and rerun the step")
        return rows

    def seconds(self) -> float:
        """Training seconds recorded by the loop's history (cumulative; 0 if none)."""
        hist = self.history_rows()
        with reading(self.history, "a training history"):
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

    def record(self) -> MemberRecord:
        """Where this member came from: λ and regularizer from genotype.json, seed from config.json."""
        g, cfg = self.read("genotype.json", {}), self.read("config.json", {})
        with reading(self.path / "genotype.json or config.json", "a member's record"):
            return MemberRecord.from_config({"name": self.name, "lam": g.get("lam"), "regularizer": g.get("regularizer"),
                                         "seed": cfg.get("seed")})

    def seconds(self) -> float:
        m = self.read("metrics.json", {})
        with reading(self.metrics, "a member's metrics"):
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
        info = read_json(self.run_json, dict, "the run's dataset and settings") if self.run_json.exists() else {}
        wrong = [f"{k} (must be {want})" for k, (kind, want) in RUN_JSON_FIELDS.items()
                 if k in info and not isinstance(info[k], kind)]
        if wrong:
            raise ArtifactError(f"{self.run_json}: wrong value of {', '.join(wrong)}; the file was edited or damaged: "
                                "restore it, or delete it and retrain a member to write it again")
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
        return StepDir(self.path / "fixed_lambda" / fixed_lambda_name(lam))

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

    def members_as_trained(self) -> list[str]:
        """Finished members in the order they were trained for: by recorded seed (α* first), then name;
        an ensemble's first m members are a baseline's member i's counterpart."""
        recs = {n: self.member(n).record() for n in self.finished_members()}
        return sorted(recs, key=lambda n: (recs[n].seed is None, recs[n].seed or 0, n))

    # -- baselines ------------------------------------------------------------------------------
    def baseline(self, method: str, seed: int) -> "RunDir":
        """RUN/baselines/<method>_s<seed>: a run folder of its own (its members, baseline.json)."""
        return RunDir(self.path / "baselines" / f"{method}_s{seed}")

    def baseline_records(self) -> list[dict[str, Any]]:
        """Finished baseline records, by method and seed."""
        d = self.path / "baselines"
        return [read_json(p, dict, "a baseline's record") for p in sorted(d.glob("*/baseline.json"))] if d.is_dir() else []

