"""The pipeline steps as functions of (run folder, JSON config, progress) → JSON result.

The CLI commands, background jobs (`nes.runs.jobs`) and Ray tasks all call these, so a step behaves
the same wherever it runs. A config holds a `preset` name and `set` overrides (strings, as on the
command line) plus the step's own keys. Every step resumes from its checkpoint if one exists.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..artifacts import ArtifactError, read_json, reading, write_json
from ..config import SearchConfig, TrainConfig, from_preset
from ..layout import RunDir, member_name
from ..method import levers
from ..method.baselines import run_baseline
from ..method.darts import load_search, search
from ..method.diversity import collapse_warning, grid_quality, lam_grid, pick_members
from ..method.hypernet import fixed_lambda_search, hypernet_config, load_hypernet, train_hypernet
from ..method.loop import Progress
from ..method.oneshot import one_shot_probs, one_shot_setup
from ..method.flaws import structural_flaws
from ..method.space import Genotype
from ..method.scoring import MemberProbs, score
from ..method.shift import DEFAULT_IMAGES, ShiftSettings, report_path, shift_difference, shift_report
from ..method.train import retrain

Task = Callable[[Path, dict, "Progress | None", "str | None"], dict]


def _run_preset(run: Path, config: dict) -> str:
    return config.get("preset") or RunDir(run).info().get("preset", "paper")


def search_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    sets = dict(config.get("set") or {})
    cfg = from_preset(SearchConfig, config.get("preset") or "paper", sets)
    res = search(cfg, run, device, progress)
    rd = RunDir(run)
    if rd.info().get("preset") != (config.get("preset") or "paper"):
        rd.update_info(preset=config.get("preset") or "paper")
    return {"genotype": res.genotype.to_dict(), "compact": res.genotype.compact(), "steps": res.steps,
            "seconds": res.seconds}


def hypernet_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    sets = {**(config.get("set") or {}), "regularizer": config.get("regularizer", "edges")}
    cfg = hypernet_config(run, _run_preset(run, config), sets)
    _, res = train_hypernet(cfg, run, device, progress)
    return {"regularizer": cfg.regularizer, "steps": res.steps, "seconds": res.seconds}


def fixed_lambda_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    sets = {**(config.get("set") or {}), "regularizer": config.get("regularizer", "edges")}
    cfg = hypernet_config(run, _run_preset(run, config), sets)
    res = fixed_lambda_search(cfg, run, float(config["lam"]), device, progress)
    star = load_search(run).star
    return {"lam": float(config["lam"]), "genotype": res.genotype.to_dict(),
            "matched_edges": res.genotype.matched_edges(star), "steps": res.steps, "seconds": res.seconds}


MEMBER_GRID = 33  # λ points that `sample_task` picks ensemble members from


PICKS = ("spread", "strong", "predicted")  # how `sample_task` picks members: `pick_members`, `pick_by_estimate`


def pick_by_estimate(run: Path, drawn: list, n: int, star: Genotype, how: str = "strong",
                     device: str | None = None, layers: int | None = None) -> list:
    """n members without training, strength first: the α* end, then of the distinct genotypes
    drawn, by their one-shot estimates (`oneshot`, the search's shared weights), either ("strong")
    the most distant of those within 2 points of α*'s estimate (`levers.strong_and_diverse`; the
    next best fill in) or ("predicted") forward selection of the predicted ensemble NLL
    (`levers.predicted_selection`), through `levers.choose_untrained`; with LAYERS, genotypes with a
    structural flaw (`structural_flaws`) only when no sound one is left."""
    ordered = sorted(drawn, key=lambda x: x.diversity or 0.0)
    setup = one_shot_setup(run, device=device)
    cands = levers.one_shot_candidates(setup, ordered, {star, ordered[0].genotype})
    return [ordered[0], *levers.choose_untrained(cands, one_shot_probs(setup, star), setup.loader.y.cpu(), n - 1, how,
                                                   layers)]


def sample_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    """Sample α(λ) at `lams` (or `n` evenly spaced λ) → RUN/samples.json. With `members`: M
    members picked on a fine grid, `pick` "spread" (`pick_members`: the α* end first, then distinct
    genotypes spread over the diversity axis, those that use every cell first), "strong" or
    "predicted" (`pick_by_estimate`: by the one-shot estimate, the most distant of those as strong as
    α*, or forward selection of the predicted ensemble NLL)."""
    trained = load_hypernet(run, config.get("regularizer"))
    s = load_search(run)
    lams = config.get("lams")
    wanted = int(config["members"]) if config.get("members") else None
    if lams is None:
        lams = lam_grid(*trained.lam_range.target, MEMBER_GRID if wanted else int(config.get("n", 5)))
    drawn = trained.sample(s, lams)
    warning = collapse_warning(grid_quality(drawn), wanted or len(drawn), trained.regularizer)
    out: dict = {"lams": lams}
    if wanted:
        layers = member_config(run, {k: config[k] for k in ("preset", "set") if k in config}).layers
        how = config.get("pick") or "spread"
        if how not in PICKS:
            raise ValueError(f"pick {how!r}: expected one of {', '.join(PICKS)} (--pick); nothing was sampled")
        picked = (pick_members(drawn, wanted, s.star, layers) if how == "spread"
                  else pick_by_estimate(run, drawn, wanted, s.star, how, device, layers))
        while len(picked) < wanted:  # a collapsed family (warned above): repeat genotypes, other seeds
            picked.append(picked[len(picked) % len(picked)])
        drawn = picked
        flaws = {x.genotype.compact(): ", ".join(structural_flaws(x.genotype, layers)) for x in drawn}
        weak = sorted(g for g, why in flaws.items() if why)
        out.update(members=len(drawn), flawed=weak)
        if weak:
            warning = " ".join(filter(None, [warning, f"{len(weak)} member genotype(s) with a structural flaw (no "
                                             f"sound distinct genotype was left): "
                                             f"{'; '.join(f'{g} ({flaws[g]})' for g in weak)}"]))
    write_json(RunDir(run).samples_json, {"regularizer": trained.regularizer, "samples": [x.to_dict() for x in drawn]})
    out["samples"] = len(drawn)
    return {**out, "warning": warning} if warning else out


def resolve_genotype(run: Path, config: dict) -> Genotype:
    """A retrain job's genotype: `genotype` (JSON), `sample_index` (from samples.json) or star."""
    rd = RunDir(run)
    if "genotype" in config:
        return Genotype.from_dict(config["genotype"])
    if "sample_index" in config:
        p = rd.samples_json
        if not p.exists():
            raise ArtifactError(f"{p} missing: the sample job of this run has not finished")
        with reading(p, "the sampled architectures"):
            samples = read_json(p, dict)["samples"]
            i = int(config["sample_index"])
            if not 0 <= i < len(samples):
                raise ArtifactError(f"sample_index {i} out of range: {p} has {len(samples)} samples")
            return Genotype.from_dict(samples[i]["genotype"])
    p = rd.search.genotype
    if not p.exists():
        raise ArtifactError(f"{p} missing: run the search first")
    with reading(p, "the search's genotype record"):
        return Genotype.from_dict(read_json(p, dict)["genotype"])


