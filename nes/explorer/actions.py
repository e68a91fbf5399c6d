"""What the app's buttons do: queue searches, members and baselines as background jobs, cancel and
resume jobs, write export bundles.

The pages only collect the user's choices and show the outcome; the checks and the job configs
live here, so that they are tested without a browser and the pages stay thin. Every action here that
writes to the run store refuses in classroom mode (`jobcontrols.require_writable`, before its first
check), so a page that forgot to hide a control still cannot write; the read-only helpers
(`member_options`, `member_choice`) do not check.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..config import HypernetConfig, SearchConfig, from_preset
from ..layout import MemberRecord, check_name, member_name
from ..method.baselines import check_baseline_args
from ..method.shift import SELECT
from ..runs.jobs import cancel, resume, submit
from ..runs.store import Store
from .jobcontrols import require_writable
from .runview import RunView

if TYPE_CHECKING:
    from ..export.write import ExportResult


@dataclass
class Submitted:
    """Jobs queued (id, member name) and members skipped because they exist or are training."""

    started: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def submit_members(store: Store, run_id: str, view: RunView, regularizer: str | None, lams: Sequence[float],
                   seed: int = 0, star: bool = False) -> Submitted:
    """Retrain α* (with `star`) and α(λ) of the `regularizer` hypernetwork for every λ of `lams`
    as background jobs. A member that exists or has a retrain job already (the same name, or the
    same hypernetwork, λ and seed) is skipped: another seed trains it again."""
    require_writable("queue members")
    todo: list[dict] = []
    if star:
        todo.append({"name": member_name(seed=seed)})
    for s in view.sample(regularizer, list(lams)) if lams and regularizer else []:
        todo.append({"name": member_name(regularizer, s.lam, seed), "genotype": s.genotype.to_dict(), "lam": s.lam,
                     "regularizer": regularizer})
    if not todo:
        raise ValueError("choose at least one λ value (or α*)")
    existing = [view.run.member(n).record() for n in view.member_names()]
    existing += [MemberRecord.from_config(j.config) for j in store.jobs(run_id) if j.kind == "retrain"]
    out = Submitted()
    for cfg in todo:
        cfg["seed"] = int(seed)
        same = next((e for e in existing if MemberRecord.from_config(cfg).same_member(e)), None)
        if same is not None:  # named as it is in the run (a run named before may call it lam_1_00)
            out.skipped.append(same.name or cfg["name"])
            continue
        out.started.append((submit(store, run_id, "retrain", cfg), cfg["name"]))
    return out


def member_options(members: Sequence[str], jobs: Sequence) -> list[str]:
    """What the Ensemble page offers: the run's members, then the queued or running retrain jobs'
    members that have no folder yet (a pipeline's member is named when it starts: left out until then)."""
    pending = [j.config.get("name") for j in jobs if j.kind == "retrain"]
    return list(members) + [n for n in dict.fromkeys(pending) if n and n not in members]


def member_choice(previous: Sequence[str] | None, known: Sequence[str], names: Sequence[str]) -> list[str]:
    """The Ensemble page's member choice after the run's members changed from `known` to `names`:
    the user's `previous` choice kept (in its order) less the names that vanished, plus the members
    that are new since; every member on a first visit (`previous` None)."""
    if previous is None:
        return list(names)
    return [n for n in previous if n in names] + [n for n in names if n not in known and n not in previous]


def start_search(store: Store, name: str, dataset: str, preset: str, sets: dict[str, str],
                 then_hypernet: bool = True) -> int:
    """Queue a search on a new (or resumed) run `name`, optionally followed by the `edges`
    hypernetwork; the settings are validated before anything is queued. Returns the search job."""
    require_writable("queue a search")
    name = check_name((name or "").strip(), "run")
    sets = {"dataset": dataset, **sets}
    from_preset(SearchConfig, preset, sets)  # ValueError naming a bad setting
    job = submit(store, name, "search", {"preset": preset, "set": sets})
    if then_hypernet:
        submit(store, name, "hypernet", {"preset": preset, "regularizer": "edges"}, [job])
    return job


def start_hypernet(store: Store, run_id: str, regularizer: str, preset: str, sets: dict[str, str],
                   after: Sequence[int] = ()) -> int:
    """Queue a hypernetwork of `regularizer` on the run, after the jobs `after` (a running search).
    The settings are validated first, as for a search: a bad one is a ValueError naming it and
    nothing is queued. Returns the job."""
    require_writable("queue a hypernetwork")
    from_preset(HypernetConfig, preset, {**sets, "regularizer": regularizer})  # ValueError naming a bad setting
    return submit(store, run_id, "hypernet", {"preset": preset, "regularizer": regularizer, "set": dict(sets)},
                  list(after))


def start_baseline(store: Store, run_id: str, view: RunView, method: str, members: int, seed: int = 0,
                   budget: int = 0) -> int:
    """Queue a baseline method on the run (it needs α*, and EdgeNES its hypernetwork)."""
    require_writable("queue a baseline")
    if not view.has_search:
        raise ValueError("this run has no finished search yet; the baselines start from α*")
    reg = method.split("-", 1)[1] if method.startswith("edgenes-") else None
    if reg is not None and reg not in view.regularizers():
        raise ValueError(f"{method} needs the {reg} hypernetwork: train it on the Hypernetwork page first")
    check_baseline_args(method, int(members), int(budget) or None, view.star, 2, 4, 2)  # as the job would, before queueing
    cfg = {"method": method, "members": int(members), "seed": int(seed)}
    if budget:
        cfg["budget"] = int(budget)
    return submit(store, run_id, "baseline", cfg)


def start_shift(store: Store, run_id: str, view: RunView, select: str = "clean") -> int:
    """Queue the shift evaluation of the run's ensemble and every baseline (`nes shift --baselines`)."""
    require_writable("queue a shift evaluation")
    if select not in SELECT:
        raise ValueError(f"selection protocol must be one of {', '.join(SELECT)}, got {select!r}")
    if len(view.finished_members()) < 1 and not view.baselines():
        raise ValueError("this run has no finished member or baseline to evaluate under shift yet")
    return submit(store, run_id, "shift", {"baselines": True, "select": select})


def start_levers(store: Store, run_id: str, view: RunView, members: int = 5, shift: bool = True) -> int:
    """Queue the levers report of the run's members against its DeepEns (`nes levers`)."""
    require_writable("queue the levers report")
    if len(view.finished_members()) < 2:
        raise ValueError("the levers need at least 2 finished members of this run: retrain members first")
    if not any(b.get("method") == "deepens" for b in view.baselines()):
        raise ValueError("the levers compare against DeepEns: run the deepens method above first")
    return submit(store, run_id, "levers", {"members": int(members), "shift": bool(shift)})


def cancel_job(store: Store, job_id: int) -> str:
    """Cancel job `job_id` from the app (`nes.runs.jobs.cancel`: a queued job at once, a running one
    at its worker's next progress report); returns what happened, in words. StoreError when the job
    has already ended."""
    require_writable(f"cancel job #{job_id}")
    return cancel(store, job_id)


def resume_job(store: Store, job_id: int) -> str:
    """Queue failed or cancelled job `job_id` again from the app (`nes.runs.jobs.resume`: with the jobs
    that failed because of it; it continues from its last checkpoint); returns what happened."""
    require_writable(f"resume job #{job_id}")
    resume(store, job_id)
    return "queued again; it continues from its last checkpoint"


def export_bundle(run_dir: str | Path, names: Sequence[str], bundle_name: str, onnx: bool = False,
                  overwrite: bool = False) -> ExportResult:
    """Write the bundle of members `names` into the run (RUN/exports/<bundle_name> and its zip) from
    the Export page. A write to the store, so it refuses in classroom mode; downloading a bundle
    already written reads a file and stays offered there."""
    require_writable(f"write the bundle {bundle_name!r}")
    from ..export.write import export_into_run  # loaded on export: the pages that only queue jobs skip it

    return export_into_run(run_dir, names, bundle_name, onnx=onnx, overwrite=overwrite)
