"""The quick pipeline end to end, as a class would run it: search → hypernetwork → 3 members.

Through the product's own job system (`nes.runs.pipeline`, what `python -m nes run` and the app's
Pipeline page queue): a DARTS search (`quick` preset, `--search-set` overrides, e.g. mode=gdas), the
`edges` hypernetwork, 3 members picked by the default pick (α*, then the most distant of the
structurally sound genotypes whose one-shot estimate is within 2 points of α*'s), each
retrained in a worker process with the `quick` member recipe on the full Fashion-MNIST training set
(the workers share this machine's cores: one each while two run, and the cores a finished
worker frees are lent to the one still running) and scored on the
full test set, then the ensemble against its best member (chosen by validation NLL) with a paired
bootstrap 95 % interval over the test images. Stage times are the jobs' own start/finish times.

    python benchmarks/bench_pipeline.py                      # ~8 min on 2 cores
    python benchmarks/bench_pipeline.py --search-set mode=darts --search-set downsample=1

Last line: RESULT total_s=… min_member_acc=… gain_pts=… gain_lo=… gain_hi=… (plus the stage times
and α*'s confidence).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nes.artifacts import read_json  # noqa: E402
from nes.layout import RunDir  # noqa: E402
from nes.method.darts import confidence, load_search  # noqa: E402
from nes.method.flaws import structural_flaws_mark  # noqa: E402
from nes.method.space import Genotype  # noqa: E402
from nes.method.stats import Difference  # noqa: E402
from nes.runtime import cpu_model  # noqa: E402
from nes.runs.jobs import wait  # noqa: E402
from nes.runs.tasks import member_config  # noqa: E402
from nes.runs.pipeline import pipeline  # noqa: E402
from nes.runs.store import Store  # noqa: E402


def cores_used(job) -> str:
    """'1→2' when the launchers lent the worker cores that others freed (its log says so), else '2'."""
    log = RunDir(job.run_id).job_log(job.id)
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    moves = [line.split()[1:4:2] for line in lines if line.startswith("worker: ") and "cores granted" in line]
    return "→".join([moves[0][0]] + [b for _, b in moves]) if moves else str(job.cores)


def sets(pairs: list[str]) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in pairs)


def star_summary(run: Path) -> tuple[dict, bool]:
    s = load_search(run)
    conf = confidence(s.layout, s.theta)
    hist = read_json(RunDir(run).search.history)
    tail = hist[len(hist) - max(1, len(hist) // 3):]
    stable = len({row.get("genotype") for row in tail}) == 1
    print(f"  genotype* {s.star.compact()}; kept-edge top-op p {conf['kept_top_op']:.3f}; "
          f"stable over the last third: {stable}")
    return conf, stable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--regularizer", default="edges")
    ap.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NES_HOME"] = tmp
        store = Store(tmp)
        run = Path(tmp) / "run"
        t0 = time.time()
        ids = pipeline(store, str(run), "fashion-mnist", "quick", a.members, a.regularizer,
                       sets=sets(a.search_set))
        seen: set[int] = set()

        def show(jobs) -> None:
            for j in jobs:
                if j.status in ("done", "failed", "cancelled") and j.id not in seen:
                    seen.add(j.id)
                    extra = ""
                    if j.kind == "retrain" and j.result:
                        g, m = Genotype.from_dict(j.result["genotype"]), j.result["metrics"]
                        extra = (f", val {100 * m['val_accuracy']:.2f} % / test accuracy "
                                 f"{100 * m['test_accuracy']:.2f} %, {g.compact()}"
                                 f"{structural_flaws_mark(g, member_config(run, j.config).layers)}")
                    print(f"[{time.time() - t0:6.0f} s] {j.kind} ({j.config.get('name', '')}) {j.status} "
                          f"on {cores_used(j)} core(s) in {j.finished - j.started:.0f} s{extra}", flush=True)

        jobs = wait(store, ids, on_poll=show)
        total = time.time() - t0
        failed = [j for j in jobs if j.status != "done"]
        if failed:
            log = RunDir(str(run)).job_log(failed[0].id)
            raise SystemExit(f"job {failed[0].id} ({failed[0].kind}) {failed[0].status}: {failed[0].error}\n"
                             f"{log.read_text()[-3000:] if log.exists() else ''}")
        conf, stable = star_summary(run)
        by_kind = {}
        for j in jobs:
            by_kind.setdefault(j.kind, []).append(j)
        stages = {k: max(j.finished for j in js) - min(j.started for j in js) for k, js in by_kind.items()}
        accs = [j.result["metrics"]["test_accuracy"] for j in by_kind["retrain"]]
        ev = by_kind["evaluate"][0].result
    acc = Difference.from_dict(ev["vs_best_member"]["accuracy"])
    nll = Difference.from_dict(ev["vs_best_member"]["nll"])
    print(f"members: {', '.join(f'{100 * x:.2f} %' for x in accs)}")
    print(f"ensemble {100 * ev['ensemble']['accuracy']:.2f} % on {ev['test_images']} test images; vs best member "
          f"({ev['vs_best_member']['best_member']}): accuracy {acc.text()}, NLL {nll.text()}")
    print("targets: total ≤ 360 s on 2 cores, every member ≥ 90 %, α* stable with kept-edge top-op p ≥ 0.4")
    print("RESULT " + " ".join(f"{k}_s={v:.0f}" for k, v in stages.items())
          + f" total_s={total:.0f} min_member_acc={min(accs):.4f} star_top_op={conf['kept_top_op']:.3f} "
            f"star_stable={stable} gain_pts={acc.value:.2f} gain_lo={acc.lo:.2f} gain_hi={acc.hi:.2f}")


if __name__ == "__main__":
    main()
