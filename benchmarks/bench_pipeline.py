"""The quick pipeline end to end, as a class would run it: search → hypernetwork → 3 members.

In one process on this machine's cores, with the project's own steps (`nes.runs.tasks`): a DARTS
search (`quick` preset, `--search-set` overrides, e.g. mode=gdas), the `edges` hypernetwork, a
sample of 3 members spread over the diversity axis (α* among them), each retrained with the
`quick` member recipe on the full Fashion-MNIST training set and scored on the full test set,
then the ensemble against its best member (chosen by validation NLL) with a paired bootstrap
95 % interval over the test images.

    python benchmarks/bench_pipeline.py                      # ~10 min on 2 cores
    python benchmarks/bench_pipeline.py --search-set mode=gdas

Last line: RESULT total_s=… min_member_acc=… gain_pts=… gain_lo=… gain_hi=… (plus the stage times
and α*'s confidence).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nes.artifacts import read_json  # noqa: E402
from nes.layout import RunDir  # noqa: E402
from nes.method.darts import confidence, load_search  # noqa: E402
from nes.method.stats import Difference  # noqa: E402
from nes.runs.tasks import evaluate_task, hypernet_task, retrain_task, sample_task, search_task  # noqa: E402


def sets(pairs: list[str]) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--regularizer", default="edges")
    ap.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--member-set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    stages: dict[str, float] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"

        def stage(name, fn, *args):
            t = time.perf_counter()
            out = fn(*args)
            stages[name] = time.perf_counter() - t
            print(f"[{time.perf_counter() - t_all:6.0f} s] {name}: {stages[name]:.1f} s", flush=True)
            return out

        stage("search", search_task, run, {"preset": "quick", "set": sets(a.search_set)}, None, a.device)
        s = load_search(run)
        conf = confidence(s.layout, s.theta)
        hist = read_json(RunDir(run).search.history)
        tail = hist[len(hist) - max(1, len(hist) // 3):]
        stable = len({row.get("genotype") for row in tail}) == 1
        print(f"  genotype* {s.star.compact()}; kept-edge top-op p {conf['kept_top_op']:.3f}; "
              f"stable over the last third: {stable}")
        stage("hypernet", hypernet_task, run, {"preset": "quick", "regularizer": a.regularizer}, None, a.device)
        stage("sample", sample_task, run, {"regularizer": a.regularizer, "n": a.members}, None, a.device)
        accs = []
        for i in range(a.members):
            out = stage(f"member_{i}", retrain_task, run, {"preset": "quick", "sample_index": i, "name": f"member_{i}",
                                                           "seed": i, "set": sets(a.member_set)}, None, a.device)
            accs.append(out["metrics"]["test_accuracy"])
            print(f"  member_{i}: test accuracy {100 * accs[-1]:.2f} %", flush=True)
        ev = stage("evaluate", evaluate_task, run, {}, None, a.device)
    total = time.perf_counter() - t_all
    acc = Difference.from_dict(ev["vs_best_member"]["accuracy"])
    nll = Difference.from_dict(ev["vs_best_member"]["nll"])
    print(f"ensemble {100 * ev['ensemble']['accuracy']:.2f} % on {ev['test_images']} test images; vs best member "
          f"({ev['vs_best_member']['best_member']}): accuracy {acc.text()}, NLL {nll.text()}")
    print("targets: total ≤ 600 s on 2 cores, every member ≥ 90 %, α* stable with kept-edge top-op p ≥ 0.4")
    print("RESULT " + " ".join(f"{k}_s={v:.0f}" for k, v in stages.items())
          + f" total_s={total:.0f} min_member_acc={min(accs):.4f} star_top_op={conf['kept_top_op']:.3f} "
            f"star_stable={stable} gain_pts={acc.value:.2f} gain_lo={acc.lo:.2f} gain_hi={acc.hi:.2f}")


if __name__ == "__main__":
    main()
