"""Ensemble: retrain members in the background and watch the ensemble improve live.

The ensemble's key numbers come first (above the form that trains members); the members in it are
in the page's link (`?members=`, nes.explorer.urlstate). Every figure has its HTML snapshot beside
it, the live ones too, and the snapshot is made on click. While members train, their jobs' progress
is live (`watch`) and the figures redraw when the members' saved epochs change, at most every
REDRAW_SECONDS (each redraw costs the CPU the members train on).
"""
import streamlit as st

from nes.explorer import diversityview, frontier, urlstate, viz
from nes.explorer.actions import member_choice, member_options, submit_members
from nes.explorer.notes import ensemble_note, ledger_text
from nes.method.regularizers import lam_diversity
from nes.method.stats import Difference
from pages._state import active_jobs, job_states, route_through_app, run_view, selected_run, store
from pages._widgets import chart, flash, friendly, jobs_table, load_view, show_flash, teach, watch, writable

route_through_app()
PAGE = "ensemble"  # the page's URL path, in its snapshots' names

st.header("Ensemble: retrain members, watch the ensemble")
teach("Why an ensemble of different architectures?", r"""
Averaging the predicted probabilities of several networks (an **ensemble**) makes fewer mistakes
than its members — *if the members make different mistakes*. Retraining α\* with different seeds
gives some diversity; **architectures sampled at different λ** give more. Averaging does not make
the probabilities honest by itself: members trained with label smoothing are underconfident, and
averaging members that disagree makes the ensemble more so, so its NLL and ECE can be worse than its
best member's. Temperature scaling (one T fitted on the validation split) corrects that; the note
under the headline says what this run's numbers show.

Each chosen member is **retrained from scratch** in a background worker. After every epoch it saves
its test probabilities, and the curves below update: each member's accuracy, and the ensemble's
accuracy, NLL (negative log-likelihood, lower is better) and ECE (calibration error, lower is
better). The headline uses the members that **finished** training; members still training are listed
apart. Every gain comes with a 95 % interval over the test images: *within noise* means the test set
cannot tell the difference from zero. The **predictive JS** and **disagreement** heatmaps show how
differently the members predict (0 = the same).
**Greedy selection** (forward selection on the validation split, as in NES) suggests which members
to keep.""")

run_id = selected_run()
view = load_view(run_id)
members, regs = [], []
with friendly("list the members"):
    if not view.has_search:
        st.info("This run has no search yet: start one on the **Search** page.")
        st.stop()
    members = view.members()
    regs = view.regularizers()
MEMBERS_KEY = f"members_{run_id}"  # the picker's state, per run; the URL holds it as ?members=


def choose_members(names: list[str]) -> list[str]:
    """The members in the ensemble, set before the picker is drawn (the headline above it shows
    them): a link's `?members=` as it is (a member this run lacks named in a warning), unless this
    session wrote that itself; else this session's choice for the run, which new members join
    (`member_choice`); every member on a first visit."""
    link = urlstate.read_members(st.query_params, urlstate.MEMBERS, names, st.session_state.get("_url_members"))
    if link.warning:
        st.warning(link.warning)
    if link.chosen is not None:
        previous, known = link.chosen, names  # the link's selection: no member joins it
    else:
        previous, known = st.session_state.get(MEMBERS_KEY), st.session_state.get(f"{MEMBERS_KEY}_known", [])
    st.session_state[MEMBERS_KEY] = member_choice(previous, known, names)
    st.session_state[f"{MEMBERS_KEY}_known"] = names
    return st.session_state[MEMBERS_KEY]


def ready_members(fresh) -> list[str]:
    """The chosen members with at least one saved epoch."""
    return [n for n in chosen if n in fresh.member_names() and fresh.member(n).epochs_done > 0]


def headline_panel() -> None:
    """The key numbers, first on the page: the ensemble of the chosen members that finished."""
    fresh = run_view(run_id)
    ready = ready_members(fresh)
    if not ready:
        st.info("No member has finished an epoch yet: the ensemble's numbers appear here once its members have.")
        return
    headline(fresh.live_ensemble(ready))


