"""Run store and background jobs with real worker processes (digits / smoke)."""
import json
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nes.artifacts import load_tensors, read_json
from nes.runs.jobs import cancel, reap, resume, submit, wait
from nes.runs.store import SCHEMA_VERSION, Store, StoreError
from helpers import SMOKE, nes, retrain_job as _retrain, wait_until, why

ROOT = Path(__file__).resolve().parents[1]


def test_submit_runs_to_done_with_metrics(home):
    store = Store()
    j = submit(store, "r1", "search", SMOKE)
    job, = wait(store, [j], poll=0.3)
    assert job.status == "done", why(job)
    assert job.result["steps"] > 0, f"the search took {job.result['steps']} steps"
    assert job.progress == 1.0, f"a done job at progress {job.progress}"
    names = {m["name"] for m in store.metrics(j)}
    assert {"train_loss", "train_acc", "val_acc"} <= names
    assert (home / "r1" / "search" / "genotype.json").exists()
    # jobs list --json from the CLI sees it
    r = nes("jobs", "list", "--run", "r1", "--json", env={"NES_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows[0]["id"] == j, f"jobs list shows job {rows[0]['id']} first, expected {j}"
    assert rows[0]["kind"] == "search", f"jobs list shows kind {rows[0]['kind']!r}"
    assert rows[0]["status"] == "done", f"jobs list shows status {rows[0]['status']!r}"
    assert {"id", "kind", "status", "pid", "progress"} <= set(rows[0])


def test_cancel_running_and_queued_jobs(searched):
    store = searched
    j = _retrain(store, "c", 40)
    wait_until(lambda: store.job(j).step > 0)
    # a wall-clock step (VM resume, NTP) makes the heartbeat stamp look an hour old: the worker is
    # alive and still beating, so it is not reaped
    store.update_job(j, heartbeat=time.time() - 3600)
    assert reap(store) == [], "a live worker with an hour-old heartbeat stamp was reaped"
    assert store.job(j).status == "running", f"the job is {store.job(j).status}, expected running"
    assert cancel(store, j) == "cancel requested"
    job, = wait(store, [j], poll=0.3)
    assert job.status == "cancelled", f"the job ended {job.status}, expected cancelled: {why(job)}"
    assert job.step < job.total, f"the cancelled job ran all {job.total} steps"
    q = submit(store, "base", "retrain", {"preset": "smoke", "name": "q"}, deps=[j], launch=False)
    assert cancel(store, q) == "cancelled"
    with pytest.raises(StoreError, match="already cancelled"):
        cancel(store, q)


def test_idle_cores_are_lent_and_taken_back(searched):
    from nes.layout import RunDir
    from nes.runtime import available_cores

    total = available_cores()
    if total < 2:
        pytest.skip("needs 2 cores to share")
    store = searched
    log = lambda j: RunDir(store.job(j).run_id).job_log(j).read_text()
    a = _retrain(store, "a", 400)  # alone: it gets every core
    wait_until(lambda: store.job(a).step > 0)
    assert store.job(a).cores == total
    b = _retrain(store, "b", 400)  # b has to wait for cores: a gives back all but its share
    wait_until(lambda: store.job(b).step > 0)
    ja, jb = store.job(a), store.job(b)
    assert ja.cores >= 1, f"job a holds {ja.cores} cores"
    assert jb.cores >= 1, f"job b holds {jb.cores} cores"
    assert ja.cores + jb.cores == total, f"a and b hold {ja.cores} + {jb.cores} cores of {total}"
    wait_until(lambda: f"{total} -> {ja.cores} threads" in log(a))  # the worker followed its grant
    assert cancel(store, b) == "cancel requested"
    assert wait(store, [b], poll=0.3)[0].status == "cancelled"
    # b's worker, on exit, lends the cores it freed to a: nothing else waits for them
    wait_until(lambda: store.job(a).cores == total)
    wait_until(lambda: f"{ja.cores} -> {total} threads" in log(a))
    cancel(store, a)
    assert wait(store, [a], poll=0.3)[0].status == "cancelled"


def test_sigkill_mid_epoch_then_resume(searched, monkeypatch):
    store = searched
    # a smoke epoch takes a fraction of a second: slowed artifact writes keep the job from finishing
    # between the poll that sees the second epoch and the kill
    monkeypatch.setenv("NES_TEST_WRITE_DELAY", "0.5")
    j = _retrain(store, "k", 4)
    ckpt = Path(store.job(j).run_id) / "members" / "k" / "checkpoint.safetensors"
    # past the first checkpoint, inside the second epoch
    wait_until(lambda: ckpt.exists() and store.job(j).step > store.job(j).total // 4)
    pid = store.job(j).pid
    os.kill(pid, signal.SIGKILL)
    monkeypatch.delenv("NES_TEST_WRITE_DELAY")
    wait_until(lambda: reap(store) or store.job(j).status == "failed")
    job = store.job(j)
    assert job.status == "failed", f"the killed job is {job.status}, expected failed"
    assert "worker died" in job.error, f"the error does not say the worker died: {job.error!r}"
    resume(store, j)
    job, = wait(store, [j], poll=0.3)
    assert job.status == "done", why(job)
    d = ckpt.parent
    for f in d.rglob("*.safetensors"):
        load_tensors(f)  # every artifact loads: none half written
    assert len(read_json(d / "history.json")) == 4
    assert len(list((d / "probs").glob("epoch_*.safetensors"))) == 4


def test_sigkill_during_checkpoint_write_keeps_previous(searched, monkeypatch):
    store = searched
    monkeypatch.setenv("NES_TEST_WRITE_DELAY", "1.5")  # each artifact write waits before its rename
    j = _retrain(store, "w", 3)
    d = Path(store.job(j).run_id) / "members" / "w"
    ckpt = d / "checkpoint.safetensors"
    wait_until(lambda: ckpt.exists(), timeout=300)
    first = load_tensors(ckpt)[1]["epoch"]
    wait_until(lambda: list(d.glob(".checkpoint.safetensors.*.tmp")), timeout=300)  # the next one is being written
    os.kill(store.job(j).pid, signal.SIGKILL)
    meta = load_tensors(ckpt)[1]  # the previous checkpoint is intact
    assert meta["epoch"] == first
    monkeypatch.delenv("NES_TEST_WRITE_DELAY")
    wait_until(lambda: reap(store) or store.job(j).status == "failed")
    resume(store, j)
    job, = wait(store, [j], poll=0.3)
    assert job.status == "done", why(job)
    assert load_tensors(ckpt)[1]["epoch"] == 2


def test_frozen_worker_is_reaped(searched, monkeypatch):
    import nes.runs.jobs

    store = searched
    monkeypatch.setattr(nes.runs.jobs, "STALE_SECONDS", 3.0)
    j = _retrain(store, "z", 40)
    wait_until(lambda: store.job(j).step > 0)
    pid = store.job(j).pid
    os.kill(pid, signal.SIGSTOP)  # alive, but its heartbeat thread stops too
    try:
        wait_until(lambda: reap(store), timeout=60)
        job = store.job(j)
        assert job.status == "failed", f"the frozen job is {job.status}, expected failed: {job.error!r}"
        assert "stopped answering" in job.error, f"the error does not say the worker stopped answering: {job.error!r}"
    finally:
        os.kill(pid, signal.SIGKILL)


def _hammer(home: str, job_id: int, n: int) -> None:
    s = Store(home)
    for i in range(n):
        s.report(job_id, i, n, {f"m{k}": float(i) for k in range(5)})


def test_two_writers_lose_no_rows(home):
    store = Store()
    run = store.register_run("w")
    a, b = store.add_job(run, "evaluate", {}), store.add_job(run, "evaluate", {})
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(home), j, 300)) for j in (a, b)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    assert len(store.metrics(a)) == len(store.metrics(b)) == 1500


def test_bad_input_messages(home, tmp_path):
    store = Store()
    with pytest.raises(StoreError, match="unknown job kind 'train'"):
        submit(store, "x", "train", {})
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.get_run("nope")
    with pytest.raises(StoreError, match="no job 99"):
        store.job(99)
    r = nes("jobs", "list", "--run", "nope", env={"NES_HOME": str(home)})
    assert r.returncode == 2, f"jobs list --run nope: exit {r.returncode}, expected 2:\n{r.stderr}"
    assert "no run 'nope'" in r.stderr, f"jobs list --run nope does not say there is no such run:\n{r.stderr}"
    assert "Traceback" not in r.stderr, f"jobs list --run nope: a traceback instead of a message:\n{r.stderr}"
    r = nes("jobs", "resume", "99", env={"NES_HOME": str(home)})
    assert r.returncode == 2, f"jobs resume 99: exit {r.returncode}, expected 2:\n{r.stderr}"
    assert "no job 99" in r.stderr, f"jobs resume 99 does not say there is no such job:\n{r.stderr}"
    # a run folder with missing artifacts: the job fails with a message, other runs are untouched
    ok = submit(store, "good", "search", SMOKE)
    bad = submit(store, "broken", "hypernet", {"preset": "smoke"})
    jobs = wait(store, [ok, bad], poll=0.3)
    assert jobs[0].status == "done", why(jobs[0])
    assert jobs[1].status == "failed", f"a hypernet job without a search is {jobs[1].status}, expected failed"
    assert "no finished search" in jobs[1].error, \
        f"the error does not say there is no finished search: {jobs[1].error!r}"
    dependent = submit(store, "broken", "retrain", {"name": "m", "sample_index": 0}, deps=[bad])
    second = submit(store, "broken", "evaluate", {}, deps=[dependent])
    assert [j.status for j in wait(store, [dependent, second], poll=0.3)] == ["failed", "failed"]
    assert "dependency" in store.job(dependent).error, \
        f"the dependent job's error does not name its dependency: {store.job(dependent).error!r}"
    assert "dependency" in store.job(second).error, \
        f"the second dependent job's error does not name its dependency: {store.job(second).error!r}"
    resume(store, bad, launch=False)  # the whole chain waits again
    assert [store.job(i).status for i in (bad, dependent, second)] == ["queued"] * 3
    assert Path(store.get_run("good"), "search", "genotype.json").exists()  # the other run is untouched


def test_corrupt_foreign_and_newer_databases(tmp_path):
    corrupt = tmp_path / "c"
    corrupt.mkdir()
    (corrupt / "nes.db").write_bytes(b"\x00garbage" * 100)
    before = (corrupt / "nes.db").read_bytes()
    with pytest.raises(StoreError, match="not a usable NES database"):
        Store(corrupt)
    assert (corrupt / "nes.db").read_bytes() == before
    foreign = _foreign_database(tmp_path / "f")
    with pytest.raises(StoreError, match="another program"):
        Store(foreign)
    newer = tmp_path / "n"
    Store(newer).close()
    con = sqlite3.connect(newer / "nes.db")
    con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store(newer)
    r = nes("jobs", "list", env={"NES_HOME": str(corrupt)})
    assert r.returncode == 2, f"jobs list on a corrupt database: exit {r.returncode}, expected 2:\n{r.stderr}"
    assert "not a usable NES database" in r.stderr, f"jobs list on a corrupt database does not say so:\n{r.stderr}"


def test_ray_executor_retrains_two_members(searched):
    ray = pytest.importorskip("ray")
    from nes.runs.ray_executor import run_ray_jobs

    store = searched
    ids = [submit(store, "base", "retrain", {"preset": "smoke", "name": f"ray{i}", "seed": i}, executor="ray",
                  launch=False) for i in range(2)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "NES_NO_PROGRESS": "1"}})
    try:
        run_ray_jobs(store, ids)
    finally:
        ray.shutdown()
    for i, j in enumerate(ids):
        job = store.job(j)
        assert job.status == "done", why(job)
        assert job.result["name"] == f"ray{i}", f"ray job {j} trained member {job.result['name']!r}, expected ray{i}"
        assert store.metrics(j), f"ray job {j} recorded no metrics"
        assert (Path(job.run_id) / "members" / f"ray{i}" / "weights.safetensors").exists()


