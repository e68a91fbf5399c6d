"""Job controls and classroom mode: which buttons a listed job offers, what a failed job's worker
log ends with, and the one switch (`NES_READONLY`) that serves the app to a room without letting
the room change anything.

The pages draw; what a job offers and what its log shows are decided here, so they are tested
without a browser. Classroom mode is decided by `readonly()` alone. The pages hide every control that
writes when it is on, and the write actions of `nes.explorer.actions` call `require_writable` first, a
second line of defence: a page that forgot its check still cannot queue, cancel, resume or export.
"""
from __future__ import annotations

import os
import stat

from ..layout import RunDir
from ..runs.store import Job

READONLY_ENV = "NES_READONLY"
_OFF = ("", "0", "false", "no", "off")  # the values that leave classroom mode off; any other turns it on
LOG_TAIL_BYTES = 16_384  # at most this much of a worker log is read (a log can grow to megabytes)
LOG_TAIL_LINES = 40  # and at most this many of its last lines are shown
CANCELLABLE = ("queued", "running")
RESUMABLE = ("failed", "cancelled")


class ReadOnlyError(PermissionError):
    """A write asked of the app in classroom mode: refused before anything changed."""


def readonly() -> bool:
    """Whether the app serves a room read-only (classroom mode): `NES_READONLY` is set to anything
    but empty, 0, false, no or off. Off by default.

    An unrecognised value (a typo such as `ture`) counts as on: a room that asked for read-only must
    not get write access because of a spelling. Classroom mode withholds every control that writes to
    the run store: queueing searches, hypernetworks, members, baselines and shift evaluations;
    cancelling and resuming jobs; writing export bundles into a run. It keeps what writes nothing to
    the store: exploring every run, and downloading a bundle already written (the download reads a
    file and hands it to the browser). It also keeps the housekeeping that any look at the store does,
    which no one in the room triggers on purpose: the bundled demo copied into an empty store on first
    start, dead workers marked failed, queued jobs (queued from the command line) started when ready."""
    return os.environ.get(READONLY_ENV, "").strip().lower() not in _OFF


def require_writable(what: str) -> None:
    """Refuse (ReadOnlyError naming `what` and the switch) when the app is in classroom mode; the
    write actions call this before their first check, so a refused action changes nothing."""
    if readonly():
        raise ReadOnlyError(f"cannot {what}: the app runs in classroom mode ({READONLY_ENV}="
                            f"{os.environ.get(READONLY_ENV, '')!r}), which explores runs but changes nothing; "
                            f"unset {READONLY_ENV} (or set it to 0) and restart the app to allow it")


def controls(job: Job, read_only: bool | None = None) -> tuple[str, ...]:
    """The buttons a listed job offers: ("cancel",) while it is queued or running, ("resume",) when
    it failed or was cancelled, () otherwise and for every job in classroom mode (`read_only`, by
    default `readonly()`). A running job whose cancel was already requested offers nothing more (its
    worker stops at its next progress report), and neither does a damaged row (resuming it would
    fail again the same way: it has to be submitted again)."""
    if readonly() if read_only is None else read_only:
        return ()
    if job.status in CANCELLABLE and not job.cancel_requested:
        return ("cancel",)
    if job.status in RESUMABLE and not job.damaged:
        return ("resume",)
    return ()


def error_headline(job: Job) -> str:
    """The first line of a job's error (the whole error, traceback included, goes in an expander)."""
    lines = (job.error or "").strip().splitlines()
    return lines[0] if lines else "no message"


def log_tail(path: str | os.PathLike, max_bytes: int = LOG_TAIL_BYTES, max_lines: int = LOG_TAIL_LINES) -> str:
    """The end of a worker log, safely: at most the last `max_bytes` bytes are read, decoded leniently
    (bytes that are not UTF-8 become U+FFFD), the first line dropped when the read began inside it, and
    at most the last `max_lines` lines kept. "" when the file is missing, unreadable, empty or not a
    regular file: it is opened without blocking and without following a symbolic link, so a FIFO named
    like a log cannot hang the page and a link cannot show the room a file outside the run."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return ""
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - max(0, max_bytes))
            f.seek(max(0, start - 1))  # one byte more: whether the read begins at the start of a line
            data = f.read(size - start + (1 if start else 0))
        except OSError:
            return ""
    cut = bool(start) and not data.startswith(b"\n")  # the read began inside a line
    lines = (data[1:] if start else data).decode("utf-8", errors="replace").splitlines()
    if cut:
        lines = lines[1:]  # show whole lines only
    return "\n".join(lines[-max_lines:]) if max_lines > 0 else ""


def job_log_tail(job: Job) -> str:
    """The end of `job`'s worker log (RUN/logs/job_<id>.log, every attempt appended); "" when none."""
    return log_tail(RunDir(job.run_id).job_log(job.id))
