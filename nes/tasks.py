"""The pipeline steps as functions of (run folder, JSON config, progress) → JSON result.

The CLI commands, background jobs (`nes.jobs`) and Ray tasks all call these, so a step behaves
the same wherever it runs. A config holds a `preset` name and `set` overrides (strings, as on the
command line) plus the step's own keys. Every step resumes from its checkpoint if one exists.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .artifacts import ArtifactError, read_json, write_json
from .search import Progress

Task = Callable[[Path, dict, "Progress | None", "str | None"], dict]


def _run_preset(run: Path, config: dict) -> str:
    if config.get("preset"):
        return config["preset"]
    info = run / "run.json"
    return read_json(info).get("preset", "paper") if info.exists() else "paper"


def search_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    from .config import SearchConfig, from_preset
    from .search import search

    sets = dict(config.get("set") or {})
    cfg = from_preset(SearchConfig, config.get("preset") or "paper", sets)
    res = search(cfg, run, device, progress)
    info = read_json(run / "run.json")
    if info.get("preset") != (config.get("preset") or "paper"):
        write_json(run / "run.json", {**info, "preset": config.get("preset") or "paper"})
    return {"genotype": res.genotype.to_dict(), "compact": res.genotype.compact(), "steps": res.steps,
            "seconds": res.seconds}


def hypernet_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    from .hypernet import hypernet_config, train_hypernet

    sets = {**(config.get("set") or {}), "regularizer": config.get("regularizer", "edges")}
    cfg = hypernet_config(run, _run_preset(run, config), sets)
    _, res = train_hypernet(cfg, run, device, progress)
    return {"regularizer": cfg.regularizer, "steps": res.steps, "seconds": res.seconds}


def fixed_lambda_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    from .hypernet import fixed_lambda_search, hypernet_config, load_search

    sets = {**(config.get("set") or {}), "regularizer": config.get("regularizer", "edges")}
    cfg = hypernet_config(run, _run_preset(run, config), sets)
    res = fixed_lambda_search(cfg, run, float(config["lam"]), device, progress)
    star = load_search(run)[3]
    return {"lam": float(config["lam"]), "genotype": res.genotype.to_dict(),
            "matched_edges": res.genotype.matched_edges(star), "steps": res.steps, "seconds": res.seconds}


def sample_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    """Sample α(λ) at `lams` (or `n` evenly spaced λ) → RUN/samples.json."""
    from .diversity import lam_grid, sample_architectures
    from .hypernet import load_hypernet, load_search

    hyper, meta = load_hypernet(run, config.get("regularizer"))
    _, layout, _, star = load_search(run)
    lams = config.get("lams")
    if lams is None:
        lams = lam_grid(meta["lam_min"], meta["lam_max"], int(config.get("n", 5)))
    samples = [s.to_dict() for s in sample_architectures(hyper, layout, star, lams, meta["config"]["tau"])]
    write_json(run / "samples.json", {"regularizer": meta["regularizer"], "samples": samples})
    return {"samples": len(samples), "lams": lams}


def resolve_genotype(run: Path, config: dict):
    """A retrain job's genotype: `genotype` (JSON), `sample_index` (from samples.json) or star."""
    from .space import Genotype

    if "genotype" in config:
        return Genotype.from_dict(config["genotype"])
    if "sample_index" in config:
        p = run / "samples.json"
        if not p.exists():
            raise ArtifactError(f"{p} missing: the sample job of this run has not finished")
        samples = read_json(p)["samples"]
        i = int(config["sample_index"])
        if not 0 <= i < len(samples):
            raise ArtifactError(f"sample_index {i} out of range: {p} has {len(samples)} samples")
        return Genotype.from_dict(samples[i]["genotype"])
    p = run / "search" / "genotype.json"
    if not p.exists():
        raise ArtifactError(f"{p} missing: run the search first")
    return Genotype.from_dict(read_json(p)["genotype"])


def retrain_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    from .config import TrainConfig, from_preset
    from .train import retrain

    genotype = resolve_genotype(run, config)
    info = read_json(run / "run.json") if (run / "run.json").exists() else {}
    # the run's member settings (e.g. the demo's smaller splits) keep its members comparable
    sets = {**(info.get("train_sets") or {}), **(config.get("set") or {})}
    if "dataset" not in sets and info.get("dataset"):
        sets["dataset"] = info["dataset"]
    if config.get("seed") is not None:
        sets["seed"] = str(config["seed"])
    cfg = from_preset(TrainConfig, _run_preset(run, config), sets)
    extra = {k: config[k] for k in ("lam", "regularizer") if k in config}
    res = retrain(cfg, genotype, run, config["name"], device, progress, extra_meta=extra or None)
    return {"name": config["name"], "genotype": genotype.to_dict(), "metrics": res.metrics, "steps": res.steps,
            "seconds": res.seconds}


def evaluate_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    """Ensemble metrics of the chosen members (default all) on the test split → RUN/ensemble.json."""
    import torch

    from .ensemble import ensemble_metrics, member_metrics
    from .train import list_members, load_member_probs

    names = config.get("members") or list_members(run)
    if not names:
        raise ArtifactError(f"{run}: no retrained members to evaluate")
    known = set(list_members(run))
    missing = [n for n in names if n not in known]
    if missing:
        raise ArtifactError(f"unknown member(s) {', '.join(missing)}; this run has: {', '.join(sorted(known)) or 'none'}")
    loaded = [load_member_probs(run, n, config.get("epoch")) for n in names]
    y = loaded[0]["test_y"]
    for n, d in zip(names, loaded):
        if not torch.equal(d["test_y"], y):
            raise ArtifactError(f"member {n} was evaluated on different test data than {names[0]}; members "
                                "must share dataset, limit and test_limit")
    members = [{"name": n, "epoch": d["epoch"], **member_metrics(d["test"], y)} for n, d in zip(names, loaded)]
    ens = ensemble_metrics(torch.stack([d["test"] for d in loaded]), y)
    out = {"members": members, "ensemble": ens}
    if config.get("write", True):
        write_json(run / "ensemble.json", out)
    return out


def baseline_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    """A baseline method (nes.baselines): genotypes → retrained members → RUN/baselines/<method>_s<seed>/."""
    from .baselines import run_baseline

    budget = config.get("budget")
    rec = run_baseline(run, config["method"], int(config.get("members", 3)), int(config.get("seed", 0)),
                       int(budget) if budget is not None else None, int(config.get("n_edges", 2)),
                       int(config.get("population", 4)), int(config.get("sample", 2)), config.get("preset"),
                       config.get("set"), device, progress)
    return {"method": rec["method"], "members": rec["members"], "ensemble": rec["ensemble"],
            "search_seconds": rec["costs"]["search_seconds"], "train_seconds": rec["costs"]["train_seconds"],
            "total_seconds": rec["costs"]["total_seconds"]}


TASKS: dict[str, Task] = {
    "search": search_task,
    "hypernet": hypernet_task,
    "fixed_lambda": fixed_lambda_task,
    "sample": sample_task,
    "retrain": retrain_task,
    "evaluate": evaluate_task,
    "baseline": baseline_task,
}
