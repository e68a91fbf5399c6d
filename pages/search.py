"""Search: run DARTS in the background and look at the base architecture α*.

The figures of α* and of the replay have their HTML snapshots beside them; the live curve of a
running search (`running_curve`) stays a plain figure, redrawn every few seconds while it runs."""
import streamlit as st

from nes.config import ARCH_EVERY_CHOICES, SEARCH_MODES, SEARCH_PRESETS
from nes.data import DATASETS
from nes.explorer import replay, viz
from nes.explorer.actions import start_search
from nes.layout import RunDir
from pages._state import route_through_app, show_run, store
from pages._widgets import (cell_panel, chart, flash, friendly, live, load_view, running_curve, show_flash, teach,
                           url_choice, writable)

route_through_app()

st.header("DARTS search: the base architecture α*")
teach("What does the search do?", r"""
The **supernet** contains every candidate operation on every edge of the cell, mixed with weights
softmax(α). **DARTS** alternates two steps: the network weights w take a gradient step on a
training batch, then the architecture parameters **α** take a step on a validation batch. At the
end, each node keeps its most likely input and operation: that is **α\*** (the *genotype*).

**What to look at:** the op-weight heatmap shows how sure the search is. A row with one dark cell
is a clear choice; a flat row means the search could not tell the operations apart — exactly where
the hypernetwork can find diverse but equally good alternatives.""")

run_id = st.session_state.get("run_id")

go = False
has_search = bool(run_id) and RunDir(run_id).has_search  # a run with α* shows it first, the form folded
if writable("starting a search"):
    with st.expander("Start a new search", icon=":material/add:", expanded=not has_search):
        with st.form("new_search"):
            st.markdown("**Start a new search** (runs in a background worker; you can leave this page)")
            c1, c2, c3 = st.columns(3)
            name = c1.text_input("Run name", value="", placeholder="e.g. fashion-1",
                                 help="A new folder in the run store. An existing run with a search resumes it.")
            dataset = c2.selectbox("Dataset", list(DATASETS), index=list(DATASETS).index("fashion-mnist"),
                                   help="fashion-mnist: Debian package dataset-fashion-mnist or a data dir; "
                                        "digits: always available (8×8 images, scikit-learn).")
            preset = c3.selectbox("Preset", list(SEARCH_PRESETS), index=1,
                                  help="smoke: seconds (digits-sized); quick: a few minutes on 2 CPU cores; "
                                       "paper: the original experiment (50 epochs, needs a GPU to be pleasant).")
            d1, d2, d3, d4 = st.columns(4)
            epochs = d1.number_input("Epochs (0 = preset's)", min_value=0, max_value=500, value=0,
                                     help="Passes over the search's training data, each alternating weight steps and "
                                          "α steps. More epochs give a surer α*, at proportional cost. 0 keeps the "
                                          "preset's.")
            c = d2.number_input("Channels C (0 = preset's)", min_value=0, max_value=64, value=0,
                                help="Channels of the first cell of the supernet (doubled at each reduction). More is "
                                     "slower and closer to the members' network. 0 keeps the preset's.")
            nodes = d3.number_input("Nodes per cell", min_value=1, max_value=8, value=4,
                                    help="Intermediate nodes of a cell; each picks its input(s) and an operation. "
                                         "4 as in DARTS; fewer is faster and a smaller search space.")
            k = d4.selectbox("Inputs kept per node", [1, 2], index=0, help="1 as in EdgeNES; 2 as in classic DARTS")
            e1, e2, e3 = st.columns(3)
            mode = e1.selectbox("Search mode", list(SEARCH_MODES), index=0, format_func=lambda m: f"{m}: {SEARCH_MODES[m]}",
                                help="Cheaper search steps: PC-DARTS partial channels or GDAS sampling "
                                     "(benchmarks/bench_search.py measures their step time and α* quality).")
            low = e2.selectbox("Search resolution", [0, 1, 2], index=0,
                               format_func=lambda f: "the preset's" if f == 0 else "full" if f == 1 else f"1/{f}",
                               help="Search on images shrunk by this factor (members still train at full "
                                    "resolution). The quick preset searches at 1/2.")
            every = e3.selectbox("Architecture step", [0, 1, 2, 4], index=0, format_func=ARCH_EVERY_CHOICES.get,
                                 help="Update α on every k-th step only, at k× its learning rate: a step without "
                                      "it costs about 0.6× one with it. The quick preset takes every 4th (the same "
                                      "α* as every step).")
            chain = st.checkbox("Then train the hypernetwork (edges regularizer)", value=True,
                                help="Queue the edges hypernetwork α(λ) to start when the search ends (other "
                                     "regularizers: the Hypernetwork page).")
            go = st.form_submit_button("Start search", type="primary")

