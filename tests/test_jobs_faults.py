"""Faults of the job machinery with real parts (real store, real worker processes, digits / smoke):
fencing of stale attempts, killed frozen workers, a run folder deleted mid-job, bad pipeline
settings, stale temp files, zombie workers, a damaged database and damaged rows, frozen workers
seen only by CLI calls, two runs of one name at one instant."""
import json
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest

import nes.runs.jobs as jobs
from nes.artifacts import load_tensors, read_json, set_write_guard, write_json
from nes.runs.fence import Attempt, RunFolderGone, temp_files
from nes.runs.jobs import cancel, reap, resume, submit, wait
from nes.runs.store import StaleAttempt, Store
from nes.runs.worker import EXIT_STALE
from helpers import nes, retrain_job as _retrain, wait_until, why


def child(pid: int):
    """The Popen of a worker this test process started."""
    return next(p for p in jobs._children if p.pid == pid)


def freeze(store: Store, job_id: int, monkeypatch) -> tuple[int, object]:
    """SIGSTOP job's worker once it has made progress and wait until reap marks it failed."""
    monkeypatch.setattr(jobs, "STALE_SECONDS", 3.0)
    wait_until(lambda: store.job(job_id).step > 0)
    pid = store.job(job_id).pid
    proc = child(pid)
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: job_id in reap(store), timeout=120)
    assert "stopped answering" in store.job(job_id).error
    return pid, proc


def test_reaped_frozen_worker_is_killed(searched, monkeypatch):
    store = searched
    j = _retrain(store, "killed", 40)
    pid, proc = freeze(store, j, monkeypatch)
    assert proc.wait(timeout=60) == -signal.SIGKILL  # killed although stopped


def test_stale_attempt_writes_nothing(searched, monkeypatch):
    """A frozen worker that could not be killed (another host, no permission) wakes after its job was
    started again: it stops at its next write; the new attempt's outcome and artifacts stand."""
    store = searched
    monkeypatch.setattr(jobs, "kill_worker", lambda pid: None)
    j = _retrain(store, "twice", 8)
    old_pid, old = freeze(store, j, monkeypatch)
    try:
        resume(store, j)
        wait_until(lambda: store.job(j).attempts == 2 and store.job(j).pid not in (None, old_pid)
                   and store.job(j).heartbeat and store.job(j).step > 0)
    finally:
        os.kill(old_pid, signal.SIGCONT)
    assert old.wait(timeout=120) == EXIT_STALE
    job, = wait(store, [j], poll=0.3)
    assert job.status == "done", f"the restarted job is {job.status}: {why(job)}"
    assert job.attempts == 2, f"the job took {job.attempts} attempts, expected 2"
    d = Path(job.run_id) / "members" / "twice"
    for f in d.rglob("*.safetensors"):
        load_tensors(f)
    assert len(read_json(d / "history.json")) == 8
    log = (Path(job.run_id) / "logs" / f"job_{j}.log").read_text()
    assert "attempt 1 is no longer current" in log
    assert not temp_files(Path(job.run_id))


def test_write_guard_refuses_stale_attempts_and_vanished_run_folders(home):
    store = Store()
    run = Path(store.register_run("g"))
    j = store.add_job(str(run), "evaluate", {})
    att = Attempt(store, j, store.start_attempt(j), run)
    set_write_guard(att.check_write)
    try:
        write_json(run / "a.json", {"ok": 1})
        store.update_job(j, status="queued")
        assert store.start_attempt(j) == 2  # the job was started again elsewhere
        with pytest.raises(StaleAttempt, match="attempt 1 is no longer current"):
            write_json(run / "b.json", {"stale": 1})
        assert not (run / "b.json").exists(), "a stale attempt wrote b.json"
        assert not temp_files(run), f"a stale attempt left temp files {temp_files(run)}"
        with pytest.raises(StaleAttempt):
            att.report(1, 2, {})
        assert not att.record(status="done")
        assert store.job(j).status == "running"
        new = Attempt(store, j, 2, run)
        shutil.rmtree(run)
        set_write_guard(new.check_write)
        with pytest.raises(RunFolderGone, match="was deleted"):
            write_json(run / "members" / "m" / "x.json", {})
        assert not run.exists()  # nothing re-created the folder
    finally:
        set_write_guard(None)