def train_form() -> tuple[bool, str | None, list, int, bool]:
    """The form that starts new members: (clicked, hypernetwork, λ values, seed, α* too)."""
    c1, c2 = st.columns([1, 4])
    reg = c1.selectbox("Hypernetwork", regs or ["—"], disabled=not regs, key=f"member_reg_{run_id}",
                       help="The hypernetwork α(λ) the members' architectures are sampled from; the λ list "
                            "follows it.")
    with c2.form("new_members"):
        f1, f2 = st.columns([4, 1])
        grid = [round(x, 4) for x in view.axis_grid(reg)] if regs else []
        lams = f1.multiselect("Diversity (λ)", grid, default=[], key=f"member_lams_{run_id}_{reg}",
                              format_func=lambda x: (
                                  f"{lam_diversity(reg, x, *view.lam_range(reg).target):.3g} (λ={x:.3g})"),
                              help="One member per position on the diversity axis (0 = α*, 1 = most diverse): "
                                   "the architecture α(λ), discretized.")
        seed = f2.number_input("Seed", min_value=0, max_value=10_000, value=0,
                               help="The member's training seed (initial weights, data order). The same λ with "
                                    "another seed trains another member.")
        star = st.checkbox("Also α* itself", value=False,
                           help="Retrain the searched architecture α* with this seed too.")
        go = st.form_submit_button("Start training", type="primary")
    return go, reg if regs else None, lams, int(seed), star


def start_members(reg: str | None, lams: list, seed: int, star: bool) -> None:
    """Queue the members; when some started, rerun the page so that every panel (the headline's
    included) sees their jobs and the new members join the ensemble's picker at once."""
    res = submit_members(store(), run_id, view, reg, lams, seed, star)
    if res.skipped:
        st.session_state["_members_skipped"] = res.skipped
    if res.started:
        flash("ensemble", "Started: " + ", ".join(f"#{job} {name}" for job, name in res.started))
        st.rerun()


def headline(ens) -> None:
    """The ensemble of the finished members, its gain over the best member with its interval."""
    if not ens.finished:
        st.info("No chosen member has finished training yet: the ensemble's metrics wait for finished members "
                "(a member in its first epochs would drag the ensemble down). Their curves are below.")
        return
    met, vs = ens.metrics, ens.vs_best
    acc = Difference.from_dict(vs["accuracy"]) if vs else None
    nll = Difference.from_dict(vs["nll"]) if vs else None
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Ensemble accuracy", f"{met['accuracy']:.2%}", f"{acc.value:+.2f} pts vs best member" if acc else None)
    m2.metric("Ensemble NLL", f"{met['nll']:.3f}", f"{nll.value:+.3f} vs best member" if nll else None,
              delta_color="inverse")
    cal = ens.calibrated
    m3.metric("Ensemble ECE", f"{met['ece']:.3f}",
              f"{cal['ece']:.3f} after temperature scaling (T {cal['temperature']:.2f})" if cal else None,
              delta_color="off", help="Expected calibration error. Temperature scaling divides the ensemble's "
              "log-probabilities by one T fitted on the validation split (not the test set): T > 1 means the "
              "ensemble was overconfident, T < 1 underconfident; the accuracy does not change.")
    m4.metric("Finished members", f"{len(ens.finished)}", f"+{len(ens.training)} training" if ens.training else None,
              delta_color="off")
    for note in ens.report.notes:  # a temperature fitted on few validation images, or none
        st.caption(f":warning: {note}")
    if vs:
        st.caption(f"Against the best member (**{vs['best_member']}**, chosen by validation NLL, not on the test "
                   f"set): accuracy {acc.text()}; NLL {nll.text()}. Paired bootstrap over the {acc.n} test images; "
                   "*within noise* means this test set cannot tell the ensemble from its best member.")
    led = ledger_text(ens.report.ledger)
    if led:
        st.caption(led)
    note = ensemble_note(ens.report, run_id)
    if note:
        st.info(note, icon=":material/school:")
    if ens.training:
        st.dataframe([{"member": n, "status": "training: not in the ensemble", "epochs saved": k,
                       "latest test accuracy %": round(100 * m["accuracy"], 2)} for n, k, m in ens.training],
                     hide_index=True, width="stretch")


def ensemble_panel() -> None:
    """The members' test accuracy per epoch beside the ensemble's, and how differently they predict."""
    fresh = run_view(run_id)
    ready = ready_members(fresh)
    if not ready:
        return  # the headline panel says so
    ens = fresh.live_ensemble(ready)  # computed once per state of the members' files: the headline's
    training = {n for n, _, _ in ens.training}
    series = {f"{n} (training)" if n in training else n: [(e, m["accuracy"]) for e, m in fresh.member_curve(n)]
              for n in ready}
    if ens.finished:
        series["ensemble (finished members)"] = [(e, m["accuracy"]) for e, m in fresh.ensemble_curve(ens.finished)]
    a, b = st.columns(2)
    with a:
        chart(viz.metric_curves(series, "test accuracy per epoch", "epoch", "accuracy"), "acc_curve", PAGE)
    if ens.joins:
        with b:
            chart(viz.join_curve(ens.joins, sorted(training)), "join_curve", PAGE)
    if len(ready) >= 2:
        fixed = st.toggle("Fixed heatmap scales (0 … ln 2, 0 … 1)", value=False,
                          help="Off: each heatmap's colours span its own values, so small differences show. "
                               "On: the largest possible value is the top colour, comparable across runs.")
        c, d = st.columns(2)
        with c:
            chart(viz.js_heatmap(fresh.predictive_js(ready), ready, title="predictive JS between members",
                                 fit=not fixed, high="the two members predict differently"), "pred_js", PAGE)
        with d:
            chart(viz.js_heatmap(fresh.disagreement(ready), ready, title="disagreement (test images)", zmax=1.0,
                                 fit=not fixed, high="their top-1 labels differ on more images"), "disagree", PAGE)
        picked = fresh.greedy_selection(ready)
        st.markdown("**Greedy selection** (validation NLL, NES forward selection): "
                    + ", ".join(f"{i + 1}. {n}" for i, n in enumerate(picked)))


