"""Server time of the app's interactive paths on the bundled demo run, median of N.

1. A λ-slider change on the Explore page: the app script rerun in-process with streamlit's AppTest
   (sample α(λ), cell graphs, op bars, JS heatmap, genotype diff) after the slider moves.
2. A click on the architecture map (Explore): the calls the page makes for it (`mapclick.picked`,
   the one-shot estimate, the clicked cell graphs), timed in-process on path points of the demo's
   map; the first click also builds the one-shot scorer (the search's supernet and validation slice) and
   takes the members' estimates (`mapclick.trust`: read from RUN/oneshot_trust.json, which the demo ships).
3. A live Ensemble page: the server CPU time of one rerun of the page (what it does at most every
   `REDRAW_SECONDS` while a member trains and its files change; between, only the jobs' progress rows
   redraw), with the scored views kept until a member's files change (now) against recomputing them
   every rerun (before), side by side; the CPU share of a core one open page costs is at most that
   time over the redraw period.
Browser rendering is not included.

    python benchmarks/bench_ui.py [--n 20]
Last line: RESULT slider_ms=<median> click_ms=<median> first_click_ms=<…> live_cpu_ms=<median>
live_cpu_ms_recomputed=<median> live_core_pct=<…>
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="slider changes to time")
    a = ap.parse_args()
    os.environ["NES_HOME"] = tempfile.mkdtemp(prefix="nes_bench_ui_")
    from streamlit.testing.v1 import AppTest

    from nes.runtime import device_label

    at = AppTest.from_file(str(ROOT / "explorer_app.py"), default_timeout=120)
    t0 = time.perf_counter()
    at.run()
    first = (time.perf_counter() - t0) * 1000
    if at.exception:
        raise SystemExit(f"the app failed: {[e.value for e in at.exception]}")
    slider = at.slider[0]
    lo, hi = slider.proto.min, slider.proto.max
    at.run()  # warm (caches filled)
    times = []
    for i in range(a.n):
        lam = round(lo + (hi - lo) * ((i * 7) % a.n) / max(a.n - 1, 1), 1)
        if lam == at.slider[0].value:
            lam = hi if lam != hi else lo
        at.slider[0].set_value(lam)
        t = time.perf_counter()
        at.run()
        times.append((time.perf_counter() - t) * 1000)
        assert not at.exception, [e.value for e in at.exception]
    times.sort()
    med = statistics.median(times)
    print(f"device: {device_label()}  (app process, 1 torch thread)")
    print(f"first page load (demo install + all figures): {first:.0f} ms")
    print(f"slider change, {a.n} runs: median {med:.1f} ms, min {times[0]:.1f} ms, "
          f"p90 {times[int(0.9 * (len(times) - 1))]:.1f} ms, max {times[-1]:.1f} ms")
    click, first_click = map_click(a.n)
    print(f"map click (one-shot estimate and the clicked cells), {a.n} clicks: median {click:.1f} ms; the first, "
          f"which also loads the one-shot scorer and the members' estimates: {first_click:.0f} ms")
    live, live_old = live_page(at, a.n)
    from pages._widgets import REDRAW_SECONDS
    share = 100 * live / 1000 / REDRAW_SECONDS
    print(f"live Ensemble page rerun, server CPU: median {live:.1f} ms (views kept until files change) vs "
          f"{live_old:.1f} ms (recomputed every rerun); one open page redrawn every {REDRAW_SECONDS:.0f} s costs "
          f"{share:.1f} % of a core ({100 * live_old / 1000 / REDRAW_SECONDS:.1f} % recomputed)")
    print(f"RESULT slider_ms={med:.1f} click_ms={click:.1f} first_click_ms={first_click:.0f} live_cpu_ms={live:.1f} "
          f"live_cpu_ms_recomputed={live_old:.1f} live_core_pct={share:.1f}")


def map_click(n: int) -> tuple[float, float]:
    """(median ms of a click on a path point of the demo's map, ms of the first click)."""
    from nes.explorer import archmap, mapclick, viz
    from nes.explorer.demo import DEMO_DIR
    from nes.method.oneshot import one_shot_accuracy

    amap = archmap.build_map(DEMO_DIR)
    path = [i for ix in amap.paths.values() for i in ix]
    times, trust = [], None
    for k in range(n + 1):
        t = time.perf_counter()
        point = mapclick.picked(amap, [{"customdata": path[(k * 7) % len(path)]}])
        trust = trust or mapclick.trust(DEMO_DIR, amap)
        mapclick.estimate_text(point, one_shot_accuracy(trust.setup, point.genotype), trust)
        for ct in point.genotype.cell_types:
            viz.cell_figure(point.genotype, ct, reference=amap.of_kind("alpha_star")[0].genotype).to_json()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times[1:]), times[0]


def live_page(at, n: int) -> tuple[float, float]:
    """Median server CPU ms of an Ensemble page rerun: with the scored views kept, and with them
    dropped before every rerun (every poll recomputing them, as before)."""
    from nes.method import scoring

    at.switch_page("pages/ensemble.py").run()
    kept, fresh = [], []
    for i in range(2 * n):
        recompute = i % 2 == 1
        if recompute:
            scoring._VIEWS.clear()
        t = time.process_time()
        at.run()
        (fresh if recompute else kept).append((time.process_time() - t) * 1000)
        assert not at.exception, [e.value for e in at.exception]
    return statistics.median(kept), statistics.median(fresh)


if __name__ == "__main__":
    main()
