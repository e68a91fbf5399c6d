"""Lesson: six short steps from "what is a cell" to "where did this ensemble's gain come from".

Each step holds the live widget it talks about, a "what to notice" box, a *predict, then reveal*
question and a link that opens the full page at that state. The step lives in the URL (`?step=N`),
so a link opens a step. Every text and number comes from `nes.explorer.lesson` (the selected run's
files); this page only draws.
"""
import streamlit as st

from nes.explorer import archmap, diversityview, lesson, viz
from nes.explorer.jobcontrols import readonly
from nes.method.regularizers import AXES, diversity_lam
from pages._state import arch_map, route_through_app, run_view, selected_run
from pages._widgets import cell_panel, chart, friendly, jobs_table, live, load_view

route_through_app()

PAGE_NAMES = {"pages/explore.py": "Explore", "pages/search.py": "Search", "pages/ensemble.py": "Ensemble",
              "pages/compare.py": "Compare"}


def go_to(n: int) -> None:
    """Put step `n` in the URL (the step selector and the buttons call this before the rerun)."""
    st.query_params["step"] = str(lesson.step_number(n))


def navigation() -> int:
    """The step selector and previous/next buttons, all writing `?step=N`; returns the step shown."""
    n = lesson.step_number(st.query_params.get("step"))
    if st.query_params.get("step") != str(n):  # absent or unusable: the URL says which step is shown
        go_to(n)
    st.session_state["lesson_step"] = n
    st.radio("Step", list(range(1, lesson.STEPS + 1)), key="lesson_step", horizontal=True,
             format_func=lambda i: f"{i}. {lesson.TITLES[i - 1]}",
             on_change=lambda: go_to(st.session_state["lesson_step"]))
    return n


def pager(n: int) -> None:
    a, b, _ = st.columns([1, 1, 4])
    a.button("Previous", key="lesson_prev", icon=":material/arrow_back:", disabled=n <= 1,
             on_click=go_to, args=(n - 1,))
    b.button("Next", key="lesson_next", icon=":material/arrow_forward:", disabled=n >= lesson.STEPS,
             on_click=go_to, args=(n + 1,))


def question_box(step: lesson.Step) -> None:
    """Predict, then reveal: the class's guess, then the run's answer with its numbers."""
    if step.question is None:
        st.info(step.missing or "This run cannot answer this step's question yet.")
        return
    q, key = step.question, f"lesson_reveal_{step.number}"
    st.markdown("**Predict, then reveal**")
    guess = st.radio(q.prompt, q.options, index=None, key=f"lesson_guess_{step.number}")
    if st.button("Reveal the run's answer", key=f"lesson_reveal_btn_{step.number}", icon=":material/visibility:"):
        st.session_state[key] = True
    if st.session_state.get(key):
        verdict = "" if guess is None else (" — your guess was right." if guess == q.answer else
                                            f" — the guess was “{guess}”.")
        st.success(f"**The run's answer: {q.answer}**{verdict} {q.why}")


def facts(step: lesson.Step) -> None:
    if step.facts:
        for col, (k, v) in zip(st.columns(len(step.facts)), step.facts.items()):
            col.metric(k, v)


def run_name() -> str:
    """The selected run's name, as `?run=` holds it."""
    return str(st.session_state.get("run") or "")


def link(step: lesson.Step, run_id: str) -> None:
    name = PAGE_NAMES.get(step.page, step.page)
    st.page_link(step.page, label=f"Open the {name} page at this state", icon=":material/open_in_new:",
                 query_params={"run": run_name(), **step.query})


def star_cells(view, title: str) -> None:
    for col, ct in zip(st.columns(len(view.layout.cell_types)), view.layout.cell_types):
        with col:
            chart(viz.cell_figure(view.star, ct, title=title.format(ct=ct)), f"lesson_star_{ct}", "lesson")


def widget_1(view, run_id):
    star_cells(view, "α* — {ct} cell")
    return lesson.step(view, 1)