def member_config(run: Path, config: dict, info: dict | None = None) -> TrainConfig:
    """A member's training settings: the preset, then the run's member settings (e.g. the demo's
    smaller splits keep its members comparable), the run's dataset, the job's overrides and seed.
    `info` stands in for the run's run.json (a pipeline checks its members before the run exists)."""
    info = RunDir(run).info() if info is None else info
    sets = {**(info.get("train_sets") or {}), **(config.get("set") or {})}
    if "dataset" not in sets and info.get("dataset"):
        sets["dataset"] = info["dataset"]
    if config.get("seed") is not None:
        sets["seed"] = str(config["seed"])
    return from_preset(TrainConfig, _run_preset(run, config), sets)


def sample_member(run: Path, config: dict) -> dict:
    """What a member retrained from samples.json (`sample_index`, the pipeline's members) records:
    the sample's regularizer and λ, and its name from them and the seed (`member_name`); {} for
    other members. The job's own config wins where it says otherwise."""
    if "sample_index" not in config:
        return {}
    p = RunDir(run).samples_json
    with reading(p, "the sampled architectures"):
        samples = read_json(p, dict)
        lam, reg = samples["samples"][int(config["sample_index"])].get("lam"), samples.get("regularizer")
    if lam is None or reg is None:
        return {}
    return {"name": member_name(reg, float(lam), int(config.get("seed") or 0)), "lam": float(lam), "regularizer": reg}


def retrain_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    genotype = resolve_genotype(run, config)
    config = {**sample_member(run, config), **config}
    cfg = member_config(run, config)
    extra = {k: config[k] for k in ("lam", "regularizer") if k in config}
    res = retrain(cfg, genotype, run, config["name"], device, progress, extra_meta=extra or None)
    return {"name": config["name"], "genotype": genotype.to_dict(), "metrics": res.metrics, "steps": res.steps,
            "seconds": res.seconds}


def evaluate_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    """Ensemble metrics of the chosen members (default all) on the test split → RUN/ensemble.json."""
    rd = RunDir(run)
    names = config.get("members") or rd.list_members()
    if not names:
        raise ArtifactError(f"{run}: no retrained members to evaluate")
    known = set(rd.list_members())
    missing = [n for n in names if n not in known]
    if missing:
        raise ArtifactError(f"unknown member(s) {', '.join(missing)}; this run has: {', '.join(sorted(known)) or 'none'}")
    probs = MemberProbs.load(run, names, config.get("epoch"))
    report = score(probs)
    out = {"members": [{"name": n, "epoch": e, **report.members[n]} for n, e in zip(names, probs.epochs)],
           "ensemble": report.metrics, "test_images": report.images, "vs_best_member": report.vs_best,
           "calibrated": report.calibrated, "notes": list(report.notes),
           "ledger": {"corruption": "clean", "severity": 0, **report.ledger}}  # a row as `shift` gives
    if config.get("write", True):
        write_json(rd.ensemble_json, out)
    return out


