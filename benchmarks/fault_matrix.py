"""Fault matrix: what each fault costs the job machinery, measured with real workers (smoke, digits).

Scenarios, each on one run store:
- SIGKILL of a worker in the middle of its second epoch of search, hypernet and retrain, then resume;
- SIGSTOP of a retrain worker, reaped as stale, resume, SIGCONT: once as it is (the reaper kills
  the frozen worker) and once with the kill disabled (a worker the reaper cannot kill: the old
  attempt wakes while the new one runs, and must stop without writing; exit code EXIT_STALE);
- SIGKILL during a checkpoint write (NES_TEST_WRITE_DELAY holds each write before its rename);
- the run folder deleted while its retrain job runs (the job must fail with a message);
- two pipelines on one store (`python -m nes run`, 2 members each) with both launchers SIGKILLed
  after their search started: the workers carry the pipelines on by themselves;
- a NaN written into one member's saved probabilities: `evaluate` must exit 2 naming the member and
  change nothing (the file is restored afterwards, so the artifacts are audited as they were);
- a refused rerun: `search --set limit=100` over the finished search exits 2 and leaves the run
  folder byte-identical;
- a frozen worker seen only by the CLI: SIGSTOP a retrain worker and poll `jobs list` from fresh
  processes (this process never reaps): it must be marked failed and killed, then `jobs resume`;
- two `run --run same --detach` started at one instant: one pipeline is queued (and runs to the
  end with one member), the other command is told the name is taken.

Table: scenario, jobs finished, artifacts that load (safetensors + JSON in the run folders, plus
the step's final artifacts that must exist), steps redone after the resume (steps done at the
fault, as the store last saw them, − steps in the last checkpoint), stray files left (atomic-write temp files; for a deleted
run, anything re-created in it). Last line:
RESULT scenarios=… ok=… lost_artifacts=… stray_files=…
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nes.runs.jobs as jobs  # noqa: E402
from nes.artifacts import ArtifactError, load_tensors, read_json  # noqa: E402
from nes.layout import RunDir  # noqa: E402
from nes.runs.fence import temp_files  # noqa: E402
from nes.runs.jobs import reap, resume, submit, wait  # noqa: E402
from nes.runs.store import Store  # noqa: E402
from nes.runs.worker import EXIT_STALE  # noqa: E402

EPOCHS = 4
SETS = {"epochs": str(EPOCHS), "log_every": "1"}
# each step's folder in the run and the artifacts it must have when done (its checkpoint included)
STEP = {"search": ("search", ["genotype.json", "checkpoint.safetensors"]),
        "hypernet": ("hypernet/edges", ["hypernet.safetensors", "checkpoint.safetensors"]),
        "retrain": ("members/{name}", ["weights.safetensors", "metrics.json", "checkpoint.safetensors"])}


def step_dir(run: Path, kind: str, name: str = "") -> Path:
    return run / STEP[kind][0].format(name=name)


@dataclass
class Row:
    scenario: str
    done: int
    jobs: int
    loaded: int
    artifacts: int
    redone: int | None
    stray: int
    ok: bool
    note: str = ""

    @property
    def lost(self) -> int:
        return self.artifacts - self.loaded


def until(pred, timeout: float = 600.0, poll: float = 0.1):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise TimeoutError("condition not reached")


def loads(p: Path) -> bool:
    try:
        load_tensors(p) if p.suffix == ".safetensors" else read_json(p)
        return True
    except ArtifactError:
        return False


def audit(folder: Path, required: list[str]) -> tuple[int, int, int]:
    """(artifacts that load, artifacts counted, stray temp files) of a folder; a required one that is
    missing counts as not loading."""
    files = [p for p in folder.rglob("*") if p.suffix in (".safetensors", ".json") and not p.name.startswith(".")]
    missing = [r for r in required if not (folder / r).exists()]
    return sum(map(loads, files)), len(files) + len(missing), len(temp_files(folder))


def checkpoint_steps(folder: Path) -> int:
    p = folder / "checkpoint.safetensors"
    return int(load_tensors(p)[1]["steps"]) if p.exists() else 0


def config_of(kind: str, name: str) -> dict:
    own = {"retrain": {"name": name}, "hypernet": {"regularizer": "edges"}}.get(kind, {})
    return {"preset": "smoke", "set": dict(SETS), **own}


def row_for(name: str, store: Store, ids: list[int], folder: Path, required: list[str], redone: int | None,
            extra_ok: bool = True, note: str = "") -> Row:
    done = sum(store.job(i).status == "done" for i in ids)
    loaded, total, stray = audit(folder, required)
    ok = extra_ok and done == len(ids) and loaded == total and stray == 0
    return Row(name, done, len(ids), loaded, total, redone, stray, ok, note)


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------
def kill_stage(store: Store, run: Path, kind: str, name: str = "k") -> Row:
    """SIGKILL the worker in the middle of its second epoch, reap, resume, wait."""
    j = submit(store, run.name, kind, config_of(kind, name))
    until(lambda: store.job(j).total > 0)
    per_epoch = store.job(j).total // EPOCHS
    until(lambda: store.job(j).step >= per_epoch + per_epoch // 2)
    at_kill = store.job(j).step
    os.kill(store.job(j).pid, signal.SIGKILL)
    until(lambda: bool(reap(store)) or store.job(j).status == "failed")
    redone = at_kill - checkpoint_steps(step_dir(run, kind, name))
    resume(store, j)
    wait(store, [j], poll=0.2)
    return row_for(f"SIGKILL {kind}", store, [j], step_dir(run, kind, name), STEP[kind][1], redone)


def sigstop(store: Store, run: Path, name: str, killable: bool) -> Row:
    """SIGSTOP a retrain worker, reap it as stale, resume, SIGCONT the old one."""
    saved_stale, saved_kill = jobs.STALE_SECONDS, jobs.kill_worker
    jobs.STALE_SECONDS = 3.0
    if not killable:
        jobs.kill_worker = lambda pid: None
    try:
        j = submit(store, run.name, "retrain", config_of("retrain", name))
        until(lambda: store.job(j).step > store.job(j).total // EPOCHS)
        old = next(p for p in jobs._children if p.pid == store.job(j).pid)
        os.kill(old.pid, signal.SIGSTOP)
        at_stop = store.job(j).step
        until(lambda: j in reap(store), timeout=120)
        redone = at_stop - checkpoint_steps(step_dir(run, "retrain", name))
        resume(store, j)
        until(lambda: store.job(j).step > 0 and store.job(j).pid not in (None, old.pid))
        if old.poll() is None:  # still there only when the reaper did not kill it
            os.kill(old.pid, signal.SIGCONT)
        code = old.wait(timeout=120)
    finally:
        jobs.STALE_SECONDS, jobs.kill_worker = saved_stale, saved_kill
    wait(store, [j], poll=0.2)
    want = -signal.SIGKILL if killable else EXIT_STALE
    how = "killed by the reaper" if killable else "woke, fenced"
    return row_for(f"SIGSTOP+resume+SIGCONT ({'kill' if killable else 'no kill'})", store, [j],
                   step_dir(run, "retrain", name), STEP["retrain"][1], redone, code == want,
                   f"old worker exit {code} ({how})")


def kill_in_write(store: Store, run: Path, name: str = "w") -> Row:
    """SIGKILL while a checkpoint waits before its rename; the resumed attempt clears the temp file."""
    os.environ["NES_TEST_WRITE_DELAY"] = "1.5"
    try:
        j = submit(store, run.name, "retrain", config_of("retrain", name))
        d = step_dir(run, "retrain", name)
        until(lambda: (d / "checkpoint.safetensors").exists() and list(d.glob(".checkpoint.safetensors.*.tmp")))
        at_kill = store.job(j).step
        os.kill(store.job(j).pid, signal.SIGKILL)
    finally:
        del os.environ["NES_TEST_WRITE_DELAY"]
    left = len(temp_files(d))
    until(lambda: bool(reap(store)) or store.job(j).status == "failed")
    redone = at_kill - checkpoint_steps(d)
    resume(store, j)
    wait(store, [j], poll=0.2)
    return row_for("SIGKILL in checkpoint write", store, [j], d, STEP["retrain"][1], redone, left > 0,
                   f"{left} temp file(s) after the kill, removed at resume")


def folder_deleted(store: Store, genotype: dict) -> Row:
    """Delete the run folder while its retrain job runs: the job must fail with a message."""
    j = submit(store, "doomed", "retrain", {**config_of("retrain", "m"), "genotype": genotype})
    until(lambda: store.job(j).step > 0)
    run = Path(store.job(j).run_id)
    until(lambda: shutil.rmtree(run, ignore_errors=True) or not run.exists(), timeout=30)
    job, = wait(store, [j], poll=0.2)
    stray = sum(1 for p in run.rglob("*") if p.is_file()) if run.exists() else 0
    ok = job.status == "failed" and "was deleted" in (job.error or "") and stray == 0
    note = (job.error or job.status).splitlines()[0][:60]
    return Row("run folder deleted mid-job", 0, 1, 0, 0, None, stray, ok, f"expected to fail: {note}")


def two_pipelines(store: Store, home: str) -> Row:
    """Two `nes run` launchers on one store, both SIGKILLed once their search runs."""
    env = {**os.environ, "NES_HOME": home, "NES_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)}
    launchers = [subprocess.Popen([sys.executable, "-m", "nes", "run", "--preset", "smoke", "--dataset", "digits",
                                   "--run", f"pipe{i}", "--members", "2"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for i in range(2)]
    runs = [Path(home) / f"pipe{i}" for i in range(2)]
    mine = lambda: [j for j in store.jobs() if Path(j.run_id) in runs]  # noqa: E731
    # both pipelines fully queued (search, hypernet, sample, 2 members, evaluate each), a search running
    until(lambda: len(mine()) == 12 and any(j.kind == "search" and j.status != "queued" for j in mine()))
    for p in launchers:
        p.kill()
        p.wait()
    ids = [j.id for j in mine()]
    # the workers launch what became ready by themselves; this process only watches (no launch_ready)
    until(lambda: all(store.job(i).status in ("done", "failed", "cancelled") for i in ids), timeout=600, poll=0.5)
    # pipeline members are named from their samples when they start: take the names from the run
    members = {r: RunDir(r).list_members() for r in runs}
    rows = [row_for("", store, [i for i in ids if store.job(i).run_id == str(r)], r,
                    ["ensemble.json", *(f"members/{n}/weights.safetensors" for n in members[r])], None,
                    extra_ok=len(members[r]) == 2) for r in runs]
    return Row("2 pipelines, launchers killed", sum(r.done for r in rows), len(ids), sum(r.loaded for r in rows),
               sum(r.artifacts for r in rows), None, sum(r.stray for r in rows), all(r.ok for r in rows),
               "no launcher left: workers chain the steps")


def nes_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m nes ARGS` from this checkout (NES_HOME from os.environ)."""
    e = {**os.environ, "NES_NO_PROGRESS": "1", "NES_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "nes", *args], capture_output=True, text=True, env=e, timeout=600)


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under a folder, by relative path: two equal digests are byte-identical trees."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def nan_member(src: Path, home: str) -> Row:
    """A NaN in one member's last saved probabilities (a copy of a finished pipeline run): `evaluate`
    exits 2 naming the member and writes nothing."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    run = Path(home) / "nan"
    shutil.copytree(src, run)
    if not RunDir(run).list_members():
        return Row("NaN member probabilities", 0, 0, 0, 0, None, 0, False, f"{src.name} has no member to spoil")
    name = RunDir(run).list_members()[0]
    probs = RunDir(run).member(name).probs_files()[-1][1]
    original = probs.read_bytes()
    tensors = load_file(probs)
    with safe_open(str(probs), framework="pt") as f:
        meta = f.metadata()
    tensors["test"] = tensors["test"].clone()
    tensors["test"][0, 0] = float("nan")
    save_file(tensors, probs, metadata=meta)
    before = tree_digest(run)
    r = nes_cli("evaluate", "--run", str(run))
    unchanged = tree_digest(run) == before
    probs.write_bytes(original)  # restored: the audit below sees the run as it was
    loaded, total, stray = audit(run, [])
    ok = r.returncode == 2 and name in r.stderr and "Traceback" not in r.stderr and unchanged
    note = f"evaluate exit {r.returncode}{'' if name in r.stderr else ', member not named'}" + \
        ("" if unchanged else ", run changed")
    return Row("NaN member probabilities", 0, 0, loaded, total, None, stray, ok, note)


def refused_rerun(run: Path) -> Row:
    """`search --set limit=100` over the run's finished search (another configuration): refused with
    exit 2 before anything is written, so the run folder is byte-identical."""
    before = tree_digest(run)
    sets = [x for k, v in {**SETS, "limit": "100"}.items() for x in ("--set", f"{k}={v}")]
    r = nes_cli("search", "--run", str(run), "--preset", "smoke", *sets)
    unchanged = tree_digest(run) == before
    loaded, total, stray = audit(run / "search", STEP["search"][1])
    ok = r.returncode == 2 and unchanged and "Traceback" not in r.stderr
    return Row("refused search rerun (limit=100)", 0, 0, loaded, total, None, stray, ok,
               f"search exit {r.returncode}, folder {'byte-identical' if unchanged else 'CHANGED'}")


def frozen_polled_by_cli(store: Store, run: Path, name: str = "f") -> Row:
    """SIGSTOP a retrain worker; only fresh `jobs list` processes look (every 2 s, NES_STALE_SECONDS=5):
    one of them must mark it failed and kill it; `jobs resume` from the CLI; wait."""
    j = submit(store, run.name, "retrain", config_of("retrain", name))
    until(lambda: store.job(j).step > store.job(j).total // EPOCHS)
    old = next(p for p in jobs._children if p.pid == store.job(j).pid)
    os.kill(old.pid, signal.SIGSTOP)
    at_stop, polls = store.job(j).step, 0

    def status() -> str:
        nonlocal polls
        polls += 1
        r = nes_cli("jobs", "list", "--json", env={"NES_STALE_SECONDS": "5"})
        if r.returncode != 0:
            return f"jobs list exit {r.returncode}"
        return next((row["status"] for row in json.loads(r.stdout or "[]") if row["id"] == j), "missing")

    try:
        seen = until(lambda: (s := status()) != "running" and s, timeout=180, poll=2.0)
    except TimeoutError:
        seen = "running"
    if old.poll() is None:  # not killed by the reaping CLI: wake it so that the fence is what stops it
        os.kill(old.pid, signal.SIGCONT)
    code = old.wait(timeout=120)
    redone = at_stop - checkpoint_steps(step_dir(run, "retrain", name))
    resumed = nes_cli("jobs", "resume", str(j)).returncode == 0
    wait(store, [j], poll=0.2)
    ok = seen == "failed" and code == -signal.SIGKILL and resumed
    return row_for("SIGSTOP, only `jobs list` polls", store, [j], step_dir(run, "retrain", name),
                   STEP["retrain"][1], redone, ok, f"{seen} after {polls} CLI polls, old worker exit {code}")


def same_name_runs(store: Store, home: str, n: int = 2) -> Row:
    """`n` `run --run same --detach` started at one instant: one wins, the others are told it is taken."""
    env = {**os.environ, "NES_HOME": home, "NES_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "nes", "run", "--preset", "smoke", "--dataset", "digits", "--run", "same",
           "--members", "1", "--detach"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    outs = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    run = Path(home) / "same"
    ids = [j.id for j in store.jobs() if Path(j.run_id) == run]
    until(lambda: all(store.job(i).status in ("done", "failed", "cancelled") for i in ids), timeout=600, poll=0.5)
    members = RunDir(run).list_members()
    codes = sorted(code for code, _ in outs)
    told = all("taken" in err and "locked" not in err for code, err in outs if code != 0)
    ok = codes == [0] + [2] * (n - 1) and told and len(ids) == 5 and len(members) == 1
    return row_for(f"{n} x run --run same at once", store, ids, run,
                   ["ensemble.json", *(f"members/{m}/weights.safetensors" for m in members)], None, ok,
                   f"exits {codes}, {len(ids)} jobs, {len(members)} member(s)")


# ---------------------------------------------------------------------------------------------
def print_table(rows: list[Row]) -> None:
    print(f"{'scenario':<36}{'jobs done':>10}{'artifacts load':>16}{'steps redone':>14}{'stray':>7}  ok  note")
    for r in rows:
        redone = "-" if r.redone is None else str(r.redone)
        print(f"{r.scenario:<36}{f'{r.done}/{r.jobs}':>10}{f'{r.loaded}/{r.artifacts}':>16}{redone:>14}"
              f"{r.stray:>7}  {'yes' if r.ok else 'NO ':<3} {r.note}")
    print(f"RESULT scenarios={len(rows)} ok={sum(r.ok for r in rows)} lost_artifacts={sum(r.lost for r in rows)} "
          f"stray_files={sum(r.stray for r in rows)}")


def main() -> None:
    t0 = time.time()
    with tempfile.TemporaryDirectory() as home:
        os.environ["NES_HOME"] = home
        os.environ.setdefault("NES_MAX_WORKERS", "2")
        os.environ["NES_NO_PROGRESS"] = "1"
        store = Store()
        run = Path(home) / "r"
        rows = [kill_stage(store, run, kind) for kind in ("search", "hypernet", "retrain")]
        rows.append(sigstop(store, run, "z1", killable=True))
        rows.append(sigstop(store, run, "z2", killable=False))
        rows.append(kill_in_write(store, run))
        rows.append(refused_rerun(run))
        rows.append(frozen_polled_by_cli(store, run))
        rows.append(folder_deleted(store, json.loads((run / "search" / "genotype.json").read_text())["genotype"]))
        rows.append(two_pipelines(store, home))
        rows.append(nan_member(Path(home) / "pipe0", home))
        rows.append(same_name_runs(store, home))
        print_table(rows)
        print(f"({time.time() - t0:.0f} s, NES_MAX_WORKERS={os.environ['NES_MAX_WORKERS']})", file=sys.stderr)


if __name__ == "__main__":
    main()
