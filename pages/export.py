"""Export: pick members, see the bundle's manifest, write it (optionally with ONNX), download the zip.

The members picked are in the page's link (`?export=`, nes.explorer.urlstate); the heatmaps have
their HTML snapshots beside them."""
import streamlit as st

from nes.explorer import urlstate, viz
from nes.explorer.actions import export_bundle
from nes.explorer.notes import ledger_text, member_origin
from nes.export.onnx import onnx_missing
from nes.export.write import bundle_summary, default_bundle_name, list_bundles, plan_export
from nes.layout import RunDir
from nes.method.stats import Difference
from pages._state import route_through_app, selected_run
from pages._widgets import chart, friendly, load_view, teach, writable

route_through_app()

st.header("Export an ensemble")
teach("What is in a bundle, and how is it used?", r"""
A **bundle** is a folder (and a `.zip` of it) that someone else can load and check without this
app: `manifest.json` (schema version 1: every member's genotype, λ, seed, metrics and the sha256
of its weights; dataset, class names, input shape and preprocessing; library versions; the
architecture-JS and predictive-JS matrices), one `.safetensors` file per member, and a model card
`README.md` (intended use, data, metrics, limitations). With **ONNX**, `ensemble.onnx` holds the
whole ensemble (preprocessing, members, mean softmax), checked against PyTorch.

```python
import nes
model = nes.load_ensemble("bundle.zip")   # checks the schema, every hash and every shape
probs = model.predict(images)             # uint8 or [0, 1] float images, [N, K] probabilities
```
or `python -m nes predict bundle.zip images.npz --json`. Loading never unpickles anything.""")

run_id = selected_run()
view = load_view(run_id)
run = RunDir(run_id)
finished = run.finished_members()
if not finished:
    st.info("This run has no finished members yet. Train some on the **Ensemble** page; they appear here "
            "when their training ends.")
    st.stop()


@st.cache_data(show_spinner=False, max_entries=32)
def _plan(run: str, names: tuple[str, ...], stamp: tuple) -> dict:
    """The bundle's manifest as it would be written (no hashes yet); cached per selection."""
    return plan_export(run, list(names)).manifest


def _stamp(names: list[str]) -> tuple:
    return tuple(run.member(n).weights.stat().st_mtime for n in names)


key = f"export_members_{run_id}"
link = urlstate.read_members(st.query_params, urlstate.EXPORT, finished, st.session_state.get("_url_export"))
if link.warning:
    st.warning(link.warning)
if link.chosen is not None:  # a link's selection (the Ensemble page's "Export these members" is one)
    st.session_state[key] = link.chosen
elif key not in st.session_state:
    with friendly("rank the members"):
        st.session_state[key] = view.greedy_selection(finished, size=min(3, len(finished)))
st.session_state[key] = [n for n in st.session_state.get(key, []) if n in finished]
names = st.multiselect("Members", finished, key=key,
                       help="Finished members of this run. The default is the greedy forward selection of 3 "
                            "on the validation split (best NLL first). The page's link holds the choice.")
urlstate.apply(st.query_params, urlstate.members_fixes(st.query_params, urlstate.EXPORT, names))
st.session_state["_url_export"] = names  # what this session wrote: not read back as a link
if not names:
    st.info("Pick at least one member.")
    st.stop()

manifest = None
with friendly("prepare the bundle"):
    manifest = _plan(run_id, tuple(names), _stamp(names))
if manifest is None:
    st.stop()

ens, vs = manifest["ensemble"]["metrics"], manifest["ensemble"].get("vs_best_member")
gain = Difference.from_dict(vs["accuracy"]) if vs else None
c = st.columns(4)
c[0].metric("Ensemble accuracy", f"{100 * ens['accuracy']:.2f} %",
            f"{gain.value:+.2f} pts vs best member" if gain else None,
            help="The best member is the one with the lowest validation NLL (chosen without the test set).")