def baseline_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    """A baseline method (nes.method.baselines): genotypes → retrained members → RUN/baselines/<method>_s<seed>/.

    The NES-RE tournament size is `tournament` (`sample` in job configs of earlier versions)."""
    budget = config.get("budget")
    rec = run_baseline(run, config["method"], int(config.get("members", 3)), int(config.get("seed", 0)),
                       int(budget) if budget is not None else None, n_edges=int(config.get("n_edges", 2)),
                       population=int(config.get("population", 4)),
                       tournament=int(config.get("tournament", config.get("sample", 2))),
                       preset=config.get("preset"), sets=config.get("set"), device=device, progress=progress)
    return {"method": rec["method"], "members": rec["members"], "ensemble": rec["ensemble"],
            "search_seconds": rec["costs"]["search_seconds"], "train_seconds": rec["costs"]["train_seconds"],
            "total_seconds": rec["costs"]["total_seconds"], "warnings": rec.get("warnings", [])}


def shift_sets(run: Path, config: dict) -> list[tuple[str, Path, list[str]]]:
    """(label, run folder, member names) of every member set a shift job scores: the run's own
    ensemble ("ensemble": `members`, default every finished member) and, with `baselines`, each
    baseline record's ensemble ("<method>_s<seed>")."""
    rd = RunDir(run)
    names = list(config.get("members") or rd.finished_members())
    custom = bool(config.get("members"))
    sets = [("ensemble-" + "-".join(names)[:40] if custom else "ensemble", rd.path, names)] if names else []
    if config.get("baselines"):
        for rec in rd.baseline_records():
            sets.append((f"{rec['method']}_s{rec['seed']}", rd.baseline(rec["method"], int(rec["seed"])).path,
                         list(rec["members"])))
    if not sets:
        raise ArtifactError(f"{run}: no finished members to shift; retrain members (or run a baseline) first")
    return sets


def shift_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    """Every member set (`shift_sets`) on the test corruptions → RUN/shift/<label>.json, each with
    its difference to the `reference` set ("deepens_s0" when there is one) per severity."""
    images, seed = config.get("images"), config.get("seed")
    settings = ShiftSettings(DEFAULT_IMAGES if images is None else int(images), 0 if seed is None else int(seed),
                             config.get("select") or "clean").check()
    sets = shift_sets(run, config)
    total, done = sum(len(n) for _, _, n in sets), [0]

    def tick(text: str) -> None:
        if progress is not None:
            progress(done[0], total, {"shift": text})
        done[0] += text.startswith("test: member ")
    results = {label: shift_report(d, names, settings, run, device, tick) for label, d, names in sets}
    ref = config.get("reference") or next((k for k in results if k.startswith("deepens_s")), None)
    for label, (rep, sp) in results.items():
        rep["label"] = label
        if ref in results and label != ref:
            try:
                rep["vs"] = {"reference": ref, "by_severity": shift_difference(sp, results[ref][1])}
            except ArtifactError as e:
                rep["vs"] = {"reference": ref, "error": str(e)}
        if config.get("write", True):
            write_json(report_path(run, label, settings.select), rep)
    return {"reports": {label: rep for label, (rep, _) in results.items()}, "reference": ref}


def levers_task(run: Path, config: dict, progress: Progress | None = None, device: str | None = None) -> dict:
    """The training-free levers of the run's members against its DeepEns (`levers.report`: chosen
    on validation, scored clean and, unless shift is off, per shift severity) → RUN/levers.json."""
    images, seed = config.get("images"), config.get("seed")
    settings = None if config.get("shift") is False else ShiftSettings(
        DEFAULT_IMAGES if images is None else int(images), 0 if seed is None else int(seed)).check()
    size = int(config.get("members") or 5)
    if size < 2:
        raise ArtifactError(f"levers need an ensemble of ≥ 2 members, got members={size}")
    tick = (lambda text: progress(0, 1, {"levers": text})) if progress is not None else None
    rep = levers.report(run, size, settings, device, tick)
    write_json(Path(run) / levers.LEVERS_FILE, rep)
    return {"levers": str(Path(run) / levers.LEVERS_FILE), "best": rep["best"], "seconds": rep["seconds"]}


TASKS: dict[str, Task] = {
    "search": search_task,
    "hypernet": hypernet_task,
    "fixed_lambda": fixed_lambda_task,
    "sample": sample_task,
    "retrain": retrain_task,
    "evaluate": evaluate_task,
    "shift": shift_task,
    "baseline": baseline_task,
    "levers": levers_task,
}