def diversity_section() -> None:
    """Each finished member's accuracy against its distance from α*, and NES forward selection over them."""
    trained = view.finished_members()
    if not trained:
        st.info("No member has finished training yet: each finished member appears here.")
        return
    points = diversityview.member_points(view, trained)
    curve = diversityview.selection_curve(view.dir, trained)
    a, b = st.columns(2)
    with a:
        chart(diversityview.diversity_figure(points), "acc_vs_distance", PAGE)
        st.caption("Each finished member's test accuracy against the architecture JS between its genotype and "
                   "α*'s (0 … ln 2; the distance of the discrete cells, as on the architecture map). Grey: "
                   "α*'s own genotype retrained, its diversity from the seed alone (distance 0).")
    with b:
        chart(diversityview.selection_figure(curve), "selection_curve", PAGE)
        stop = next(r for r in curve if r["val_minimum"])
        st.caption(f"NES forward selection over all {len(trained)} finished members: the order comes from the "
                   "**validation** split only (each step adds the member that lowers the ensemble's validation NLL "
                   "most); the test set only scores each step, never chooses. Bars: paired bootstrap 95 % interval "
                   f"of the gain over the best member (**{curve[0]['member']}**, lowest validation NLL; dotted "
                   f"line). Validation NLL is lowest at {stop['step']} member(s).")


def strength_section() -> None:
    """Each finished member's validation NLL and its diversity D with α* against its distance from
    α*, beside α*'s own seeds (nes.explorer.frontier)."""
    fr = frontier.frontier(view)
    if fr.reason:
        st.info(fr.reason)
        return
    chart(frontier.frontier_figure(fr), "strength_frontier", PAGE)
    st.caption(frontier.frontier_caption(fr))


def page_stamp() -> tuple:
    """What this page's figures show, cheaply: the members' saved epochs and weights, and the jobs' states."""
    return view.members_stamp(names), job_states(run_id)


# -- the page: the key numbers first, then training, the members, the curves ----------------------
done = set(view.finished_members())
names = member_options([m.name for m in members], active_jobs(run_id, ("retrain",)))
chosen = choose_members(names)
seen = None  # what the figures below show; None (a file could not be read) redraws at the next chance
with friendly("read the members' files"):
    seen = page_stamp()
with friendly("show the ensemble's numbers"):
    headline_panel()

if writable("training members"):
    with st.expander("Train new members (each in a background worker; cores are shared, never oversubscribed)",
                     icon=":material/model_training:", expanded=not done):
        go, reg, lams, seed, star = train_form()
    if go:
        with friendly("start the members"):
            start_members(reg, lams, seed, star)
show_flash("ensemble")
skipped = st.session_state.pop("_members_skipped", None)
if skipped:
    st.warning(f"Already trained or training: {', '.join(skipped)} (pick another seed to train them again).")

chosen = st.multiselect("Members in the ensemble", names, key=MEMBERS_KEY,
                        help="The ensemble averages these members' probabilities; new members join it. The "
                             "page's link holds the choice.")
urlstate.apply(st.query_params, urlstate.members_fixes(st.query_params, urlstate.MEMBERS, chosen))
st.session_state["_url_members"] = chosen
finished = [n for n in chosen if n in done]
if st.button("Export these members", icon=":material/download:", disabled=not finished,
             help="Open the Export page with the finished members chosen here."):
    st.session_state[f"export_members_{run_id}"] = finished  # the Export page's member picker
    st.switch_page("pages/export.py", query_params={"run": st.query_params.get("run", ""), urlstate.EXPORT: finished})

# the jobs' progress is live; the figures redraw (the whole page reruns) when the members' files change
watch(lambda: jobs_table(run_id, ("retrain", "evaluate"), limit=8), page_stamp, seen, ("retrain", "evaluate"),
      "show the members' jobs")
with friendly("show the ensemble"):
    ensemble_panel()

st.subheader("Accuracy against diversity")
with friendly("show accuracy against diversity"):
    diversity_section()

st.subheader("Strength against diversity")
with friendly("show strength against diversity"):
    strength_section()
