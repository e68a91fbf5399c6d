"""What one open live Ensemble page costs a member training beside it, end to end.

A real `streamlit run explorer_app.py` server, a real worker retraining a `quick` member of the
bundled demo (full Fashion-MNIST, the job system's own worker process), and a real headless
Chromium that opens the Ensemble page (live while the member trains: it polls every
`POLL_SECONDS` of pages/_widgets.py) or closes it, in alternating windows: closed, open, closed,
open, … Each window is one whole epoch of the member, from the first progress report of an epoch
to the first of the next (its training and its evaluation, in the worker's clock), so that where
an epoch-end evaluation falls cannot tilt a window; the page opens, and loads, before an open
window's epoch begins. Per window: the worker's steps per second, the server's CPU (from /proc)
and the browser's. The member's pace varies by several per cent from epoch to epoch with nothing
else running, so the ratio comes with a bootstrap interval over the windows.

    python benchmarks/bench_live.py [--pairs 5] [--epochs 1] [--gc]

Last line: RESULT server_core_pct_open=… server_core_pct_closed=… browser_core_pct_open=…
steps_ratio_open_vs_closed=… steps_ratio_lo=… steps_ratio_hi=… post_script_gc=… (targets: server
≤ 5 % of a core with the page open, steps ≥ 0.95× closed).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TICK = os.sysconf("SC_CLK_TCK")
EPOCHS = 40  # the member job's: more than the windows can see on a fast CPU (it is cancelled at the end)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (0 for one that has gone)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError, ValueError):
            pass
    return total


def chromium_pids() -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if b"chromium" in (p / "cmdline").read_bytes():
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def start_server(home: Path, gc: bool = False) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "NES_HOME": str(home), "NES_NO_PROGRESS": "1",
           "STREAMLIT_RUNNER_POST_SCRIPT_GC": "true" if gc else "false"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "explorer_app.py", "--server.port", str(port),
                             "--server.headless", "true", "--server.fileWatcherType", "none",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://localhost:{port}"
    for _ in range(240):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read().strip() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("streamlit did not become healthy")


def epoch_starts(store, job_id: int) -> dict[int, tuple[int, float]]:
    """Per epoch, its first progress row: (step, the worker's time of that report)."""
    out: dict[int, tuple[int, float]] = {}
    for r in store.metrics(job_id, "epoch"):
        out.setdefault(int(r["value"]), (r["step"], r["time"]))
    return out


def next_epoch(store, job_id: int, after: int = -1) -> int:
    """The epoch of the job's latest reported step (steps count from 1), once it is later than
    AFTER or the job has stopped (polled every 0.25 s)."""
    while True:
        j = store.job(job_id)
        epoch = (j.step - 1) // (j.total // EPOCHS)
        if epoch > after or j.status != "running":
            return epoch
        time.sleep(0.25)


def window(store, job_id: int, server_pid: int, epochs: int) -> dict[str, float]:
    """The worker's steps/s over EPOCHS whole epochs, each one's training and its evaluation (from
    the first report of an epoch to the first of the epoch EPOCHS later, in the worker's clock:
    where an epoch-end evaluation falls cannot tilt a window), and the server's and the browser's
    CPU share meanwhile."""
    e0 = next_epoch(store, job_id, next_epoch(store, job_id))
    c0, b0, t0 = cpu_seconds([server_pid]), cpu_seconds(chromium_pids()), time.time()
    next_epoch(store, job_id, e0 + epochs - 1)
    c1, b1, t1 = cpu_seconds([server_pid]), cpu_seconds(chromium_pids()), time.time()
    starts = epoch_starts(store, job_id)
    (s0, w0), (s1, w1) = starts[e0], starts.get(e0 + epochs, starts[e0])
    return {"steps_s": (s1 - s0) / (w1 - w0) if w1 > w0 else 0.0, "server_pct": 100 * (c1 - c0) / (t1 - t0),
            "browser_pct": 100 * max(0.0, b1 - b0) / (t1 - t0), "status": store.job(job_id).status}


def measure(browser, store, job: int, home: Path, gc: bool, pairs: int, epochs: int) -> list[dict]:
    """One server (Streamlit's post-run garbage collection on or off) and PAIRS closed / open
    windows: the page opens (and loads) before an open window's first epoch begins, and closes
    before a closed window's."""
    server, url = start_server(home, gc)
    rows = []
    try:
        for i, state in enumerate(("closed", "open") * pairs):
            if state == "open":
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url + "/ensemble", wait_until="domcontentloaded")
                page.wait_for_selector(".js-plotly-plot", timeout=60_000)
            row = {"state": state, **window(store, job, server.pid, epochs)}
            if state == "open":
                page.close()
            rows.append(row)
            print(f"window {i + 1} ({state}): worker {row['steps_s']:.2f} steps/s, server {row['server_pct']:.1f} % "
                  f"of a core, browser {row['browser_pct']:.1f} %, job {row['status']}", flush=True)
    finally:
        server.terminate()
        server.wait(30)
    return rows


