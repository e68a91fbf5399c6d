"""Explore: move λ and watch the architecture α(λ) leave α*; compare architectures pairwise."""
import streamlit as st

from nes.explorer import archmap, mapclick, notes, urlstate, viz
from nes.method.oneshot import one_shot_accuracy
from nes.method.regularizers import AXES, diversity_lam
from pages._state import arch_map, map_trust, route_through_app, selected_run
from pages._widgets import cell_panel, chart, friendly, load_view, teach

route_through_app()

st.header("Explore the architecture family α(λ)")
teach("What am I looking at?", r"""
**DARTS** searches a *cell*: a small graph whose inputs are the outputs of the two previous cells
(c_{k-2}, c_{k-1}), whose intermediate nodes each take an input through one operation (a
convolution, a pooling, a skip), and whose output c_k concatenates the intermediate nodes. The
search learns **α**, a probability for every operation on every possible edge; keeping the most
likely ones gives the base architecture **α\*** (genotype\*).

The **hypernetwork α(λ)** was trained so that a parameter **λ** moves the architecture away from
α\*. The slider is one **diversity axis** for every regularizer: **0 is α\*** (exactly: that end of
a hypernetwork trained by this version is pinned to α\*), **1 the most diverse** architecture it was trained for; the λ it
stands for is shown beside it. What λ means:
""" + "\n".join(f"- **{name}**: {axis.lam} (control: {axis.strength})." for name, axis in AXES.items()) + r"""

Each edge is drawn in its operation's colour (the legend names them); edges that differ from α\*
are haloed in vermillion and marked "≠ α\*". Two measures of distance:
- **matched edges**: how many (node, input, operation) choices the sampled cell shares with α\*;
- **distance to α\***: the Jensen–Shannon divergence JS_g between the two architectures' probability
  tables on genotype\*'s own edges and nodes, averaged (0 at α\* by construction).

**What to look at:** slide away from α\* and watch which edges change first; pick several positions
below and check in the heatmaps that architectures far apart on the axis are far apart in JS and
differ in edges — that is the diversity an ensemble needs.""")

run_id = selected_run()
view = load_view(run_id)
with friendly("show the architecture at this λ"):
    if not view.has_search:
        st.info("This run has no finished search yet: start one on the **Search** page.")
        st.stop()
    regs = view.regularizers()
    if not regs:
        st.info("This run has no trained hypernetwork yet: train one on the **Hypernetwork** page. "
                "Meanwhile, this is the searched architecture α*:")
        for ct in view.layout.cell_types:
            chart(viz.cell_figure(view.star, ct, title=f"α* — {ct} cell"), f"star_{ct}", "explore")
        st.stop()

    url = urlstate.read_explore(st.query_params, regs, lambda r: view.lam_range(r).target)
    for w in url.warnings:
        st.warning(w)
    urlstate.apply(st.query_params, url.fixes)
    st.session_state.update(url.widget_fixes())
    c1, c2 = st.columns([1, 3])
    reg = c1.radio("Regularizer", regs, key="reg", bind="query-params", horizontal=True,
                   help=" ".join(f"{r}: {AXES[r].lam}." for r in regs))
    lo, hi = view.lam_range(reg).target
    div = c2.slider("Diversity (0 = α*, 1 = most diverse)", min_value=0.0, max_value=1.0, step=urlstate.DIVERSITY_STEP,
                    key="div", bind="query-params", help=AXES[reg].lam + f". Trained λ range [{lo:g}, {hi:g}].")
    lam = diversity_lam(reg, div, lo, hi)
    c2.caption(f"λ = {lam:.3g} ({reg}: {AXES[reg].lam}); control {AXES[reg].strength}.")

    sample = view.sample(reg, [lam])[0]
    m1, m2, m3 = st.columns(3)
    m1.metric("Matched edges with α*", f"{sample.matched_edges} / {view.star.num_kept_edges()}")
    m2.metric("Distance to α*", f"{sample.distance:.3f}",
              help="JS_g on genotype*'s edges and nodes: 0 = α*, the top of the axis is the farthest trained")
    m3.metric("Distinct from α*", "yes" if sample.genotype != view.star else "no (α*)")
    st.caption(f"Genotype at diversity {div:g} (λ = {lam:.3g}): `{sample.genotype.compact()}`")
    note = view.flaws_note(sample.genotype)
    if note:
        st.warning(f"Heads-up: {note}.")

    cells = cell_panel(view, sample.theta, sample.genotype, reference=view.star, page="explore")
    with st.expander("Per-edge operation probabilities at this λ"):
        for ct, (alpha, _) in cells.items():
            chart(viz.op_probability_bars(alpha, view.layout.nodes, sample.genotype, ct), f"bars_{ct}", "explore")

