"""The run store: one SQLite database (WAL) in NES_HOME for runs, jobs, progress and metrics.

Artifacts themselves live in a folder per run (`nes.layout.RunDir`, written atomically by
`nes.artifacts`); the database records the runs and what is running. Every connection uses WAL, a busy timeout and
short transactions, so several worker processes can write progress and metrics at once while
the app reads. The schema version is stored and checked (`nes.runs.schema`): a database from a newer
version, a foreign SQLite file or a corrupt file is refused with a message that says so, and left as
it was. A database that another process holds (several commands starting at once) is waited for.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

from .schema import JOB_KINDS, SCHEMA, SCHEMA_VERSION, TABLES, Job, encode, job_from_row, stamp, this_host

__all__ = ["BUSY_SECONDS", "DB_NAME", "JOB_KINDS", "SCHEMA_VERSION", "Job", "Reply", "StaleAttempt", "Store",
           "StoreError", "nes_home", "resolve_run", "stamp", "this_host"]

BUSY_SECONDS = 60.0  # how long opening waits for a database another process holds
DB_NAME = "nes.db"


class Reply(NamedTuple):
    """What a progress report reads back from its row."""

    cancel: bool  # a cancel was requested
    cores: int  # the cores the launchers grant the job now


class StoreError(ValueError):
    """A missing, corrupt, foreign or newer database, or a request for something not in it."""


class StaleAttempt(StoreError):
    """A worker's attempt is no longer the job's current one (reaped, resumed, restarted): it must
    stop without writing anything, so a woken-up old worker never overwrites a newer one's work."""

    def __init__(self, job_id: int, attempt: int):
        super().__init__(f"job {job_id}: attempt {attempt} is no longer current (the job was reaped or started "
                         "again); this worker stops without writing")


def nes_home() -> Path:
    return Path(os.environ.get("NES_HOME", "runs")).resolve()


def resolve_run(run: str | os.PathLike) -> Path:
    """A run given as a bare name lives in NES_HOME; a path is used as it is."""
    s = str(run)
    p = Path(s)
    if not p.is_absolute() and os.sep not in s and (os.altsep is None or os.altsep not in s) and s not in (".", ".."):
        p = nes_home() / s
    return p.resolve()


def _busy(e: Exception) -> bool:  # another connection holds the database: wait, it is not damaged
    return "locked" in str(e) or "busy" in str(e)


