"""Compare: EdgeNES ensembles against the baselines a user would otherwise run.

Every figure has its HTML snapshot beside it, the live panel's too: it redraws only while a method
runs, and the snapshot is made on click."""
import streamlit as st

from nes.explorer import leversview, shiftview, verdict, viz
from nes.explorer.actions import start_baseline, start_levers, start_shift
from nes.method.baselines import METHODS
from nes.method.stats import Difference
from pages._state import route_through_app, selected_run, store
from pages._widgets import chart, friendly, jobs_table, live, load_view, teach, url_choice, writable

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
trained (the NES methods pay for their whole pool). This run's own EdgeNES ensemble (its finished
members, α\* included) is listed beside the baselines, and every method gets a verdict against a
reference at equal members and at equal cost. **What to look at:** does EdgeNES reach the accuracy
and NLL of the other ensembles at a fraction of the DARTS ensemble's search cost?""")

run_id = selected_run()
view = load_view(run_id)

go = False
if writable("running a method"):
    with st.expander("Run a method", icon=":material/add:", expanded=not view.baselines()):
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
    """Each method against a reference method of the same seed: the paired differences with their
    95 % intervals, the gain ledger's terms, and the verdict at equal members and at equal cost."""
    methods = sorted({r["method"] for r in records})
    if len(methods) < 2:
        return
    url_choice("ref", methods, "reference method")
    ref = st.selectbox("Compare against", methods, index=methods.index("deepens") if "deepens" in methods else 0,
                       key="ref", bind="query-params",
                       help="Each method's ensemble minus this method's ensemble of the same seed, on the same "
                            "test images.")
    found = verdict.verdicts(run_id, ref)
    if not found:
        st.caption(f"No method shares a seed and test images with {ref}.")
        return
    st.dataframe([verdict_row(v, ref) for v in found], hide_index=True, width="stretch")
    n = Difference.from_dict(found[0]["equal_members"]["accuracy"]).n
    st.caption(f"Paired bootstrap 95 % intervals over the {n} test images, at equal members (the first m of each "
               "ensemble; accuracy in points; NLL lower is better). *Within noise*: the interval contains 0, so "
               "this test set cannot tell the two methods apart. The NLL difference splits exactly into member "
               "strength (mean member NLL) minus diversity (the Jensen gap). Over several seeds, also look at "
               "the spread of the rows above.")
    st.markdown("**Verdicts** (at equal members, and at equal cost)")
    for v in found:
        st.markdown(f"- **{verdict.label(v['method'])}** (seed {v['seed']}) vs {verdict.label(ref)}: "
                    + " ".join(v["sentences"]))


def verdict_row(v: dict, ref: str) -> dict:
    same, led = v["equal_members"], v["equal_members"]["ledger"]
    text = lambda d: Difference.from_dict(d).text()  # noqa: E731
    return {"method": v["method"], "seed": v["seed"], "members": " vs ".join(map(str, same["members"])),
            f"Δ accuracy vs {ref}": text(same["accuracy"]), f"Δ NLL vs {ref}": text(same["nll"]),
            "Δ member strength (mean member NLL)": text(led["mean_member_nll"]),
            "Δ diversity (Jensen gap)": text(led["diversity_nll"])}


def record_row(r: dict) -> dict:
    e, b = r["ensemble"], r["budget"]
    return {"method": r["method"], "seed": r["seed"], "members": len(r["members"]),
            "accuracy %": round(100 * e.get("accuracy", float("nan")), 2), "NLL": round(e.get("nll", float("nan")), 4),
            "ECE": round(e.get("ece", float("nan")), 4), "disagreement": round(e.get("disagreement", float("nan")), 3),
            "networks trained": b["networks"]["total"], "hypernetworks": b["networks"]["hypernetworks"],
            "search s": round(b["seconds"]["search"], 1), "hypernetwork s": round(b["seconds"]["hypernetwork"], 1),
            "members s": round(b["seconds"]["members"], 1), "device-seconds": round(b["seconds"]["total"], 1)}


def compare_panel() -> None:
    jobs_table(run_id, ("baseline",), limit=6)
    records = verdict.records(run_id)
    if not records:
        st.info("No finished method on this run yet. Start one above (DeepEns is the cheapest), or run "
                "`python benchmarks/compare.py` for the full comparison over seeds.")
        return
    st.dataframe([record_row(r) for r in records], hide_index=True, width="stretch")
    st.caption(f"`{verdict.OWN}`: this run's own ensemble (its finished members, α\\* included). Networks trained: "
               "members (whole pools included) plus searches; hypernetworks apart. Device-seconds: search + "
               "hypernetwork + members, as the training loops recorded them.")
    over_seeds = viz.seed_summary(records)
    if over_seeds:
        st.markdown("**Over seeds** (mean ± std of the seeds' ensembles)")
        st.dataframe(over_seeds, hide_index=True, width="stretch")
    with friendly("compare the methods"):
        differences_table(records)
    by_method: dict[str, list] = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    figs = viz.compare_figures(by_method)
    rows = [[("accuracy_vs_size", "acc_size"), ("accuracy_vs_cost", "acc_cost")],
            [("nll_vs_size", "nll_size"), ("ece_vs_size", "ece_size")]]
    for row in rows:
        for col, (name, key) in zip(st.columns(2), row):
            with col:
                chart(figs[name], key, "compare")


