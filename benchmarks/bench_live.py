"""What one open live Ensemble page costs a member training beside it, end to end.

A real `streamlit run explorer_app.py` server, a real worker retraining a `quick` member of the
bundled demo (full Fashion-MNIST, the job system's own worker process), and a real headless
Chromium that opens the Ensemble page (its fragment polls every `POLL_SECONDS` of pages/_widgets.py
while the member trains) or closes it, in alternating windows: closed, open, closed, open; first
with Streamlit's garbage collection after every script run (its default), then without (this
repository's .streamlit/config.toml), the same member training throughout. Per window: the
worker's training steps per second (from the store's progress rows), the server's CPU (from
/proc), and the browser's.

    python benchmarks/bench_live.py [--window 25]

Last line: RESULT server_core_pct_open=… server_core_pct_open_gc=… server_core_pct_closed=…
steps_ratio_open_vs_closed=… browser_core_pct_open=… (without the post-run GC; targets: server ≤ 5 % of a
core with the page open, steps ≥ 0.95× closed).
"""
from __future__ import annotations

import argparse
import os
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


def window(store, job_id: int, server_pid: int, seconds: float) -> dict[str, float]:
    """The worker's steps/s and the server's and browser's CPU share over one window."""
    j0, c0, b0, t0 = store.job(job_id), cpu_seconds([server_pid]), cpu_seconds(chromium_pids()), time.time()
    time.sleep(seconds)
    j1, c1, b1, t1 = store.job(job_id), cpu_seconds([server_pid]), cpu_seconds(chromium_pids()), time.time()
    return {"steps_s": (j1.step - j0.step) / (t1 - t0), "server_pct": 100 * (c1 - c0) / (t1 - t0),
            "browser_pct": 100 * max(0.0, b1 - b0) / (t1 - t0), "status": j1.status}


def measure(browser, store, job: int, home: Path, gc: bool, seconds: float) -> list[dict]:
    """A server with Streamlit's post-run garbage collection on or off, and its four windows."""
    server, url = start_server(home, gc)
    rows = []
    try:
        for i, state in enumerate(("closed", "open", "closed", "open")):
            if state == "open":
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url + "/ensemble", wait_until="domcontentloaded")
                page.wait_for_selector(".js-plotly-plot", timeout=60_000)
            row = {"state": state, "gc": gc, **window(store, job, server.pid, seconds)}
            if state == "open":
                page.close()
            rows.append(row)
            print(f"postScriptGC={gc} window {i + 1} ({state}): worker {row['steps_s']:.2f} steps/s, server "
                  f"{row['server_pct']:.1f} % of a core, browser {row['browser_pct']:.1f} %, job {row['status']}", flush=True)
    finally:
        server.terminate()
        server.wait(30)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=25.0, help="seconds per window")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from nes.runtime import cpu_model
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; window {a.window:.0f} s")

    from nes.explorer.demo import install_demo
    from nes.runs.jobs import cancel, submit, wait
    from nes.runs.store import Store

    home = Path(tempfile.mkdtemp(prefix="nes_bench_live_"))
    os.environ["NES_HOME"] = str(home)
    store = Store(home)
    run = install_demo(store)
    # every epoch at 28 px (a steady step rate from window to window), and more epochs than the
    # windows can see on a fast CPU: the job is cancelled once they are measured
    job = submit(store, run, "retrain", {"preset": "quick", "name": "bench_live", "seed": 7,
                                         "set": {"epochs": "40", "epoch_sizes": "", "log_every": "5"}})
    rows = []
    try:
        while store.job(job).step < 40:  # data loaded, steps under way
            time.sleep(1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            for gc in (True, False):
                rows += measure(browser, store, job, home, gc, a.window)
            browser.close()
    finally:
        if store.job(job).status in ("queued", "running"):
            cancel(store, job)
        wait(store, [job], poll=0.5)  # no worker outlives the benchmark
    med = {(gc, s): {k: statistics.median(r[k] for r in rows if r["state"] == s and r["gc"] == gc)
                     for k in ("steps_s", "server_pct", "browser_pct")} for gc in (True, False) for s in ("closed", "open")}
    for gc in (True, False):
        o, c = med[(gc, "open")], med[(gc, "closed")]
        print(f"postScriptGC={gc}: server {o['server_pct']:.1f} % of a core with the page open ({c['server_pct']:.1f} % "
              f"closed); worker {o['steps_s']:.2f} vs {c['steps_s']:.2f} steps/s open vs closed; browser {o['browser_pct']:.1f} %")
    if any(r["status"] != "running" for r in rows):
        print("warning: the member was not training in every window; its steps/s there are void")
    o, c = med[(False, "open")], med[(False, "closed")]
    print(f"RESULT server_core_pct_open={o['server_pct']:.1f} server_core_pct_open_gc={med[(True, 'open')]['server_pct']:.1f} "
          f"server_core_pct_closed={c['server_pct']:.1f} steps_ratio_open_vs_closed={o['steps_s'] / c['steps_s']:.3f} "
          f"browser_core_pct_open={o['browser_pct']:.1f}")

if __name__ == "__main__":
    main()