def rmtree_retry(path: Path) -> None:
    """Delete a folder a worker may be writing into (files can appear while it is deleted)."""
    for _ in range(50):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.1)
    raise AssertionError(f"could not delete {path}")


def test_run_folder_deleted_mid_job_fails(searched):
    store = searched
    j = _retrain(store, "gone", 40)
    wait_until(lambda: store.job(j).step > 0)
    run = Path(store.job(j).run_id)
    rmtree_retry(run)
    job, = wait(store, [j], poll=0.3)
    assert job.status == "failed", f"the job whose run folder was deleted is {job.status}: {why(job)}"
    assert "was deleted" in job.error, f"the error does not say the run folder was deleted: {why(job)}"
    assert not (run / "members" / "gone" / "weights.safetensors").exists()


def test_run_with_a_bad_setting_queues_nothing(home):
    for bad, says in (("bogus=1", "unknown setting 'bogus'"), ("epochs=many", "epochs=many: expected int")):
        r = nes("run", "--preset", "smoke", "--run", "bad", "--members", "2", "--set", bad, "--detach",
                env={"NES_HOME": str(home)})
        assert r.returncode == 2, f"--set {bad}: exit {r.returncode}, expected 2:\n{r.stderr}"
        assert says in r.stderr, f"--set {bad}: the error does not say {says!r}:\n{r.stderr}"
        assert "nothing was queued" in r.stderr, f"--set {bad}: the error does not say nothing was queued:\n{r.stderr}"
        assert "Traceback" not in r.stderr
    store = Store()
    assert store.jobs() == [], f"a refused run queued jobs {[j.id for j in store.jobs()]}"
    assert store.runs() == [], f"a refused run registered runs {store.runs()}"
    assert not (home / "bad").exists(), "a refused run made its folder"


def test_resume_removes_stale_temp_files(searched, monkeypatch):
    store = searched
    monkeypatch.setenv("NES_TEST_WRITE_DELAY", "1.5")  # each artifact write waits before its rename
    j = _retrain(store, "tmp", 3)
    d = Path(store.job(j).run_id) / "members" / "tmp"
    wait_until(lambda: (d / "checkpoint.safetensors").exists(), timeout=300)
    wait_until(lambda: list(d.glob(".checkpoint.safetensors.*.tmp")), timeout=300)
    os.kill(store.job(j).pid, signal.SIGKILL)
    monkeypatch.delenv("NES_TEST_WRITE_DELAY")
    left = temp_files(d)
    assert left  # the kill left a half-made checkpoint
    wait_until(lambda: reap(store) or store.job(j).status == "failed")
    live = d / ".history.json.abcd1234.tmp"  # as if a live writer had just made it: newer than any start
    live.write_bytes(b"")
    os.utime(live, (time.time() + 3600, time.time() + 3600))
    resume(store, j)
    job, = wait(store, [j], poll=0.3)
    assert job.status == "done", why(job)
    assert temp_files(d) == [live], \
        f"temp files after resume {temp_files(d)}, expected only the live writer's {live.name}"
    assert not any(p.exists() for p in left), \
        f"resume left the killed attempt's temp files {[p.name for p in left if p.exists()]}"
    live.unlink()