with friendly("show the comparison"):
    live(compare_panel, ("baseline",), "show the comparison")


def levers_panel() -> None:
    """The best EdgeNES-derived ensemble against DeepEns, lever by lever, clean and under shift."""
    st.subheader("What diversity is worth: EdgeNES levers against DeepEns")
    jobs_table(run_id, ("levers",), limit=3)
    rep = leversview.load(run_id)
    if rep is None:
        st.info("No levers report on this run yet: start one below, or run "
                f"`python -m nes levers --run {run_id}` (it needs finished members and a DeepEns baseline).")
        return
    if not leversview.fresh(run_id, rep):
        st.warning("This report was made from other members than the run has now (a member was added or "
                   "retrained since): recompute it below.")
    protocol = "clean"
    if len(leversview.protocols(rep)) > 1:
        url_choice("levers_protocol", leversview.protocols(rep), "selection protocol")
        protocol = st.radio("Levers chosen on", leversview.protocols(rep), horizontal=True, key="levers_protocol",
                            bind="query-params",
                            help="Where members, forward selections, temperatures and the best lever are chosen: "
                                 "clean: the clean validation split; shifted: that split under the validation "
                                 "corruptions (never the test ones). The test set is scored once either way.")
    for line in leversview.verdict(rep, protocol=protocol):
        st.markdown(("- " if not line.startswith("**") else "") + line)
    levels = leversview.severities(rep, protocol)
    severity = levels[0]
    if len(levels) > 1:  # a report made with --no-shift has the clean test set alone
        url_choice("levers_severity", levels, "severity")
        severity = st.select_slider("Shift severity (0: the full clean test set)", options=levels,
                                    key="levers_severity", bind="query-params",
                                    help="1–5: the eight test corruptions at that severity, pooled, scored with the "
                                         "members and temperatures chosen above.")
    st.dataframe(leversview.table(rep, severity, protocol), hide_index=True, width="stretch")
    st.caption(leversview.caption(rep, protocol))


with friendly("show the levers"):
    levers_panel()
if writable("a levers report"):
    with st.form("new_levers"):
        shifted = st.checkbox("Also under shift", value=True,
                              help="Also score every lever on the 8 test corruptions at severities 1–5 (minutes: "
                                   "every member of the run and of DeepEns on 1000 images per corruption and "
                                   "severity, cached for the next time); off: the clean test set alone, seconds.")
        if st.form_submit_button("Compute the levers against DeepEns"):
            with friendly("start the levers report"):
                job = start_levers(store(), run_id, view, 5, shifted)
                st.success(f"Job #{job} queued: the levers report of this run.")


def shift_panel() -> None:
    """Each method's ensemble per severity of the test corruptions, with the gain ledger."""
    st.subheader("Under dataset shift")
    chosen = shiftview.protocols(run_id)
    if len(chosen) > 1:
        url_choice("shift_protocol", chosen, "selection protocol")
        chosen = [st.radio("Best member and T chosen on", chosen, horizontal=True, key="shift_protocol",
                           bind="query-params",
                           help="clean: the clean validation split; shifted: that split under the validation "
                                "corruptions (never the test ones). The same protocol for every method.")]
    found = shiftview.reports(run_id, chosen[0] if chosen else "clean")
    levels = shiftview.severities(found)
    if not levels:
        st.info("No shift evaluation on this run yet: start one below, or run "
                f"`python -m nes shift --run {run_id} --baselines`.")
        return
    first = next(iter(found.values()))
    url_choice("shift_severity", levels, "severity")
    severity = st.select_slider("Severity", options=levels, value=levels[-1], key="shift_severity", bind="query-params",
                                help="0: the test images clean; 1–5: the eight test corruptions at that severity, "
                                     "pooled. The corruptions that choose the best member and T never test.")
    st.dataframe(shiftview.severity_rows(found, severity), hide_index=True, width="stretch")
    st.caption(f"{first['images']} test images per corruption and severity ({', '.join(first['corruptions']['test'])}); "
               f"best member and temperature T chosen on {first['select']} validation. NLL = mean member NLL − "
               "diversity D, exactly, so a lower NLL comes from stronger members, more diversity, or both.")
    diffs = shiftview.difference_rows(found, severity)
    if diffs:
        st.dataframe(diffs, hide_index=True, width="stretch")
        for rep in found.values():
            text = shiftview.sentence(rep, severity)
            if text:
                st.markdown(f"- {text}")


with friendly("show the shift evaluation"):
    shift_panel()
if writable("a shift evaluation"):
    with st.form("new_shift"):
        select = st.radio("Choose the best member and T on", ["clean", "shifted"], horizontal=True,
                          help="clean: the clean validation split (default); shifted: that split under the validation "
                               "corruptions, which never test. The same for every method.")
        if st.form_submit_button("Evaluate under shift (every method of this run)"):
            with friendly("start the shift evaluation"):
                job = start_shift(store(), run_id, view, select)
                st.success(f"Job #{job} queued: every ensemble of this run under 8 corruptions × 5 severities.")
