"""Server time of a λ-slider change on the Explore page (bundled demo run), median of N.

Runs the app script in-process with streamlit's AppTest (the same script run the server does on a
slider change: sample α(λ), build the cell graphs, op bars, JS heatmap and the genotype diff) and
times each rerun after the slider moves to a new value. Browser rendering is not included.

    python benchmarks/bench_ui.py [--n 20]
Last line: RESULT slider_ms=<median> (target ≤ 150 ms).
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
    print(f"RESULT slider_ms={med:.1f}")


if __name__ == "__main__":
    main()
