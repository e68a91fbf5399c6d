"""Hypernetwork: train α(λ) with either regularizer and check that λ controls diversity.

Each trained hypernetwork's curve has its HTML snapshot beside it; the live curve of a running
training (`running_curve`) stays a plain figure, redrawn every few seconds while it runs."""
import streamlit as st

from nes.config import HYPERNET_PRESETS
from nes.explorer import viz
from nes.method.diversity import collapse_warning
from nes.method.regularizers import AXES, REGULARIZERS
from nes.explorer.actions import start_hypernet
from pages._state import active_jobs, route_through_app, selected_run, store
from pages._widgets import chart, flash, friendly, live, load_view, running_curve, show_flash, teach, writable

route_through_app()

st.header("The hypernetwork α(λ)")
teach("How is α(λ) trained?", r"""
The hypernetwork is **piecewise linear** in λ: K anchor architectures at evenly spaced pivots,
interpolated linearly; the anchor at the α\* end of the range stays α\*'s logits, so that end is
α\* exactly. It is trained with the same loop as the search: an architecture step through α(λ)
on a validation batch, then a weight step on a training batch, with λ drawn at random every
step, plus a **regularizer** R(λ, α(λ)) that sets how far α(λ) is from α\*:
""" + "\n".join(f"- **{name}**: {axis.lam}; control: {axis.strength}." for name, axis in AXES.items()) + r"""

**What to look at:** along the diversity axis (0 = α\*, 1 = most diverse) matched edges should
fall and the distance to α\* should rise; below each curve, the number of distinct genotypes on
a 9-point grid and Spearman's ρ between distance and position say whether λ controls anything.
A flat curve or a handful of genotypes: train longer, or use js-target or edges.""")

run_id = selected_run()
view = load_view(run_id)
with friendly("prepare the hypernetwork form"):
    searching = active_jobs(run_id, ("search",))
    if not view.has_search and not searching:
        st.info("This run has no search yet: start one on the **Search** page first.")
        st.stop()

    go = False
    if writable("training a hypernetwork"):
        with st.expander("Train a hypernetwork", icon=":material/add:", expanded=not view.regularizers()):
            with st.form("new_hypernet"):
                st.markdown("**Train a hypernetwork** on this run (background worker)")
                c1, c2, c3, c4 = st.columns(4)
                reg = c1.selectbox("Regularizer", list(REGULARIZERS), index=list(REGULARIZERS).index("edges"),
                                   help="What λ asks of α(λ): " + "; ".join(f"{r}: {AXES[r].lam}" for r in REGULARIZERS)
                                        + ". The run keeps one hypernetwork per regularizer.")
                preset = c2.selectbox("Preset", list(HYPERNET_PRESETS), index=1, help="quick: ~10 epochs, minutes on a CPU")
                epochs = c3.number_input("Epochs (0 = preset's)", min_value=0, max_value=500, value=0,
                                         help="Passes over the training data, λ drawn at random every step. Too few "
                                              "leave the curve below flat; 0 keeps the preset's.")
                pivots = c4.number_input("Anchors K", min_value=2, max_value=12, value=5,
                                         help="Number of anchors of the piecewise-linear map (end pivots fixed).")
                go = st.form_submit_button("Train hypernetwork", type="primary")
    if go:
        sets = {"pivots": str(pivots)}
        if epochs:
            sets["epochs"] = str(epochs)
        job = start_hypernet(store(), run_id, reg, preset, sets, [j.id for j in searching])
        flash("hypernetwork", f"Hypernetwork job #{job} ({reg}) queued"
              + (" (it starts when the search ends)." if searching else "."))
        st.rerun()
    show_flash("hypernetwork")


def hyper_panel() -> None:
    running_curve(run_id, "hypernet", "hypernetwork training in progress")


with friendly("show the training progress"):
    live(hyper_panel, ("search", "hypernet"), "show the training progress")

with friendly("show the trained hypernetworks"):
    regs = view.regularizers()
    if not regs:
        st.info("No trained hypernetwork in this run yet.")
    cols = st.columns(max(1, len(regs)))
    for col, r in zip(cols, regs):
        lo, hi = view.lam_range(r).target
        with col:
            chart(viz.lambda_curve(view.curve(r), title=f"{r} regularizer along the diversity axis"), f"curve_{r}",
                  "hypernetwork")
        q = view.quality(r)
        col.caption(f"trained for λ ∈ [{lo:g}, {hi:g}] · {q['distinct']} distinct genotypes of {q['samples']} · "
                    f"Spearman ρ(distance, diversity) = {q['rho'] if q['rho'] is not None else 'n/a'}")
        tracking = view.edge_tracking() if r == "edges" else None
        if tracking:
            col.caption(f"shared edges are the nearest whole number to λ at {tracking['on_target']} of "
                        f"{tracking['points']} grid points, off by up to {tracking['max_off']:g} edges: close, not exact")
        warning = collapse_warning(q, 3, r)
        if warning:
            col.warning(warning)
