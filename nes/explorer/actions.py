"""What the app's buttons do: queue searches, members and baselines as background jobs.

The pages only collect the user's choices and show the outcome; the checks and the job configs
live here, so that they are tested without a browser and the pages stay thin.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ..config import SearchConfig, from_preset
from ..layout import check_name, member_name
from ..runs.jobs import submit
from ..runs.store import Store
from .runview import RunView


@dataclass
class Submitted:
    """Jobs queued (id, member name) and members skipped because they exist or are training."""

    started: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def submit_members(store: Store, run_id: str, view: RunView, regularizer: str | None, lams: Sequence[float],
                   seed: int = 0, star: bool = False) -> Submitted:
    """Retrain α* (with `star`) and α(λ) for every λ of `lams` as background jobs. A member that
    exists or has a retrain job already is skipped (another seed trains it again)."""
    existing = set(view.member_names()) | {j.config.get("name") for j in store.jobs(run_id) if j.kind == "retrain"}
    todo: list[tuple[str, dict]] = []
    if star:
        todo.append((member_name(seed=seed), {}))
    for s in view.sample(regularizer, list(lams)) if lams and regularizer else []:
        todo.append((member_name(s.lam, seed), {"genotype": s.genotype.to_dict(), "lam": s.lam,
                                               "regularizer": regularizer}))
    if not todo:
        raise ValueError("choose at least one λ value (or α*)")
    out = Submitted()
    for name, extra in todo:
        if name in existing:
            out.skipped.append(name)
            continue
        out.started.append((submit(store, run_id, "retrain", {"name": name, "seed": int(seed), **extra}), name))
    return out


def start_search(store: Store, name: str, dataset: str, preset: str, sets: dict[str, str],
                 then_hypernet: bool = True) -> int:
    """Queue a search on a new (or resumed) run `name`, optionally followed by the `edges`
    hypernetwork; the settings are validated before anything is queued. Returns the search job."""
    name = check_name((name or "").strip(), "run")
    sets = {"dataset": dataset, **sets}
    from_preset(SearchConfig, preset, sets)  # ValueError naming a bad setting
    job = submit(store, name, "search", {"preset": preset, "set": sets})
    if then_hypernet:
        submit(store, name, "hypernet", {"preset": preset, "regularizer": "edges"}, [job])
    return job


def start_baseline(store: Store, run_id: str, view: RunView, method: str, members: int, seed: int = 0,
                   budget: int = 0) -> int:
    """Queue a baseline method on the run (it needs α*, and EdgeNES its hypernetwork)."""
    if not view.has_search:
        raise ValueError("this run has no finished search yet; the baselines start from α*")
    reg = method.split("-", 1)[1] if method.startswith("edgenes-") else None
    if reg is not None and reg not in view.regularizers():
        raise ValueError(f"{method} needs the {reg} hypernetwork: train it on the Hypernetwork page first")
    cfg = {"method": method, "members": int(members), "seed": int(seed)}
    if budget:
        cfg["budget"] = int(budget)
    return submit(store, run_id, "baseline", cfg)
