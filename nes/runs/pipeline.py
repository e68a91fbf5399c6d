"""The whole method as dependent background jobs: search → hypernet → sample → members → evaluate.

The α* member needs only the search, so it trains while the hypernetwork does (two workers on two
cores: the hypernetwork's small ops gain little from a second thread, a member's convs gain much
from the core it frees later); the other members wait for the sample."""
from __future__ import annotations

from pathlib import Path

from ..config import INHERITED_FROM_SEARCH, MAX_MEMBERS, HypernetConfig, SearchConfig, from_preset
from ..layout import member_name
from .jobs import launch_ready, submit
from .store import Store, StoreError
from .tasks import PICKS, member_config


def check_settings(preset: str, search_sets: dict[str, str], regularizer: str, members: int) -> None:
    """Build every config the pipeline's jobs will build (search, hypernetwork, members) so a bad
    setting is a ValueError naming it before anything is queued, not a failed job later."""
    step = "search"
    try:
        sc = from_preset(SearchConfig, preset, search_sets)
        step = "hypernetwork"
        from_preset(HypernetConfig, preset, {**{k: getattr(sc, k) for k in INHERITED_FROM_SEARCH},
                                             "regularizer": regularizer})
        step = "member"
        for i in range(members):
            member_config(Path("."), {"preset": preset, "seed": i}, info={"dataset": sc.dataset})
    except ValueError as e:
        raise StoreError(f"{step} settings: {e}; nothing was queued") from None


def pipeline(store: Store, run: str, dataset: str | None, preset: str, members: int, regularizer: str = "edges",
             executor: str = "local", sets: dict[str, str] | None = None,
             member_resources: dict[str, float] | None = None, pick: str = "strong") -> list[int]:
    """The whole method as dependent jobs: search → hypernet → sample → members → evaluate; the
    first member is α* itself (seed 0, `alpha_star`), queued on the search alone, the others are
    the sample's diverse architectures 1 … members − 1 (seed i; the sample's index 0 is its α* end).

    `member_resources` ({"num_cpus": …, "num_gpus": …}) is what each Ray member task asks for;
    `pick`: how the sample picks the diverse members (`tasks.PICKS`)."""
    if not 1 <= members <= MAX_MEMBERS:
        raise StoreError(f"--members must be between 1 and {MAX_MEMBERS} (each member is a retraining job), "
                         f"got {members}; nothing was queued")
    if Path(run).exists() and not Path(run).is_dir():
        raise StoreError(f"run folder {run} is a file; pick another --run (a name or a folder); nothing was queued")
    search_sets = dict(sets or {})
    if dataset:
        search_sets["dataset"] = dataset
    check_settings(preset, search_sets, regularizer, members)
    if pick not in PICKS:
        raise StoreError(f"--pick must be one of {', '.join(PICKS)}, got {pick!r}; nothing was queued")
    s = submit(store, run, "search", {"preset": preset, "set": search_sets}, launch=False)
    h = submit(store, run, "hypernet", {"preset": preset, "regularizer": regularizer}, [s], launch=False)
    sm = submit(store, run, "sample", {"members": members, "regularizer": regularizer, "preset": preset, "pick": pick},
                [h], launch=False)
    res = member_resources or {}
    m = [submit(store, run, "retrain", {"preset": preset, "name": member_name(), "seed": 0, **res}, [s],
                executor=executor, launch=False)]
    m += [submit(store, run, "retrain", {"preset": preset, "sample_index": i, "regularizer": regularizer, "seed": i,
                                         **res}, [sm], executor=executor, launch=False) for i in range(1, members)]
    e = submit(store, run, "evaluate", {}, m, launch=False)
    launch_ready(store)
    return [s, h, sm, *m, e]
