"""Explore: move λ and watch the architecture α(λ) leave α*; compare architectures pairwise."""
import streamlit as st

from nes.explorer import viz
from nes.method.diversity import lam_grid
from pages._state import route_through_app, selected_run
from pages._widgets import cell_panel, friendly, load_view, teach

route_through_app()

st.header("Explore the architecture family α(λ)")
teach("What am I looking at?", r"""
**DARTS** searches a *cell*: a small graph whose inputs are the outputs of the two previous cells
(c_{k-2}, c_{k-1}), whose intermediate nodes each take an input through one operation (a
convolution, a pooling, a skip), and whose output c_k concatenates the intermediate nodes. The
search learns **α**, a probability for every operation on every possible edge; keeping the most
likely ones gives the base architecture **α\***.

The **hypernetwork α(λ)** was trained so that the diversity parameter **λ** controls how far the
architecture moves from α\*. Its meaning depends on the regularizer it was trained with:
- **edges**: λ is the *number of edges shared with α\**: λ = Λ (the largest value) reproduces
  α\*, λ = 0 asks for a cell with nothing in common;
- **js**: λ weights a push away from α\* in Jensen–Shannon divergence: λ = 0 applies no push,
  larger λ pushes further.

Edges that differ from α\* are drawn in orange and marked "≠ α\*". Two measures of distance:
- **matched edges**: how many (node, input, operation) choices the sampled cell shares with α\*;
- **JS to α\***: the Jensen–Shannon divergence between the two architectures' probability tables,
  averaged over edges and nodes (0 = identical, ln 2 ≈ 0.69 = nothing in common).

**What to look at:** slide λ away from α\* and watch which edges change first; pick several λ below and check in
the heatmap that architectures far apart in λ are far apart in JS — that is the diversity an
ensemble needs.""")

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
            st.plotly_chart(viz.cell_figure(view.star, ct, title=f"α* — {ct} cell"), key=f"star_{ct}")
        st.stop()

    c1, c2 = st.columns([1, 3])
    reg = c1.radio("Regularizer", regs, key="reg", bind="query-params", horizontal=True,
                   help="edges: λ is the number of edges that should differ from α*. "
                        "js: λ weights a push away from α* in Jensen–Shannon divergence.")
    lo, hi = view.lam_bounds(reg)
    raw = st.query_params.get("lam")
    if raw is not None:
        try:
            bad = not lo <= float(raw) <= hi
        except ValueError:
            bad = True
        if bad:
            st.warning(f"λ = {raw!r} from the link is not a number in the trained range [{lo:g}, {hi:g}]; "
                       f"showing λ = {view.star_lam(reg):g}.")
    star_lam = view.star_lam(reg)
    lam = c2.slider("λ (diversity)", min_value=float(lo), max_value=float(hi), value=star_lam,
                    step=round((hi - lo) / 40, 3) or 0.05, key="lam", bind="query-params",
                    help=("edges: λ = number of edges shared with α* (the right end is α*). " if reg == "edges" else
                          "js: λ = strength of the push away from α* (the left end is no push). ")
                    + f"Trained range [{lo:g}, {hi:g}].")

    sample = view.sample(reg, [lam])[0]
    m1, m2, m3 = st.columns(3)
    m1.metric("Matched edges with α*", f"{sample.matched_edges} / {view.star.num_edges()}")
    m2.metric("JS to α*", f"{sample.js_to_star:.3f}", help="0 = α*, ln 2 ≈ 0.693 = nothing in common")
    m3.metric("Distinct from α*", "yes" if sample.genotype != view.star else "no (α*)")
    st.caption(f"Genotype at λ = {lam:g}: `{sample.genotype.compact()}`")

    cells = cell_panel(view, sample.theta, sample.genotype, reference=view.star)
    with st.expander("Per-edge operation probabilities at this λ"):
        for ct, (alpha, _) in cells.items():
            st.plotly_chart(viz.op_probability_bars(alpha, view.layout.nodes, sample.genotype, ct), key=f"bars_{ct}")

st.subheader("Pairwise architecture divergence")
with friendly("compare architectures"):
    grid = [round(x, 2) for x in lam_grid(lo, hi, 9)]
    sel = st.multiselect("λ values to compare", grid, default=[grid[0], grid[4], grid[-1]], key="sel",
                         bind="query-params", help="Each λ gives one architecture; the heatmap shows the "
                         "architecture JS between every pair on a fixed 0…ln 2 scale.")
    if len(sel) < 2:
        st.info("Pick at least two λ values.")
    else:
        sel = sorted(sel)
        samples = view.sample(reg, sel)
        labels = [f"λ={s.lam:g}" for s in samples]
        st.plotly_chart(viz.js_heatmap(view.pairwise_js(samples), labels, title="architecture JS between α(λ)"),
                        key="js_heatmap")
        n_unique = len({s.genotype for s in samples})
        st.caption(f"{n_unique} distinct genotype(s) among {len(samples)} λ values.")

st.subheader("Side-by-side difference of two architectures")
with friendly("compare two genotypes"):
    options = ["α*"] + [f"λ={x:g}" for x in grid]
    a_col, b_col = st.columns(2)
    a = a_col.selectbox("A", options, index=0, key="diff_a")
    b = b_col.selectbox("B", options, index=len(options) - 1, key="diff_b")

    def genotype_of(label: str):
        return view.star if label == "α*" else view.sample(reg, [float(label[2:])])[0].genotype

    ga, gb = genotype_of(a), genotype_of(b)
    st.dataframe(viz.genotype_diff(ga, gb), hide_index=True, width="stretch")
    st.caption(f"{ga.matched_edges(gb)} of {ga.num_edges()} edges in common.")