def test_a_worker_in_the_middle_of_exec_counts_as_alive():
    """/proc/PID/cmdline reads empty for a moment right after fork/exec returns to the launcher;
    that is a worker starting, not a dead one (this window failed live jobs on 1-core machines)."""
    from nes.runs.jobs import is_worker_cmdline, pid_alive

    assert is_worker_cmdline(b"")
    assert is_worker_cmdline(b"/usr/bin/python3\0-m\0nes\0worker\x0012\0")
    assert not is_worker_cmdline(b"/usr/sbin/sshd\0-D\0")
    assert not is_worker_cmdline(b"python -m nes workers")  # a foreign program with a similar title
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        assert not pid_alive(other.pid)  # alive, but not one of ours: a recycled pid
    finally:
        other.kill()
        other.wait()
    assert not pid_alive(other.pid)


def _foreign_database(folder):
    """A folder holding nes.db that another program made (one table of its own)."""
    folder.mkdir()
    con = sqlite3.connect(folder / "nes.db")
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.commit()
    con.close()
    return folder


def test_a_refused_foreign_database_is_left_as_it_was(tmp_path):
    """Refusing a database must not change it: no switch to WAL, no -wal/-shm files beside it."""
    foreign = _foreign_database(tmp_path / "f")
    before = (foreign / "nes.db").read_bytes()
    with pytest.raises(StoreError, match="another program"):
        Store(foreign)
    assert (foreign / "nes.db").read_bytes() == before, "refusing a foreign database changed its bytes"
    assert sorted(p.name for p in foreign.iterdir()) == ["nes.db"], \
        f"refusing a foreign database left files {sorted(p.name for p in foreign.iterdir())}"
    con = sqlite3.connect(foreign / "nes.db")
    mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    con.close()
    assert mode == "delete", f"the refused foreign database is in journal mode {mode!r}, expected 'delete'"


