"""Widgets every page shares: loading a run's view, friendly errors, teaching notes, the jobs table
with its cancel and resume buttons, classroom mode's hiding of controls that write, live panels, and
the cell panel of Explore and Search.

Streamlit glue only; what the widgets show and offer comes from `nes` (RunView, viz, jobcontrols),
what their buttons do from `nes.explorer.actions`.
"""
from __future__ import annotations

import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import streamlit as st
import torch

from nes.explorer import present, urlstate, viz
from nes.explorer.snapshot import snapshot_html, snapshot_name
from nes.explorer.actions import cancel_job, resume_job
from nes.explorer.jobcontrols import controls, error_headline, job_log_tail, readonly
from nes.explorer.notes import eta_text
from nes.explorer.runview import RunView
from nes.method.space import Genotype
from pages._state import active_jobs, refresh_jobs, run_view, store

POLL_SECONDS = 10.0  # how often live panels re-read the store: an epoch lasts about a minute, and every
# poll costs the server and the browser CPU that the workers train on (benchmarks/bench_live.py)
REDRAW_SECONDS = 30.0  # at most one redraw of a watched page's figures per this: one costs ~1 s of CPU


def load_view(run_id: str) -> RunView:
    """The run's view with its search and hypernetworks loaded; a broken run stops the page with
    a message that says what is wrong (the other pages and runs keep working)."""
    with friendly("load this run"):
        return run_view(run_id).validate()
    st.stop()


@contextmanager
def friendly(what: str) -> Iterator[None]:
    """Show a failure as a message (with the detail in an expander), never as a raw traceback."""
    try:
        yield
    except (ValueError, OSError) as e:  # ArtifactError, StoreError, DataError, BundleError are ValueErrors
        st.error(f"Could not {what}: {e}")
        if type(e) is not ValueError:  # a plain ValueError is a setting or choice, named in the message
            with st.expander("Details"):
                st.code(traceback.format_exc())
    except Exception as e:  # an unexpected bug: still no raw traceback on the page
        st.error(f"Something went wrong while trying to {what} ({type(e).__name__}). "
                 "The details below help when reporting it.")
        with st.expander("Details"):
            st.code(traceback.format_exc())


def flash(page: str, message: str) -> None:
    """Keep a success message for the next script run of `page` (a page that calls st.rerun()
    right after an action would otherwise wipe the message before anyone sees it)."""
    st.session_state[f"_flash_{page}"] = message


def show_flash(page: str) -> None:
    """Show (once) the message `flash` kept for `page`."""
    message = st.session_state.pop(f"_flash_{page}", None)
    if message:
        st.success(message)


def teach(title: str, body: str) -> None:
    """A short teaching explanation, folded by default."""
    with st.expander(title, icon=":material/school:"):
        st.markdown(body)


def writable(what: str, still: str = "") -> bool:
    """Whether this page may offer its controls that write to the run store; in classroom mode
    (`jobcontrols.readonly`) it may not, and a caption says what is withheld (`what`) and what is
    `still` offered instead (the actions would refuse anyway: this keeps a control that cannot work
    off the page)."""
    if readonly():
        tail = f"; {still}" if still else ""
        st.caption(f":material/lock: Classroom mode (read-only): {what} is not offered{tail}.")
        return False
    return True


def jobs_table(run_id: str, kinds: tuple[str, ...] | None = None, limit: int = 12) -> list:
    """This run's jobs (newest first), each with its state: progress bars for running ones, a failure's
    message with its error and worker-log tail in an expander, and the job's control (cancel while
    queued or running, resume when failed or cancelled; none in classroom mode)."""
    s = store()
    jobs = [j for j in s.jobs(run_id) if kinds is None or j.kind in kinds][::-1][:limit]
    if not jobs:
        st.caption("No jobs for this run yet.")
    for j in jobs:
        offered = controls(j)
        if offered:
            row, ctl = st.columns([7, 1], vertical_alignment="center")
            with row:
                job_row(j)
            job_button(ctl, j, offered[0])
        else:
            job_row(j)
        kind, note = st.session_state.pop(f"_job_note_{j.id}", (None, None))
        if note:
            (st.success if kind == "success" else st.warning)(note)
    return jobs


def job_row(j) -> None:
    """One job's state: a progress bar with its ETA while running, its error (full error and log tail
    folded below) when failed, a caption otherwise."""
    name = j.config.get("name") or j.config.get("regularizer") or ""
    label = f"#{j.id} {j.kind}{' ' + name if name else ''} — {j.status}"
    if j.status == "running":
        eta = eta_text(j.step, j.total, j.started, time.time())
        stopping = " — stopping at its next report" if j.cancel_requested else ""
        st.progress(min(1.0, j.progress),
                    text=f"{label} ({j.step}/{j.total or '?'} steps{', ' + eta if eta else ''}){stopping}")
    elif j.status == "failed":
        st.error(f"{label}: {error_headline(j)}")
        with st.expander(f"Error and log of job #{j.id}"):
            st.code(j.error or "no message", language=None)
            tail = job_log_tail(j)
            if tail:
                st.caption(f"The end of its worker log (`logs/job_{j.id}.log`):")
                st.code(tail, language=None)
            else:
                st.caption("Its worker wrote no log.")
    else:
        st.caption(label)


JOB_BUTTONS = {"cancel": ("Cancel", ":material/cancel:", cancel_job),
               "resume": ("Resume", ":material/replay:", resume_job)}


