"""What keeps one attempt of a job from spoiling another: fencing, the run folder's identity, stale temp files.

A job's row counts its attempts; the worker of attempt N (`Attempt`) checks at every progress
report, every artifact write (`nes.artifacts.set_write_guard`) and its final status write that the
row still runs attempt N. A worker that was frozen, reaped and replaced therefore stops at its next
write without touching anything (`StaleAttempt`). The same checks refuse to go on when the run folder
was deleted (or replaced by another folder) while the job ran: the job fails with a message
instead of ending "done" with half of its artifacts in a re-created folder.

A killed writer leaves its atomic-write temp file (`.NAME.XXXXXXXX.tmp`, see
`nes.artifacts.atomic_write_bytes`) behind; `remove_stale_temps` deletes those that no live job
can own when an attempt starts.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import ArtifactError
from .store import Reply, StaleAttempt, Store

# tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp"): 8 random characters of [a-z0-9_]
TEMP_PATTERN = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


class RunFolderGone(ArtifactError):
    """The run folder a job writes into was deleted or replaced while the job ran."""


def folder_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder, None when it does not exist: a deleted and re-created folder differs."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


@dataclass
class Attempt:
    """One attempt of one job, as its worker sees it: the checks before every write."""

    store: Store
    job_id: int
    attempt: int
    run: Path
    run_id: tuple[int, int] | None = None  # the run folder's identity when the attempt started

    def __post_init__(self) -> None:
        self.run_id = folder_id(self.run)

    def check_current(self) -> None:
        if not self.store.is_current(self.job_id, self.attempt):
            raise StaleAttempt(self.job_id, self.attempt)

    def check_run_folder(self) -> None:
        if self.run_id is None or folder_id(self.run) != self.run_id:
            raise RunFolderGone(
                f"run folder {self.run} was deleted (or replaced) while job {self.job_id} ran; nothing more is "
                f"written there. Start the run again, or restore the folder and `python -m nes jobs resume "
                f"{self.job_id}`")

    def check_write(self, path: Path) -> None:
        """The write guard: a stale attempt or a vanished run folder writes nothing."""
        self.check_current()
        self.check_run_folder()

    def report(self, step: int, total: int, metrics: dict) -> Reply:
        """Progress (fenced); returns the row's cancel request and granted cores."""
        self.check_run_folder()
        return self.store.report(self.job_id, step, total, metrics, attempt=self.attempt)

    def record(self, **fields) -> bool:
        """The outcome, written only while this attempt is current; False for a stale one."""
        return self.store.update_attempt(self.job_id, self.attempt, **fields)


def temp_files(run: Path) -> list[Path]:
    """Atomic-write temp files anywhere in a run folder."""
    if not Path(run).is_dir():
        return []
    return [p for p in Path(run).rglob(".*.tmp") if p.is_file() and TEMP_PATTERN.fullmatch(p.name)]


def remove_stale_temps(store: Store, job_id: int) -> list[Path]:
    """Delete the temp files of atomic writes in job `job_id`'s run folder that no live writer owns.

    A writer creates its temp files after its attempt started, so a temp file last modified before
    the start of every running job of this run (this attempt included) belongs to a dead one."""
    job = store.job(job_id)
    starts = [j.started for j in store.jobs(job.run_id) if j.status == "running" and j.started]
    if not starts:
        return []
    cutoff = min(starts)
    removed = []
    for p in temp_files(Path(job.run_id)):
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
                removed.append(p)
        except FileNotFoundError:  # its writer renamed or removed it meanwhile
            pass
    return removed