def test_jobs_list_into_a_closed_pipe_is_quiet(home):
    """`jobs list | head` : the reader went away; that is not an error."""
    store = Store()
    run = store.register_run("p")
    for _ in range(3):
        store.add_job(run, "evaluate", {})
    env = {**os.environ, "NES_HOME": str(home), "NES_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)}
    for args in (["list"], ["list", "--json"], ["show", "1"]):
        proc = subprocess.Popen([sys.executable, "-m", "nes", "jobs", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        proc.stdout.close()  # closed before the command writes: its first write meets a broken pipe
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
        assert code == 0, f"jobs {' '.join(args)} into a closed pipe: exit {code}, expected 0:\n{err}"
        assert "Broken pipe" not in err, f"jobs {' '.join(args)} into a closed pipe complains:\n{err}"


def test_a_version_1_database_is_upgraded_in_place(tmp_path):
    """Version 1 had no monotonic beat column: opening adds it and keeps every row."""
    home = tmp_path / "old"
    Store(home).close()
    con = sqlite3.connect(home / "nes.db")
    con.execute("INSERT INTO runs VALUES ('/r', 'r', 0)")
    con.execute("INSERT INTO jobs(run_id, kind, config, created) VALUES ('/r', 'evaluate', '{}', 0)")
    con.execute("ALTER TABLE jobs DROP COLUMN beat")
    con.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    con.commit()
    con.close()
    store = Store(home)
    job, = store.jobs()
    assert job.kind == "evaluate", f"the version 1 job reads as kind {job.kind!r}"
    assert job.beat is None, f"an upgraded row has beat {job.beat!r}, expected None"
    store.heartbeat(job.id)
    assert store.job(job.id).quiet() is not None, "a heartbeat after the upgrade stamped no monotonic beat"
    version = store._rows("SELECT value FROM meta WHERE key='schema_version'")[0][0]
    assert version == str(SCHEMA_VERSION), f"the upgraded database says version {version}"


def test_the_pipelines_alpha_star_member_waits_only_for_the_search(home):
    """`nes run`'s jobs (nes.runs.pipeline): the α* member is queued on the search alone, so it can
    train beside the hypernetwork; the other members wait for the sample; all of them finish,
    α*'s member under its own name with genotype*, and the evaluation sees both."""
    from nes.method.darts import load_search
    from nes.method.space import Genotype
    from nes.runs.pipeline import pipeline

    store = Store()
    s, h, sm, star, other, e = pipeline(store, "p", "digits", "smoke", 2)
    assert store.job(star).deps == [s], f"the α* member waits for {store.job(star).deps}, not the search {s}"
    assert store.job(other).deps == [sm], f"the sampled member waits for {store.job(other).deps}, not the sample {sm}"
    assert store.job(sm).config["pick"] == "strong", f"the pipeline picks {store.job(sm).config['pick']} by default"
    jobs = wait(store, [s, h, sm, star, other, e], poll=0.3)
    assert all(j.status == "done" for j in jobs), [why(j) for j in jobs if j.status != "done"]
    run = home / "p"
    assert store.job(star).result["name"] == "alpha_star", f"the α* member is named {store.job(star).result['name']}"
    genotype = Genotype.from_dict(read_json(run / "members" / "alpha_star" / "genotype.json")["genotype"])
    assert genotype == load_search(run).star, "the α* member did not train genotype*"
    evaluated = {m["name"] for m in store.job(e).result["members"]}
    assert evaluated == {"alpha_star", store.job(other).result["name"]}, f"the evaluation saw {evaluated}"


def test_a_pipeline_with_an_unknown_pick_queues_nothing(home):
    from nes.runs.pipeline import pipeline

    store = Store()
    with pytest.raises(StoreError, match="--pick"):
        pipeline(store, "q", "digits", "smoke", 2, pick="best")
    assert store.jobs() == [], f"a refused pipeline queued {[j.kind for j in store.jobs()]}"
