"""Compare: EdgeNES ensembles against the baselines a user would otherwise run."""
import streamlit as st

from nes.explorer import viz
from nes.explorer.actions import start_baseline
from nes.method.baselines import METHODS
from nes.method.stats import Difference
from pages._state import route_through_app, selected_run, store
from pages._widgets import friendly, jobs_table, live, load_view, teach

route_through_app()

st.header("Compare with the baselines")
teach("What are the baselines?", r"""
All methods build an ensemble of M members with the same member training, so only the choice of
architectures differs:
- **DeepEns**: α\* retrained with M seeds (Deep Ensembles);
- **DARTS ensemble**: M independent DARTS searches, one member each (M times the search cost);
- **random deviation**: α\* with a few edges replaced at random;
- **NES-RS / NES-RE**: Neural Ensemble Search: random genotypes, or regularized evolution
  (one-edge mutations), trained within a budget, then greedy forward selection on validation;
- **per-λ search**: one regularized search per λ (what the hypernetwork replaces);
- **EdgeNES (js / edges)**: a pool of α(λ) members on a λ grid, forward selection of M.

**Cost** is training device-seconds: searches and hypernetwork training, plus every member
trained (the NES methods pay for their whole pool). **What to look at:** does EdgeNES reach the
accuracy and NLL of the other ensembles at a fraction of the DARTS ensemble's search cost?""")

run_id = selected_run()
view = load_view(run_id)

with st.form("new_baseline"):
    st.markdown("**Run a method** on this run (background worker; members use the run's member settings)")
    c1, c2, c3, c4 = st.columns(4)
    method = c1.selectbox("Method", list(METHODS),
                          help="How the M architectures are chosen (see 'What are the baselines?' above); "
                               "edgenes-<regularizer> needs that hypernetwork trained on this run.")
    members = c2.number_input("Ensemble size M", min_value=1, max_value=20, value=3,
                              help="Members of the final ensemble; each is retrained with the run's member "
                                   "settings, so the cost grows with M.")
    budget = c3.number_input("Budget (NES pool / EdgeNES λs; 0 = 2·M)", min_value=0, max_value=200, value=0,
                             help="NES-RS / NES-RE: members trained in all before forward selection keeps M; "
                                  "EdgeNES: λ values sampled for its pool. Ignored by the other methods.")
    seed = c4.number_input("Seed", min_value=0, max_value=10_000, value=0,
                           help="Member i trains with seed 1000·seed + i, the same for every method, so two "
                                "methods of one seed differ only in their architectures.")
    go = st.form_submit_button("Start", type="primary")
if go:
    with friendly("start the method"):
        job = start_baseline(store(), run_id, view, method, int(members), int(seed), int(budget))
        st.success(f"Job #{job} queued: {method} with M = {members}.")


def differences_table(records: list[dict]) -> None:
    """Each method against a reference method of the same seed, with its 95 % interval."""
    methods = sorted({r["method"] for r in records})
    if len(methods) < 2:
        return
    ref = st.selectbox("Compare against", methods, index=methods.index("deepens") if "deepens" in methods else 0,
                       help="Each method's ensemble minus this method's ensemble of the same seed, on the same "
                            "test images.")
    diffs = load_view(run_id).method_differences(ref)
    if not diffs:
        st.caption(f"No method shares a seed and test images with {ref}.")
        return
    st.dataframe([{"method": d["method"], "seed": d["seed"], f"Δ accuracy vs {ref}": Difference.from_dict(d["accuracy"]).text(),
                   f"Δ NLL vs {ref}": Difference.from_dict(d["nll"]).text()} for d in diffs],
                 hide_index=True, width="stretch")
    n = Difference.from_dict(diffs[0]["accuracy"]).n
    st.caption(f"Paired bootstrap 95 % intervals over the {n} test images (accuracy in points; NLL lower is better). "
               "*Within noise*: the interval contains 0, so this test set cannot tell the two methods apart. "
               "Over several seeds, also look at the spread of the rows above.")


def compare_panel() -> None:
    jobs_table(run_id, ("baseline",), limit=6)
    records = load_view(run_id).baselines()
    if not records:
        st.info("No finished method on this run yet. Start one above (DeepEns is the cheapest), or run "
                "`python benchmarks/compare.py` for the full comparison over seeds.")
        return
    rows = [{"method": r["method"], "seed": r["seed"], "members": len(r["members"]),
             "accuracy %": round(100 * r["ensemble"].get("accuracy", float("nan")), 2),
             "NLL": round(r["ensemble"].get("nll", float("nan")), 4), "ECE": round(r["ensemble"].get("ece", float("nan")), 4),
             "disagreement": round(r["ensemble"].get("disagreement", float("nan")), 3),
             "search cost s": round(r["costs"]["search_seconds"], 1), "total cost s": round(r["costs"]["total_seconds"], 1)}
            for r in records]
    st.dataframe(rows, hide_index=True, width="stretch")
    over_seeds = viz.seed_summary(records)
    if over_seeds:
        st.markdown("**Over seeds** (mean ± std of the seeds' ensembles)")
        st.dataframe(over_seeds, hide_index=True, width="stretch")
    differences_table(records)
    by_method: dict[str, list] = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    figs = viz.compare_figures(by_method)
    a, b = st.columns(2)
    a.plotly_chart(figs["accuracy_vs_size"], key="acc_size")
    b.plotly_chart(figs["accuracy_vs_cost"], key="acc_cost")
    c, d = st.columns(2)
    c.plotly_chart(figs["nll_vs_size"], key="nll_size")
    d.plotly_chart(figs["ece_vs_size"], key="ece_size")


with friendly("show the comparison"):
    live(compare_panel, ("baseline",), "show the comparison")