c[1].metric("NLL", f"{ens['nll']:.4f}")
c[2].metric("ECE", f"{ens['ece']:.4f}")
c[3].metric("Members", len(names), help=f"{manifest['ensemble']['test_images']} test images")
if gain:
    st.caption(f"Against its best member (**{vs['best_member']}**, chosen by validation NLL): accuracy {gain.text()}, "
               f"NLL {Difference.from_dict(vs['nll']).text()}; paired bootstrap over the {gain.n} test images.")
if ledger_text(manifest["ensemble"].get("ledger")):
    st.caption(ledger_text(manifest["ensemble"].get("ledger")))
st.dataframe([{"member": m["name"], "hypernetwork, λ": member_origin(m.get("lam"), m.get("regularizer")),
               "seed": m.get("seed"), "genotype": m["compact"],
               "test accuracy %": round(100 * m["metrics"].get("test_accuracy", float("nan")), 2),
               "test NLL": round(m["metrics"].get("test_nll", float("nan")), 4),
               "parameters": m["num_parameters"]} for m in manifest["members"]], hide_index=True, width="stretch")
if len(names) > 1:
    a, b = st.columns(2)
    arch = manifest["diversity"]["architecture_js"]
    if arch is not None:
        with a:
            chart(viz.js_heatmap(arch, names, "Architecture JS between members"), "exp_arch_js", "export")
    with b:
        chart(viz.js_heatmap(manifest["diversity"]["predictive_js"], names, "Predictive JS (test)"), "exp_pred_js",
              "export")
with st.expander("manifest.json (before export: hashes are added when the files are written)"):
    st.json({**manifest, "members": [{k: v for k, v in m.items() if k != "tensors"} for m in manifest["members"]]},
            expanded=1)

onnx_problem = onnx_missing()

go = False
if writable("writing a bundle into the run", "the bundles already written can still be downloaded below"):
    with st.form("export"):
        f1, f2 = st.columns([3, 1])
        bundle_name = f1.text_input("Bundle name", value=default_bundle_name(run_id, names),
                                    help=f"Folder and zip name under {run.exports}. Letters, digits, '-', '_', '.'.")
        onnx = f2.checkbox("Also ONNX", value=False, disabled=onnx_problem is not None,
                           help=onnx_problem or "ensemble.onnx, checked against PyTorch with onnxruntime (adds ~10 s)")
        replace = f2.checkbox("Replace if it exists", value=False)
        go = st.form_submit_button("Export", type="primary")
if go:
    with friendly("export the bundle"):
        with st.spinner("Writing the bundle and checking it against the run…"):
            res = export_bundle(run_id, names, bundle_name, onnx=onnx, overwrite=replace)
        v = res.manifest.get("verification", {})
        msg = f"Exported **{res.path.name}** ({len(names)} members)."
        if v.get("checked"):
            msg += (f" Reloaded from disk, it reproduces the run's test probabilities (max |Δp| "
                    f"{v['max_abs_diff_vs_run']:.1e} on {v['images']} images).")
        if "onnx" in res.manifest:
            msg += f" ONNX matches PyTorch to {res.manifest['onnx']['max_abs_diff']:.1e}."
        st.success(msg)


st.subheader("Bundles of this run")
bundles = list_bundles(run.exports)
if not bundles:
    st.caption("None yet.")
for b in bundles:
    with friendly(f"show the bundle {b.name}"):
        info = bundle_summary(b)
        man, m, zp = info["manifest"], info["metrics"], info["zip"]
        cols = st.columns([3, 2, 1])
        cols[0].markdown(f"**{b.name}** · {', '.join(info['members'])}{' · ONNX' if info['onnx'] else ''}")
        cols[1].caption(f"accuracy {100 * m.get('accuracy', float('nan')):.2f} %, NLL {m.get('nll', float('nan')):.4f}"
                        f" · {info['created']}")
        if zp is not None:
            cols[2].download_button("Download zip", zp.read_bytes(), file_name=zp.name, mime="application/zip",
                                    key=f"dl_{b.name}", icon=":material/download:")
        with st.expander(f"Model card and manifest of {b.name}"):
            st.markdown(info["card"] or "_no model card_")
            st.json({**man, "members": [{k: v for k, v in x.items() if k != "tensors"}
                                        for x in man.get("members", [])]}, expanded=False)