if go:
    with friendly("start the search"):
        sets = {"nodes": str(nodes), "inputs_per_node": str(k), "mode": mode}
        if low:
            sets["downsample"] = str(low)
        if epochs:
            sets["epochs"] = str(epochs)
        if c:
            sets["channels"] = str(c)
        if every:
            sets["arch_every"] = str(every)
        job = start_search(store(), name, dataset, preset, sets, then_hypernet=chain)
        show_run(name.strip())
        flash("search", f"Search job #{job} queued for run **{name.strip()}**; it is now the selected run.")
        st.rerun()
show_flash("search")

if not run_id:
    st.stop()


def search_panel() -> None:
    running_curve(run_id, "search", "search in progress", limit=3)


with friendly("show the search progress"):
    live(search_panel, what="show the search progress")

view = load_view(run_id)
with friendly("show α*"):
    if view.has_search:
        st.subheader("The searched architecture α*")
        st.caption(f"`{view.star.compact()}`")
        conf, hist = view.search_confidence(), view.search_history()
        k1, k2, k3 = st.columns(3)
        k1.metric("Kept-edge top-op probability", f"{conf['kept_top_op']:.2f}",
                  help="Mean probability of the chosen op on α*'s kept edges: 1/7 ≈ 0.14 is uniform (a coin flip); "
                       "≥ 0.4 is a clear choice.")
        k2.metric("Input margin", f"{conf['input_margin']:.2f}",
                  help="Mean gap between each node's chosen input and the next one (0 = undecided).")
        k3.metric("Genotype stable for", f"{conf['stable_epochs']} of {conf['epochs']} epochs" if conf["epochs"] else "–",
                  help="How many final epochs ended with the same genotype (searches of earlier versions do not record it).")
        if conf["kept_top_op"] < 0.25:
            st.warning("α* is close to uniform: the search could hardly tell the operations apart, so 'matched edges' "
                       "are close to coin flips. Search longer or with a larger architecture learning rate (a_lr).")
        cells = cell_panel(view, view.theta_star, view.star, title="α* — {ct} cell", key="star", page="search")
        for ct, (alpha, _) in cells.items():
            chart(viz.alpha_heatmap(alpha, view.layout.nodes, view.star, ct), f"alpha_{ct}", "search")
        if hist:
            series = {k: [(h["epoch"], h[k]) for h in hist if k in h] for k in ("train_acc", "val_acc")}
            chart(viz.metric_curves(series, "search history", "epoch", "accuracy"), "search_hist", "search")
    else:
        st.info("No finished search in this run yet.")


def replay_panel() -> None:
    """The search replayed: a slider over the recorded moments redraws the cell graphs and the op
    probabilities of θ at that moment; a chart counts the kept edges that change per moment."""
    rep = replay.load_replay(view.dir, view.layout)
    st.subheader("Replay the search")
    if rep is None:
        st.caption(replay.MISSING_NOTE)
        return
    st.caption("θ as the search went: recorded after ¼, ½ and ¾ of the first epoch and at the end of every "
               "epoch. Edges marked ≠ α* are choices the search had not settled on yet.")
    k = len(rep) - 1
    if len(rep) > 1:
        url_choice("moment", range(len(rep)), "search moment")
        k = st.select_slider("Moment of the search", options=list(range(len(rep))), value=k, format_func=rep.label,
                             key="moment", bind="query-params",
                             help="Redraws the cell and the op probabilities with θ as it was at that moment; "
                                  "the last moment is α*.")
    g = rep.genotypes[k]
    st.caption(f"At {rep.label(k)}: `{g.compact()}`, {replay.changed_edges(g, view.star)} kept edge(s) differ from α*")
    cells = cell_panel(view, rep.theta[k], g, reference=view.star, title=f"replay, {rep.label(k)} — {{ct}} cell",
                       key="replay", page="search")
    for ct, (alpha, _) in cells.items():
        chart(viz.op_probability_bars(alpha, view.layout.nodes, g, ct,
                                      title=f"op probabilities per edge ({ct}), {rep.label(k)}"), f"replay_bars_{ct}",
              "search")
    chart(replay.changes_figure(rep, view.star, at=k), "replay_changes", "search")


if view.has_search:
    with friendly("replay the search"):
        replay_panel()