st.subheader("The architecture map")
point = None
with friendly("draw the architecture map"):
    amap = arch_map(run_id)
    event = chart(archmap.map_figure(amap, at={reg: lam}), "arch_map", "explore", on_select="rerun",
                  selection_mode="points")
    st.caption(f"Every architecture of this run placed so that distances on the page follow the architecture "
               f"divergence (Kruskal stress-1 {amap.stress:.3f}: {archmap.stress_words(amap.stress)}). "
               f"The ring is the slider's λ on the {reg} path; members are coloured by test accuracy. "
               "**Click a point of a path** to see that architecture at once, without training. "
               "`python -m nes map --run RUN --out map.html` writes the same map as one HTML file.")
    for n in amap.notes:
        st.caption(n)
    point = mapclick.picked(amap, (event or {}).get("selection", {}).get("points", []))
if point is not None:
    with friendly("show the clicked architecture"):
        st.markdown(f"**Clicked:** `{point.genotype.compact()}` ({point.label})")
        cols = st.columns(len(view.layout.cell_types))
        for col, ct in zip(cols, view.layout.cell_types):
            with col:
                chart(viz.cell_figure(point.genotype, ct, reference=view.star, title=f"clicked — {ct} cell"),
                      f"clicked_{ct}", "explore")
        trust = map_trust(run_id)
        st.markdown(mapclick.estimate_text(point, one_shot_accuracy(trust.setup, point.genotype), trust))

st.subheader("Pairwise architecture divergence")
with friendly("compare architectures"):
    grid = list(urlstate.POSITIONS)
    sel = st.multiselect("Diversity positions to compare", grid, default=[grid[0], grid[4], grid[-1]], key="sel",
                         bind="query-params",
                         help="Each position gives one architecture: left, the continuous architecture JS "
                              "between every pair (all edges, fixed 0…ln 2 scale); right, how many kept edges differ.")
    if len(sel) < 2:
        st.info("Pick at least two positions.")
    else:
        sel = sorted(sel)
        samples = view.sample(reg, [diversity_lam(reg, d, lo, hi) for d in sel])
        labels = [f"d={d:g} (λ={s.lam:.3g})" for d, s in zip(sel, samples)]
        js = view.pairwise_js(samples)
        h1, h2 = st.columns(2)
        with h1:
            chart(viz.js_heatmap(js, labels, title="architecture JS (all edges)"), "js_heatmap", "explore")
        with h2:
            chart(viz.diff_heatmap([s.genotype for s in samples], labels), "diff_heatmap", "explore")
        n_unique = len({s.genotype for s in samples})
        st.caption(f"{n_unique} distinct genotype(s) among {len(samples)} positions.")
        why = notes.distance_note(sel, [s.distance for s in samples], js[0].tolist())
        if why:
            st.caption(why)

st.subheader("Side-by-side difference of two architectures")
with friendly("compare two genotypes"):
    options = ["α*"] + [f"diversity {x:g}" for x in grid]
    a_col, b_col = st.columns(2)
    a = a_col.selectbox("A", options, index=0, key="diff_a")
    b = b_col.selectbox("B", options, index=len(options) - 1, key="diff_b")

    def genotype_of(label: str):
        if label == "α*":
            return view.star
        return view.sample(reg, [diversity_lam(reg, float(label.split()[-1]), lo, hi)])[0].genotype

    ga, gb = genotype_of(a), genotype_of(b)
    st.dataframe(viz.genotype_diff(ga, gb), hide_index=True, width="stretch")
    st.caption(f"{ga.matched_edges(gb)} of {ga.num_kept_edges()} edges in common.")