class Store:
    """Handle on NES_HOME/nes.db (created on first use). Cheap to create; one per process/thread."""

    def __init__(self, home: str | os.PathLike | None = None, create: bool = True):
        self.home = Path(home).resolve() if home is not None else nes_home()
        self.path = self.home / DB_NAME
        if not self.path.exists() and not create:
            raise StoreError(f"no run store at {self.path}")
        self.home.mkdir(parents=True, exist_ok=True)
        self._conn = self._open()

    # -- connection -----------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        """Connect and check; while another process holds the database (creating it, switching it to
        WAL), wait up to BUSY_SECONDS: a busy database is never called unusable."""
        deadline = time.monotonic() + BUSY_SECONDS
        while True:
            try:
                return self._connect()
            except sqlite3.DatabaseError as e:
                if _busy(e) and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                if _busy(e):
                    raise StoreError(f"{self.path}: database stayed locked for {BUSY_SECONDS:.0f} s ({e}); is "
                                     "another program holding it?") from None
                raise StoreError(f"{self.path} is not a usable NES database ({e}); move it away or set "
                                 f"NES_HOME to another folder — nothing in it was changed") from None

    def _connect(self) -> sqlite3.Connection:
        """A connection to a checked database. Everything is read and checked before anything is written,
        so a refused file (foreign, newer) keeps its bytes and its journal mode; then a new file gets
        the schema, an older one its upgrade, and the connection WAL."""
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            version = self._check(conn)
            if version != str(SCHEMA_VERSION):
                with self._tx_raw(conn):
                    self._create_or_upgrade(conn)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _check(self, conn: sqlite3.Connection) -> str | None:
        """The schema version of an NES database (None for an empty file); StoreError for another program's
        database or a version this code cannot read. Reads only."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        tables.discard("sqlite_sequence")
        if not tables:
            return None
        if not tables >= TABLES:
            raise StoreError(f"{self.path} is an SQLite database of another program (tables: "
                             f"{', '.join(sorted(tables))}); set NES_HOME to another folder")
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = None if row is None else str(row[0])
        if version not in (str(SCHEMA_VERSION), "1"):
            raise StoreError(f"{self.path} has schema version {version}, this NES Explorer reads "
                             f"version {SCHEMA_VERSION}; use the matching version or another NES_HOME")
        return version

    @staticmethod
    def _create_or_upgrade(conn: sqlite3.Connection) -> None:
        """Inside the caller's transaction: the schema of a new database, or version 1's missing column.
        Checked again here, since another process may have done it first."""
        for stmt in SCHEMA.split(";"):  # not executescript: it would commit our transaction
            if stmt.strip():
                conn.execute(stmt)
        if "beat" not in {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}:
            conn.execute("ALTER TABLE jobs ADD COLUMN beat REAL")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @contextmanager
    def _readable(self) -> Iterator[None]:
        """SQLite errors past opening (a damaged page, a lock that outlived the busy timeout) → StoreError
        naming the database file, so the CLI prints a message instead of a traceback."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            if _busy(e):
                raise StoreError(f"{self.path}: database stayed locked ({e}); is another program holding it?") from None
            raise StoreError(f"{self.path} is damaged ({e}); copy it aside and try `sqlite3 {self.path} .recover`, "
                             "or set NES_HOME to another folder") from None

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._readable():
            return self._conn.execute(sql, tuple(args)).fetchall()

    @contextmanager
    def _tx(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT with retries (the busy timeout covers most waits)."""
        with self._readable(), self._tx_raw(conn) as c:
            yield c

    @contextmanager
    def _tx_raw(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        conn = conn or self._conn
        for attempt in range(50):
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as e:
                if not _busy(e):
                    raise
                time.sleep(0.05 * (attempt + 1))
        else:
            raise StoreError(f"{self.path}: database stayed locked; is another program holding it?")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()

    # -- runs -----------------------------------------------------------------------------------
    def register_run(self, run: str | os.PathLike) -> str:
        path = resolve_run(run)
        path.mkdir(parents=True, exist_ok=True)
        with self._tx() as c:
            c.execute("INSERT OR IGNORE INTO runs(id, name, created) VALUES (?, ?, ?)",
                      (str(path), path.name, time.time()))
        return str(path)

    def claim_run(self, run: str | os.PathLike) -> str:
        """Register a new run under its name, atomically: of two commands that claim one name at the
        same instant exactly one gets it; the other (and any later one) gets a StoreError saying the
        name is taken. Makes no folder (`release_run` undoes a claim that queued nothing)."""
        path = resolve_run(run)
        with self._tx() as c:
            cur = c.execute("INSERT OR IGNORE INTO runs(id, name, created) VALUES (?, ?, ?)",
                            (str(path), path.name, time.time()))
        if cur.rowcount != 1:
            raise StoreError(f"the run name {path.name!r} is taken: {path} is already a run of {self.path}; "
                             "pick a new --run, or manage its jobs with "
                             f"`python -m nes jobs list --run {path.name}`")
        return str(path)

    def release_run(self, run_id: str) -> None:
        """Undo `claim_run` for a run that queued no job (a command refused after claiming the name)."""
        with self._tx() as c:
            c.execute("DELETE FROM runs WHERE id=? AND NOT EXISTS (SELECT 1 FROM jobs WHERE run_id=?)",
                      (run_id, run_id))

    def get_run(self, run: str | os.PathLike) -> str:
        """The run's id; StoreError if the store has no such run."""
        path = str(resolve_run(run))
        if not self._rows("SELECT 1 FROM runs WHERE id=?", (path,)):
            known = [r[0] for r in self._rows("SELECT name FROM runs ORDER BY created")]
            raise StoreError(f"no run {run!r} in {self.path}" + (f"; known runs: {', '.join(known)}" if known else
                             "; start one with `python -m nes run --run NAME ...`"))
        return path

    def runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._rows("SELECT * FROM runs ORDER BY created")]

    # -- jobs -----------------------------------------------------------------------------------
    def add_job(self, run_id: str, kind: str, config: dict, deps: Sequence[int] = (), executor: str = "local") -> int:
        if kind not in JOB_KINDS:
            raise StoreError(f"unknown job kind {kind!r}; known kinds: {', '.join(JOB_KINDS)}")
        with self._tx() as c:
            for d in deps:
                if c.execute("SELECT 1 FROM jobs WHERE id=?", (d,)).fetchone() is None:
                    raise StoreError(f"dependency job {d} does not exist")
            cur = c.execute(
                "INSERT INTO jobs(run_id, kind, config, deps, executor, created) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, kind, json.dumps(config), json.dumps(list(deps)), executor, time.time()))
            return int(cur.lastrowid)

    def job(self, job_id: int) -> Job:
        rows = self._rows("SELECT * FROM jobs WHERE id=?", (int(job_id),))
        if not rows:
            raise StoreError(f"no job {job_id} in {self.path}")
        return job_from_row(rows[0])

    def jobs(self, run_id: str | None = None) -> list[Job]:
        if run_id is None:
            return [job_from_row(r) for r in self._rows("SELECT * FROM jobs ORDER BY id")]
        return [job_from_row(r) for r in self._rows("SELECT * FROM jobs WHERE run_id=? ORDER BY id", (run_id,))]

    def _update(self, job_id: int, fields: dict[str, Any], where: str = "", args: Sequence[Any] = ()) -> bool:
        """UPDATE jobs SET fields WHERE id=? [AND where]; True if the row matched."""
        fields = encode(fields)
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as c:
            cur = c.execute(f"UPDATE jobs SET {cols} WHERE id=? {where}", (*fields.values(), int(job_id), *args))
            return cur.rowcount == 1

    def update_job(self, job_id: int, **fields: Any) -> None:
        self._update(job_id, fields)

    def claim(self, job_id: int, from_status: str = "queued", **fields: Any) -> bool:
        """Atomically move a job out of `from_status` (so two launchers never start it twice)."""
        return self._update(job_id, fields, "AND status=?", (from_status,))

    # -- attempts (fencing) ---------------------------------------------------------------------
    # Every start of a job increments its `attempts` counter; the worker of attempt N writes
    # progress, heartbeats, artifacts and its outcome only while the row is still running attempt N.
    def start_attempt(self, job_id: int, from_status: str = "queued", **fields: Any) -> int | None:
        """claim + attempts += 1 in one transaction; the new attempt number, or None if not claimed."""
        fields = encode({**fields, "status": "running"})
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as c:
            cur = c.execute(f"UPDATE jobs SET {cols}, attempts=attempts+1 WHERE id=? AND status=?",
                            (*fields.values(), int(job_id), from_status))
            if cur.rowcount != 1:
                return None
            return int(c.execute("SELECT attempts FROM jobs WHERE id=?", (int(job_id),)).fetchone()[0])

    def update_attempt(self, job_id: int, attempt: int, **fields: Any) -> bool:
        """Update the row only while it runs `attempt` (a stale worker's write changes nothing)."""
        return self._update(job_id, fields, "AND attempts=? AND status='running'", (int(attempt),))

    def is_current(self, job_id: int, attempt: int) -> bool:
        return bool(self._rows("SELECT 1 FROM jobs WHERE id=? AND attempts=? AND status='running'",
                               (int(job_id), int(attempt))))

    # -- progress and metrics -------------------------------------------------------------------
    def report(self, job_id: int, step: int, total: int, metrics: dict[str, float] | None = None,
               attempt: int | None = None) -> "Reply":
        """Progress + heartbeat + metric rows in one transaction; returns the row's cancel request and
        the cores granted to it (`nes.runs.jobs.share_cores`).

        With `attempt`, nothing is written unless the job still runs that attempt (StaleAttempt)."""
        now, beat = time.time(), time.monotonic()
        fence, args = ("AND attempts=? AND status='running'", (int(attempt),)) if attempt is not None else ("", ())
        with self._tx() as c:
            cur = c.execute(f"UPDATE jobs SET step=?, total=?, heartbeat=?, beat=? WHERE id=? {fence}",
                            (step, total, now, beat, job_id, *args))
            if attempt is not None and cur.rowcount != 1:
                raise StaleAttempt(job_id, attempt)
            if metrics:
                c.executemany("INSERT INTO metrics(job_id, step, name, value, time) VALUES (?, ?, ?, ?, ?)",
                              [(job_id, step, k, float(v), now) for k, v in metrics.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)])
            row = c.execute("SELECT cancel_requested, cores FROM jobs WHERE id=?", (job_id,)).fetchone()
        return Reply(bool(row[0]), int(row[1])) if row else Reply(False, 0)

    def heartbeat(self, job_id: int, attempt: int | None = None) -> bool:
        """Stamp the heartbeat (only while the job runs `attempt`, when given); True if stamped."""
        if attempt is None:
            return self._update(job_id, stamp())
        return self.update_attempt(job_id, attempt, **stamp())

    def metrics(self, job_id: int, name: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT step, name, value, time FROM metrics WHERE job_id=?"
        args: tuple = (job_id,)
        if name is not None:
            q += " AND name=?"
            args += (name,)
        return [dict(r) for r in self._rows(q + " ORDER BY step, rowid", args)]
