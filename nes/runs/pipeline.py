"""The whole method as dependent background jobs: search → hypernet → sample → members → evaluate."""
from __future__ import annotations

from .jobs import launch_ready, submit
from .store import Store, StoreError


def pipeline(store: Store, run: str, dataset: str | None, preset: str, members: int, regularizer: str = "edges",
             executor: str = "local", sets: dict[str, str] | None = None,
             member_resources: dict[str, float] | None = None) -> list[int]:
    """The whole method as dependent jobs: search → hypernet → sample → members → evaluate.

    `member_resources` ({"num_cpus": …, "num_gpus": …}) is what each Ray member task asks for."""
    if members < 1:
        raise StoreError(f"--members must be >= 1, got {members}")
    search_sets = dict(sets or {})
    if dataset:
        search_sets["dataset"] = dataset
    s = submit(store, run, "search", {"preset": preset, "set": search_sets}, launch=False)
    h = submit(store, run, "hypernet", {"preset": preset, "regularizer": regularizer}, [s], launch=False)
    sm = submit(store, run, "sample", {"n": members, "regularizer": regularizer}, [h], launch=False)
    m = [submit(store, run, "retrain", {"preset": preset, "sample_index": i, "name": f"member_{i}", "seed": i,
                                        **(member_resources or {})},
                [sm], executor=executor, launch=False) for i in range(members)]
    e = submit(store, run, "evaluate", {}, m, launch=False)
    launch_ready(store)
    return [s, h, sm, *m, e]