def ratio_interval(opened: list[float], closed: list[float], n: int = 2000) -> tuple[float, float]:
    """95 % bootstrap interval of mean(open) / mean(closed), the windows of each state resampled."""
    rng = random.Random(0)
    ratios = sorted(statistics.fmean(rng.choices(opened, k=len(opened))) /
                    statistics.fmean(rng.choices(closed, k=len(closed))) for _ in range(n))
    return ratios[int(0.025 * n)], ratios[int(0.975 * n) - 1]


def run_job(store, run, home: Path, a) -> list[dict]:
    """The member's job, the windows beside it, and the job cancelled (no worker outlives the benchmark)."""
    from playwright.sync_api import sync_playwright

    from nes.runs.jobs import cancel, submit, wait
    # every epoch at 28 px (a steady step rate from window to window), and more epochs than the
    # windows can see on a fast CPU: the job is cancelled once they are measured
    job = submit(store, run, "retrain", {"preset": "quick", "name": "bench_live", "seed": 7,
                                         "set": {"epochs": str(EPOCHS), "epoch_sizes": "", "log_every": "5"}})
    try:
        while store.job(job).step < 40:  # data loaded, steps under way
            time.sleep(1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            rows = measure(browser, store, job, home, a.gc, a.pairs, a.epochs)
            browser.close()
    finally:
        if store.job(job).status in ("queued", "running"):
            cancel(store, job)
        wait(store, [job], poll=0.5)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5, help="closed / open window pairs")
    ap.add_argument("--epochs", type=int, default=1, help="the member's whole epochs per window")
    ap.add_argument("--gc", action="store_true", help="the server with Streamlit's post-run garbage collection "
                    "(its default; this repository's .streamlit/config.toml turns it off)")
    a = ap.parse_args()
    from nes.explorer.demo import install_demo
    from nes.runs.store import Store
    from nes.runtime import cpu_model
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; {a.pairs} pairs of windows of {a.epochs} epoch(s); "
          f"postScriptGC={a.gc}")

    home = Path(tempfile.mkdtemp(prefix="nes_bench_live_"))
    os.environ["NES_HOME"] = str(home)
    store = Store(home)
    rows = run_job(store, install_demo(store), home, a)
    by = {s: {k: [r[k] for r in rows if r["state"] == s] for k in ("steps_s", "server_pct", "browser_pct")}
          for s in ("closed", "open")}
    med = {s: {k: statistics.median(v) for k, v in by[s].items()} for s in by}
    o, c = med["open"], med["closed"]
    lo, hi = ratio_interval(by["open"]["steps_s"], by["closed"]["steps_s"])
    mean_ratio = statistics.fmean(by["open"]["steps_s"]) / statistics.fmean(by["closed"]["steps_s"])
    print(f"server {o['server_pct']:.1f} % of a core with the page open ({c['server_pct']:.1f} % closed); browser "
          f"{o['browser_pct']:.1f} %; worker {o['steps_s']:.2f} vs {c['steps_s']:.2f} steps/s open vs closed (medians); "
          f"mean open / mean closed {mean_ratio:.3f}, 95 % bootstrap interval [{lo:.3f}, {hi:.3f}]")
    if any(r["status"] != "running" for r in rows):
        print("warning: the member was not training in every window; its steps/s there are void")
    print(f"RESULT server_core_pct_open={o['server_pct']:.1f} server_core_pct_closed={c['server_pct']:.1f} "
          f"browser_core_pct_open={o['browser_pct']:.1f} steps_ratio_open_vs_closed={mean_ratio:.3f} "
          f"steps_ratio_lo={lo:.3f} steps_ratio_hi={hi:.3f} post_script_gc={int(a.gc)}")


if __name__ == "__main__":
    main()
