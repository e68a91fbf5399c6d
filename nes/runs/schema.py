"""What the run store's database holds: its schema and version, the job row as a `Job` (read even
when damaged), and the heartbeat stamp.

A job row names its worker's host, pid and last heartbeat twice: `heartbeat` on the wall clock for
people, `beat` on the host's monotonic clock, which every process of that host shares and a
wall-clock step does not move; so any reader on that host, even a CLI call that lives one second,
sees how long a worker has been quiet (`Job.quiet`) without having watched it.
"""
from __future__ import annotations

import json
import socket
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 2  # 2: jobs.beat (version 1 databases are upgraded when opened)
JOB_KINDS = ("search", "hypernet", "fixed_lambda", "sample", "retrain", "evaluate", "baseline", "shift", "levers")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,            -- the run folder's absolute path
    name TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    config TEXT NOT NULL,            -- JSON
    deps TEXT NOT NULL DEFAULT '[]', -- JSON list of job ids this one waits for
    executor TEXT NOT NULL DEFAULT 'local',
    cores INTEGER NOT NULL DEFAULT 1,
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    host TEXT,
    heartbeat REAL,                  -- wall clock, for people
    beat REAL,                       -- the same moment on the worker host's monotonic clock
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT,                     -- JSON
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs(run_id);
CREATE TABLE IF NOT EXISTS metrics (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_job ON metrics(job_id, name, step);
"""
TABLES = {"meta", "runs", "jobs", "metrics"}  # a database of an older version may hold more


def this_host() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class Job:
    """One row of the jobs table, its JSON columns parsed."""

    id: int
    run_id: str
    kind: str
    status: str
    config: dict
    deps: list[int]
    executor: str
    cores: int
    step: int
    total: int
    pid: int | None
    host: str | None
    heartbeat: float | None
    cancel_requested: bool
    error: str | None
    result: dict | None
    attempts: int
    created: float
    started: float | None
    finished: float | None
    beat: float | None = None  # the last heartbeat on its host's monotonic clock (`stamp`)
    damaged: str | None = None  # why a column of this row could not be read (the rest still shows)

    @property
    def progress(self) -> float:
        if self.status == "done":
            return 1.0
        return self.step / self.total if self.total else 0.0

    def quiet(self) -> float | None:
        """Seconds since this job's worker last beat, measured on this host's monotonic clock; None when
        the row has no beat (written by an older version) or the worker runs on another host."""
        if self.beat is None or self.host not in (None, this_host()):
            return None
        return max(0.0, time.monotonic() - self.beat)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["progress"] = self.progress
        return d


def job_from_row(row: sqlite3.Row) -> Job:
    """A job row → Job. A JSON column that does not parse (a damaged row) reads as empty and is
    named in `damaged`, as are a kind no task has and a pid that is no process id (-1 would signal
    every process): one bad row never hides the others, and is never run or signalled."""
    d = dict(row)
    bad = []

    def parse(key: str, empty: Any) -> Any:
        text = d[key]
        if not text:
            return empty
        try:
            return json.loads(text)
        except (TypeError, ValueError) as e:
            bad.append(f"{key} is not valid JSON ({e})")
            return empty

    d.update(config=parse("config", {}), deps=parse("deps", []), result=parse("result", None),
             cancel_requested=bool(d["cancel_requested"]))
    if d["kind"] not in JOB_KINDS:
        bad.append(f"unknown job kind {d['kind']!r} (known kinds: {', '.join(JOB_KINDS)})")
    if d["pid"] is not None and (not isinstance(d["pid"], int) or d["pid"] <= 0):
        bad.append(f"pid {d['pid']!r} is not a process id")
    damaged = f"job {d['id']}: damaged row: " + "; ".join(bad) if bad else None
    return Job(**d, damaged=damaged)


def stamp() -> dict[str, float]:
    """A heartbeat's columns: the wall clock for people, the monotonic clock for judging staleness."""
    return {"heartbeat": time.time(), "beat": time.monotonic()}


def encode(fields: dict[str, Any]) -> dict[str, Any]:
    """JSON-encode the JSON columns of an update."""
    return {k: json.dumps(v) if k in ("config", "result", "deps") and v is not None and not isinstance(v, str) else v
            for k, v in fields.items()}