def widget_2(view, run_id):
    cells = cell_panel(view, view.theta_star, view.star, title="α* weighted by its probabilities — {ct} cell",
                       key="lesson_alpha", page="lesson")
    for ct, (alpha, _) in cells.items():
        chart(viz.op_probability_bars(alpha, view.layout.nodes, view.star, ct), f"lesson_bars_{ct}", "lesson")
    return lesson.step(view, 2)


def widget_3(view, run_id):
    regs = view.regularizers()
    if not regs:
        return lesson.step(view, 3)
    c1, c2 = st.columns([1, 3])
    reg = c1.radio("Regularizer", regs, key="lesson_reg", horizontal=True)
    div = c2.slider("Diversity (0 = α*, 1 = most diverse)", 0.0, 1.0, 0.0, 0.125, key="lesson_div",
                    help=AXES[reg].lam)
    lo, hi = view.lam_range(reg).target
    lam = diversity_lam(reg, div, lo, hi)
    sample = view.sample(reg, [lam])[0]
    cell_panel(view, sample.theta, sample.genotype, reference=view.star, key="lesson_lam", page="lesson")
    with friendly("draw the architecture map"):
        amap = arch_map(run_id)
        chart(archmap.map_figure(amap, at={reg: lam}), "lesson_map", "lesson")
        st.caption(f"The ring is this λ on the {reg} path (Kruskal stress-1 {amap.stress:.3f}: "
                   f"{archmap.stress_words(amap.stress)}).")
    return lesson.step(view, 3, reg, div)


def widget_4(view, run_id):
    names = view.finished_members()
    if names:
        a, b = st.columns(2)
        with a:
            chart(diversityview.diversity_figure(diversityview.member_points(view, names)), "lesson_acc_div", "lesson")
        if len(names) >= 2:
            with b:
                chart(viz.js_heatmap(view.predictive_js(names), names, title="predictive JS between members",
                                     fit=True, high="the two members predict differently"), "lesson_pred_js", "lesson")
    return lesson.step(view, 4)


def widget_5(view, run_id):
    if readonly():
        st.caption(":material/lock: Classroom mode (read-only): training a member is not offered; the ensemble "
                   "below is the run's, as trained.")
    else:
        st.page_link("pages/ensemble.py", label="Train a member on the Ensemble page (its form), then come back",
                     icon=":material/model_training:", query_params={"run": run_name()})

    def panel() -> None:
        jobs_table(run_id, ("retrain",), limit=4)
        fresh = run_view(run_id)
        names = fresh.finished_members()
        if len(names) >= 2:
            series = {n: [(e, m["accuracy"]) for e, m in fresh.member_curve(n)] for n in names}
            series["ensemble"] = [(e, m["accuracy"]) for e, m in fresh.ensemble_curve(names)]
            st.plotly_chart(viz.metric_curves(series, "test accuracy per epoch", "epoch", "accuracy"),
                            key="lesson_live")

    live(panel, ("retrain",), "show the ensemble")
    return lesson.step(view, 5)


def widget_6(view, run_id):
    step = lesson.step(view, 6)
    if step.table:
        st.dataframe(step.table, hide_index=True, width="stretch")
        st.caption("NLL = mean member NLL − diversity D, exactly; severity 0 is the test images clean, the last "
                   "the eight test corruptions at their strongest, pooled.")
    return step


run_id = selected_run()
view = load_view(run_id)
st.header("Lesson: from a cell to an ensemble's gain")
if not view.has_search:
    st.info("This run has no finished search yet: the lesson starts from one (start it on the **Search** page, "
            "or pick the demo run in the sidebar).")
    st.stop()
n = navigation()
st.subheader(f"Step {n} of {lesson.STEPS}: {lesson.TITLES[n - 1]}")
with friendly(f"show step {n} of the lesson"):
    step = [widget_1, widget_2, widget_3, widget_4, widget_5, widget_6][n - 1](view, run_id)
    facts(step)
    st.info(f"**What to notice:** {step.notice}", icon=":material/lightbulb:")
    question_box(step)
    link(step, run_id)
pager(n)