def job_button(col, j, action: str) -> None:
    """The job's cancel or resume button; a click acts on the store, keeps what happened for the next
    script run (shown under the job) and reruns the whole page, so every panel shows the new state
    and a resumed job's page polls again."""
    label, icon, act = JOB_BUTTONS[action]
    if not col.button(label, key=f"{action}_{j.id}", icon=icon, help=f"{label} job #{j.id} ({j.kind})"):
        return
    try:
        note = ("success", f"Job #{j.id}: {act(store(), j.id)}.")
    except (ValueError, OSError) as e:  # it ended meanwhile (StoreError), or classroom mode (ReadOnlyError)
        note = ("warning", f"Could not {action} job #{j.id}: {e}")
    st.session_state[f"_job_note_{j.id}"] = note
    st.rerun()


def running_curve(run_id: str, kind: str, title: str, limit: int = 4) -> None:
    """This run's `kind` jobs as progress bars, plus the live accuracy curves of the running one."""
    jobs = jobs_table(run_id, (kind,), limit=limit)
    running = [j for j in jobs if j.status == "running"]
    if running:
        m = store().metrics(running[0].id)
        series = {n: [(r["step"], r["value"]) for r in m if r["name"] == n] for n in ("train_acc", "val_acc")}
        st.plotly_chart(viz.metric_curves(series, title, "step", "accuracy"), key=f"live_{kind}")


def live(panel, kinds: tuple[str, ...] | None = None, what: str = "show this panel") -> None:
    """Render `panel` in a fragment that re-reads the store every POLL_SECONDS while this run has
    queued or running jobs; when the last one ends, the whole page reruns once (fresh figures)."""
    _poll(panel, kinds, what)


def watch(progress, stamp, seen, kinds: tuple[str, ...] | None = None, what: str = "show the jobs") -> None:
    """The live part of a page whose figures are drawn once per script run: `progress` (the jobs'
    progress rows) redraws every POLL_SECONDS while this run has queued or running jobs; the whole
    page reruns when the last job ends, or when `stamp()` differs from `seen` (taken before the page
    drew its figures: the files they show changed) and it last drew REDRAW_SECONDS ago or more."""
    drawn = time.monotonic()
    _poll(progress, kinds, what, lambda: time.monotonic() - drawn >= REDRAW_SECONDS and stamp() != seen)


def _poll(draw, kinds: tuple[str, ...] | None, what: str, redraw=lambda: False) -> None:
    """`draw` in a fragment rerun every POLL_SECONDS while this run has queued or running jobs; the
    whole page reruns when the last one ends or `redraw()` says so. The fragment catches its own
    errors (a fragment rerun is outside the page's `friendly`), so a file a worker is writing, or a
    broken one, shows a message and the next tick tries again."""
    run_id = st.session_state.get("run_id")
    was_active = bool(active_jobs(run_id, kinds)) if run_id else False

    def tick() -> None:
        if was_active:
            refresh_jobs()
        rerun = False
        with friendly(what):
            draw()
            rerun = was_active and (not active_jobs(run_id, kinds) or redraw())
        if rerun:
            st.rerun(scope="app")

    st.fragment(tick, run_every=POLL_SECONDS if was_active else None)()


def cell_panel(view: RunView, theta: torch.Tensor, genotype: Genotype, reference: Genotype | None = None,
               title: str | None = None, key: str = "cell", page: str = "app") -> dict:
    """One graph per cell type of `genotype`, its edges weighted by θ (edges that differ from
    `reference` marked), each with its HTML snapshot; returns the per-cell (α, β) of θ for further figures."""
    cells = view.cells(theta)
    for col, (ct, (alpha, betas)) in zip(st.columns(len(cells)), cells.items()):
        w = viz.edge_weights(alpha, betas, genotype, ct)
        with col:
            chart(viz.cell_figure(genotype, ct, w, reference=reference, title=title.format(ct=ct) if title else None),
                  f"{key}_{ct}", page)
    return cells


def chart(fig, key: str, page: str, **kwargs):
    """st.plotly_chart of FIG plus a one-click, self-contained HTML snapshot of it (made only when
    clicked: plotly.js inlined is ~4 MB) holding the run, the page and the view's URL state. Both
    go through `present.styled`: the page's figure in the text colour of the browser's theme, the
    snapshot's in the light theme's (its paper is white), both projector-sized in presentation mode."""
    presenting = bool(st.session_state.get(present.KEY))
    # a theme the server's config fixes wins (st.context then still reports the browser's own
    # preference, measured with Streamlit 1.67), else the browser's (its system setting or menu choice)
    theme = st.get_option("theme.base") or st.context.theme.type
    event = st.plotly_chart(present.styled(fig, theme, presenting), key=key, **kwargs)
    run = Path(st.session_state.get("run_id") or "run").name
    state = {k: (v[0] if len(v) == 1 else v) for k in st.query_params for v in [st.query_params.get_all(k)]}
    st.download_button("HTML snapshot", key=f"snap_{key}",
                       data=lambda: snapshot_html(present.styled(fig, "light", presenting), run, page, state),
                       file_name=snapshot_name(run, page, key), mime="text/html", on_click="ignore",
                       icon=":material/download:", help="This figure as one HTML file that opens offline, "
                       "with the run's name and this view's settings, for slides and rooms without the app.")
    return event


def url_choice(key: str, options, what: str) -> None:
    """Before a widget bound to the URL under `key` is drawn: a link whose value is not one of
    `options` gets a warning that names it, and the value leaves the URL (the widget shows its default)."""
    warning = urlstate.check_choice(st.query_params, key, [str(o) for o in options], what)
    if warning:
        st.warning(warning)
        del st.query_params[key]