def zombies(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            out.append(pid)
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_app_path_reaps_finished_workers(home):
    store = Store()
    ids = [submit(store, "z", "evaluate", {}) for _ in range(2)]  # fail fast: no members
    pids = [p.pid for p in jobs._children]
    assert len(pids) >= 2
    wait_until(lambda: all(store.job(i).status == "failed" for i in ids))
    wait_until(lambda: len(zombies(pids)) == len(pids))  # ended, and nobody waited for them yet
    reap(store)  # what the app's refresh does
    assert zombies(pids) == []


def corrupt_page(db: Path, table: str) -> None:
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()[0]
    con.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(b"\xde\xad\xbe\xef" * (page // 4))


def test_damaged_rows_and_pages(home):
    store = Store()
    run = store.register_run("d")
    good, bad = store.add_job(run, "evaluate", {}), store.add_job(run, "retrain", {"name": "m"})
    store.close()
    con = sqlite3.connect(home / "nes.db")
    con.execute("UPDATE jobs SET config='{oops', result='[1,' WHERE id=?", (bad,))
    con.commit()
    con.close()
    env = {"NES_HOME": str(home)}
    r = nes("jobs", "list", env=env)
    assert r.returncode == 0, r.stderr
    assert f"job {bad}: damaged row: config is not valid JSON" in r.stdout, \
        f"jobs list does not name job {bad}'s damaged config:\n{r.stdout}"
    assert "result is not valid JSON" in r.stdout, f"jobs list does not name job {bad}'s damaged result:\n{r.stdout}"
    rows = json.loads(nes("jobs", "list", "--json", env=env).stdout)
    assert [row["id"] for row in rows] == [good, bad], \
        f"jobs list --json rows {[row['id'] for row in rows]}, expected {[good, bad]}"
    assert rows[0]["damaged"] is None, f"the good job {good} is marked damaged: {rows[0]['damaged']!r}"
    assert rows[1]["damaged"], f"the damaged job {bad} is not marked damaged"
    corrupt_page(home / "nes.db", "jobs")
    r = nes("jobs", "list", env=env)
    assert r.returncode == 2, f"jobs list on a damaged page: exit {r.returncode}, expected 2:\n{r.stderr}"
    assert str(home / "nes.db") in r.stderr, f"the error does not name the database file:\n{r.stderr}"
    assert "damaged" in r.stderr, f"the error does not say the database is damaged:\n{r.stderr}"
    assert "Traceback" not in r.stderr


def cli_status(home: Path, job_id: int, stale: float) -> dict:
    """Job `job_id` as `jobs list --json` shows it, read by a fresh CLI process (which reaps)."""
    r = nes("jobs", "list", "--json", env={"NES_HOME": str(home), "NES_STALE_SECONDS": str(stale)})
    assert r.returncode == 0, f"jobs list: exit {r.returncode}:\n{r.stderr}"
    return next(row for row in json.loads(r.stdout) if row["id"] == job_id)


def stop_worker(store: Store, job_id: int) -> tuple[int, object]:
    """SIGSTOP job's worker once it has made progress; its heartbeat thread stops with it."""
    wait_until(lambda: store.job(job_id).step > 0)
    pid = store.job(job_id).pid
    os.kill(pid, signal.SIGSTOP)
    return pid, child(pid)


def test_cli_polling_reaps_a_frozen_worker_then_resumes_it(searched, home):
    """Only short-lived CLI processes look (no watcher lives long enough to see the heartbeat stay
    unchanged): each `jobs list` must judge the staleness from the store alone."""
    store = searched
    j = _retrain(store, "frozen", 40)
    pid, proc = stop_worker(store, j)
    try:
        row = wait_until(lambda: (r := cli_status(home, j, 5.0))["status"] != "running" and r, timeout=120, poll=1.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert row["status"] == "failed", f"the frozen job is {row['status']}, expected failed: {row['error']}"
    assert "stopped answering" in row["error"], f"the error does not say the worker stopped answering: {row['error']}"
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the reaped frozen worker was not killed"
    r = nes("jobs", "resume", str(j), env={"NES_HOME": str(home)})
    assert r.returncode == 0, f"jobs resume of the reaped job: exit {r.returncode}:\n{r.stderr}"
    wait_until(lambda: store.job(j).attempts == 2 and store.job(j).step > 0)
    cancel(store, j)
    job, = wait(store, [j], poll=0.3)
    assert job.status == "cancelled", f"the resumed job ended {job.status}, expected cancelled: {why(job)}"


def test_cli_cancel_of_a_frozen_worker_ends_it(searched, home):
    store = searched
    j = _retrain(store, "stuck", 40)
    pid, proc = stop_worker(store, j)
    try:
        wait_until(lambda: time.time() - store.job(j).heartbeat > 6.0, timeout=120)
        r = nes("jobs", "cancel", str(j), env={"NES_HOME": str(home), "NES_STALE_SECONDS": "5"})
    finally:
        os.kill(pid, signal.SIGCONT)
    assert r.returncode == 0, f"jobs cancel of a frozen worker: exit {r.returncode}:\n{r.stderr}"
    assert store.job(j).status != "running", f"jobs cancel left the frozen job running: {r.stdout}"
    assert "stopped answering" in r.stdout, f"jobs cancel does not say the worker stopped answering:\n{r.stdout}"
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the frozen worker was not killed"


def _run_same(home: str, barrier, out) -> None:
    """One `python -m nes run --run same` released at the same instant as the others."""
    import contextlib
    import io

    os.environ.update(NES_HOME=home, NES_NO_PROGRESS="1", NES_THREADS="1")
    from nes.cli.main import main

    err = io.StringIO()
    barrier.wait()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", "--run", "same", "--preset", "smoke", "--members", "1", "--detach"])
    out.put((code, err.getvalue()))


def test_same_run_name_at_one_instant_is_claimed_once(home):
    ctx = mp.get_context("spawn")
    n = 3
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_run_same, args=(str(home), barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    store = Store()
    ids = [j.id for j in store.jobs()]
    try:
        codes = sorted(code for code, _ in results)
        assert codes == [0] + [2] * (n - 1), f"exit codes {codes}, expected one 0 and the rest 2: {results}"
        for code, err in results:
            if code == 2:
                assert "taken" in err, f"a refused run does not say the name is taken:\n{err}"
                assert "locked" not in err, f"a refused run blames a locked database:\n{err}"
        kinds = sorted(j.kind for j in store.jobs())
        assert kinds == sorted(["search", "hypernet", "sample", "retrain", "evaluate"]), \
            f"the store holds jobs {kinds}, expected one pipeline of one member"
    finally:
        for i in ids:
            if store.job(i).status in ("queued", "running"):
                cancel(store, i)
        wait(store, ids, poll=0.3)


def test_a_row_with_pid_minus_one_is_reaped(home):
    store = Store()
    run = store.register_run("p")
    j = store.add_job(run, "retrain", {"name": "m"})
    store.start_attempt(j, host=jobs.this_host(), pid=-1, started=time.time(), heartbeat=time.time())
    r = nes("jobs", "list", env={"NES_HOME": str(home)})
    assert r.returncode == 0, f"jobs list: exit {r.returncode}:\n{r.stderr}"
    job = store.job(j)
    assert job.status == "failed", f"the job of pid -1 is {job.status}, expected failed"
    assert "pid -1" in job.error, f"the error does not name the bad pid: {job.error!r}"


def test_an_unknown_job_kind_fails_with_a_message(home):
    store = Store()
    run = store.register_run("k")
    queued, direct = store.add_job(run, "evaluate", {}), store.add_job(run, "evaluate", {})
    con = sqlite3.connect(home / "nes.db")
    con.execute("UPDATE jobs SET kind='bogus'")
    con.execute("UPDATE jobs SET status='cancelled' WHERE id=?", (direct,))  # started by hand below
    con.commit()
    con.close()
    jobs.launch_ready(store)
    r = nes("worker", str(direct), env={"NES_HOME": str(home)})
    for j in (queued, direct):
        job = wait_until(lambda: store.job(j).status not in ("queued", "running") and store.job(j))
        assert job.status == "failed", f"job {j} of kind 'bogus' is {job.status}, expected failed"
        assert "KeyError" not in job.error, f"job {j} of kind 'bogus' fails as a KeyError: {job.error!r}"
        assert "'bogus'" in job.error, f"job {j}'s error does not name the kind 'bogus': {job.error!r}"
    assert "Traceback" not in r.stderr, f"the worker of an unknown kind printed a traceback:\n{r.stderr}"


def test_a_guarded_write_never_recreates_its_deleted_run_folder(tmp_path):
    """The guard's check and the write's mkdir are two steps: a run folder deleted between them must
    stay deleted (it was re-created, and with a reused inode the deletion went unnoticed)."""
    from nes.artifacts import atomic_write_bytes

    run = tmp_path / "run"
    (run / "members").mkdir(parents=True)
    set_write_guard(lambda path: None, run)  # a guard that passes: the folder vanishes after it
    try:
        atomic_write_bytes(run / "members" / "m" / "probs" / "x.bin", b"ok")
        assert (run / "members" / "m" / "probs" / "x.bin").read_bytes() == b"ok", "a write below the root failed"
        shutil.rmtree(run)
        with pytest.raises(FileNotFoundError):
            atomic_write_bytes(run / "members" / "m" / "probs" / "y.bin", b"late")
        assert not run.exists(), "a guarded write re-created the deleted run folder"
        atomic_write_bytes(tmp_path / "elsewhere" / "z.bin", b"free")  # outside the root: parents as usual
    finally:
        set_write_guard(None)
