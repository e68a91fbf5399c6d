"""The Streamlit app through AppTest, on the bundled demo run copied into a fresh store."""
import json
import math
import time
from itertools import combinations
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import nes
from nes.layout import RunDir
from nes.explorer.demo import DEMO_DIR
from nes.explorer.runview import RunView
from nes.export.write import plan_export
from nes.method.stats import Difference
from nes.runs.jobs import cancel, wait
from nes.runs.store import Store

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "explorer_app.py")
pytestmark = pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")


@pytest.fixture
def home(home, monkeypatch):
    """conftest's fresh store, one worker at a time, the checkout's bundled demo."""
    monkeypatch.setenv("NES_MAX_WORKERS", "1")
    monkeypatch.delenv("NES_DEMO_DIR", raising=False)
    return home


def app(query: dict | None = None, page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def cell_specs(at: AppTest) -> list[dict]:
    return [s for s in specs(at) if (s.get("layout", {}).get("meta") or {}).get("cell_type")]


def test_first_visit_shows_the_demo_graphs_at_once(home):
    at = app()
    assert Path(home, "demo", "search", "genotype.json").exists()  # the demo was copied into the store
    assert at.sidebar.selectbox[0].value == "demo"
    badge = " ".join(m.value for m in at.sidebar.markdown)
    assert any(k in badge for k in ("CPU", "CUDA", "MPS")), f"the sidebar names no device: {badge!r}"
    assert nes.__version__ in " ".join(c.value for c in at.sidebar.caption), \
        f"the sidebar does not show version {nes.__version__}"
    cells = cell_specs(at)
    assert cells, "the first visit shows no cell figure"
    assert not at.error, f"the first visit shows errors: {[e.value for e in at.error]}"
    assert {m.label for m in at.metric} >= {"Matched edges with α*", "Distance to α*"}
    control = [c.value for c in at.caption if "control" in c.value]
    assert control, "no caption says how well λ controls the architecture"
    assert "control exact" not in control[0], f"the edges count follows λ within about 2 edges: {control[0]!r}"
    assert any(s["data"][0]["type"] == "heatmap" for s in specs(at))  # the pairwise JS heatmap


def test_slider_changes_the_cell_figure(home):
    at = app()
    before = cell_specs(at)
    assert at.radio[0].value == "edges", f"the first hypernetwork shown is {at.radio[0].value!r}, expected edges"
    assert at.slider[0].value == 0.0, f"the diversity slider starts at {at.slider[0].value}, expected 0 (α*)"
    assert all(s["layout"]["meta"]["edges_differing"] == 0 for s in before)
    at.slider[0].set_value(1.0).run()  # the most diverse end (edges: λ = 0, no edge shared is asked for)
    assert not at.exception
    after = cell_specs(at)
    assert after != before
    assert sum(s["layout"]["meta"]["edges_differing"] for s in after) > 0
    matched, total = at.metric[0].value.split(" / ")
    assert int(matched) < int(total)


def test_url_reproduces_the_view_and_bad_links_get_messages(home):
    at = app({"reg": "js", "div": "0.5", "sel": ["0.0", "1.0"]})
    assert at.radio[0].value == "js", f"?reg=js shows {at.radio[0].value!r}"
    assert at.slider[0].value == 0.5, f"?div=0.5 shows diversity {at.slider[0].value}"
    assert at.multiselect[0].value == [0.0, 1.0], f"?sel=0.0&sel=1.0 selects {at.multiselect[0].value}"
    old = app({"reg": "js", "lam": "1.0"})  # a link from before the diversity axis: js λ ∈ [0, 4]
    assert old.slider[0].value == 0.25
    assert "lam" not in old.query_params, f"the old λ stays in the URL: {old.query_params}"
    bad = app({"run": "nope", "lam": "abc"})
    warnings = " ".join(w.value for w in bad.warning)
    assert "no run **nope**" in warnings, f"no warning names the missing run nope: {warnings!r}"
    assert "'abc'" in warnings, f"no warning names the bad value 'abc': {warnings!r}"
    assert cell_specs(bad)  # still shows the demo


def test_search_page_validates_and_queues_a_job(home):
    at = app(page="pages/search.py")
    assert len(cell_specs(at)) >= 1, "the Search page shows no cell figure"
    assert any(s["data"][0]["type"] == "heatmap" for s in specs(at)), "the Search page shows no heatmap"
    at.button[0].click().run()  # no run name
    assert not at.exception, f"submitting without a run name raised {[e.value for e in at.exception]}"
    assert any("give the run a name" in e.value for e in at.error), \
        f"no error asks for a run name: {[e.value for e in at.error]}"
    at.text_input[0].set_value("s1")
    sel = {s.label: s for s in at.selectbox}
    sel["Dataset"].set_value("digits")
    sel["Preset"].set_value("smoke")
    sel["Search mode"].set_value("gdas")
    sel["Architecture step"].set_value(4)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [s.value for s in at.success]
    assert any("queued for run **s1**" in v for v in shown), f"the queued message is gone after the rerun: {shown}"
    store = Store()
    jobs = store.jobs(store.get_run("s1"))
    assert [j.kind for j in jobs] == ["search", "hypernet"], \
        f"queued jobs {[j.kind for j in jobs]}, expected a search then a hypernet"
    assert jobs[1].deps == [jobs[0].id], f"the hypernet job depends on {jobs[1].deps}, expected the search {jobs[0].id}"
    assert jobs[0].config["set"]["dataset"] == "digits", \
        f"the search job's dataset is {jobs[0].config['set']['dataset']!r}"
    assert jobs[0].config["set"]["mode"] == "gdas", f"the search job's mode is {jobs[0].config['set']['mode']!r}"
    assert jobs[0].config["set"]["arch_every"] == "4", \
        f"the search job's arch_every is {jobs[0].config['set'].get('arch_every')!r}"
    for j in jobs[::-1]:
        if store.job(j.id).status in ("queued", "running"):
            cancel(store, j.id)
    assert all(j.status in ("cancelled", "done", "failed") for j in wait(store, [j.id for j in jobs], poll=0.3))
    at.switch_page("explorer_app.py").run()  # the sidebar (drawn by the entry script) picked the new run
    assert at.sidebar.selectbox[0].value == "s1", f"the selected run is {at.sidebar.selectbox[0].value!r}, not s1"


def test_hypernetwork_page_shows_every_hypernetworks_curve(home):
    at = app(page="pages/hypernetwork.py")
    def title(s: dict) -> str:  # long titles wrap at "<br>"
        return json.dumps(s["layout"].get("title", ""), ensure_ascii=False).replace("<br>", " ")
    curves = [s for s in specs(at) if "along the diversity axis" in title(s)]
    assert len(curves) == len(RunView(DEMO_DIR).regularizers()) == 3  # edges, js-target, js
    for c in curves:
        matched = c["data"][0]["y"]
        assert len(matched) == 9
    tracking = [c.value for c in at.caption if "nearest whole number to λ" in c.value]
    assert len(tracking) == 1 and "close, not exact" in tracking[0], \
        f"the edges axis should say how closely it follows λ, once: {tracking}"


def test_hypernetwork_page_queues_a_checked_job_and_says_so(home):
    at = app(page="pages/hypernetwork.py")
    sel = {s.label: s for s in at.selectbox}
    sel["Regularizer"].set_value("js")
    sel["Preset"].set_value("smoke")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [s.value for s in at.success]
    assert any("Hypernetwork job #" in v and "(js) queued" in v for v in shown), f"no queued message: {shown}"
    store = Store()
    job, = [j for j in store.jobs(store.get_run("demo")) if j.kind == "hypernet"]
    assert job.config["regularizer"] == "js", f"queued {job.config}"
    if store.job(job.id).status in ("queued", "running"):
        cancel(store, job.id)
    wait(store, [job.id], poll=0.3)


def test_ensemble_page_lambda_list_follows_the_hypernetwork(home):
    """Choosing js-target, then one of its λ values, then Start queues a js-target member."""
    at = app(page="pages/ensemble.py")
    at.selectbox(key="member_reg_" + str(Store().get_run("demo"))).set_value("js-target").run()
    assert not at.exception, [e.value for e in at.exception]
    grid = [round(x, 4) for x in RunView(Store().get_run("demo")).axis_grid("js-target")]
    lams = next(m for m in at.multiselect if m.label == "Diversity (λ)")
    offered = [o.split("λ=")[-1].rstrip(")") for o in lams.options]
    assert offered == [f"{x:.3g}" for x in grid], f"λ offered {offered}, js-target's grid {grid}"
    lams.set_value([grid[4]])
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, f"errors: {[e.value for e in at.error]}"
    store = Store()
    job, = [j for j in store.jobs(store.get_run("demo")) if j.kind == "retrain"]
    assert job.config["regularizer"] == "js-target", f"queued {job.config}"
    assert job.config["lam"] == grid[4], f"queued λ {job.config['lam']}, picked {grid[4]}"
    assert job.config["name"].startswith("js-target_lam_"), f"the name hides the hypernetwork: {job.config['name']}"
    if store.job(job.id).status in ("queued", "running"):
        cancel(store, job.id)
    wait(store, [job.id], poll=0.3)


def test_ensemble_page_live_metrics_and_member_job(home):
    at = app(page="pages/ensemble.py")
    labels = {m.label for m in at.metric}
    assert {"Ensemble accuracy", "Ensemble NLL", "Ensemble ECE"} <= labels
    ece_metric = next(m for m in at.metric if m.label == "Ensemble ECE")
    assert "after temperature scaling (T " in ece_metric.delta  # fitted on the demo's validation split
    assert any("predictive JS" in json.dumps(s["layout"].get("title", ""), ensure_ascii=False) for s in specs(at))
    assert any("Greedy selection" in m.value for m in at.markdown)
    # the gain over the best member comes with its interval and says whether it is within noise
    gain = [c.value for c in at.caption if "best member" in c.value]
    assert gain, "no caption states the gain over the best member"
    assert "95% CI" in gain[0], f"the gain has no 95% interval: {gain[0]!r}"
    assert "within noise" in gain[0] or "beyond noise" in gain[0], \
        f"the gain does not say whether it is within noise: {gain[0]!r}"
    ledger = [c.value for c in at.caption if c.value.startswith("Where the gain comes from")]
    assert ledger and "mean member NLL" in ledger[0], "the Ensemble page does not split the NLL into strength and diversity"
    # the note under the headline says what the numbers show: here, whether NLL and ECE beat the best member's
    report = RunView(DEMO_DIR).live_ensemble(RunDir(DEMO_DIR).finished_members()).report
    best = report.members[report.vs_best["best_member"]]
    note = " ".join(i.value for i in at.info if "best member" in i.value)
    worse = report.metrics["nll"] > best["nll"] or report.metrics["ece"] > best["ece"]
    assert ("worse than the best member's" in note) == worse, f"the note contradicts the headline: {note!r}"
    teaching = " ".join(m.value for m in at.markdown)
    assert "better calibrated than any single one" not in teaching, "the teaching note promises better calibration"
    heat = {json.dumps(s["layout"]["title"], ensure_ascii=False): s for s in specs(at) if "heatmap" in json.dumps(s["data"])}
    assert any("disagreement" in t for t in heat), f"no heatmap shows disagreement: {list(heat)}"
    assert all("fitted" in t for t in heat), f"a heatmap's colour scale is not fitted: {list(heat)}"
    at.toggle[0].set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    zmax = [s["data"][0]["zmax"] for s in specs(at) if "heatmap" in json.dumps(s["data"])]
    assert sorted(zmax) == pytest.approx(sorted([math.log(2), 1.0]))
    ms = {m.label: m for m in at.multiselect}
    lam = round(RunView(Store().get_run("demo")).axis_grid("edges")[4], 4)
    ms["Diversity (λ)"].set_value([lam])
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    store = Store()
    jobs = [j for j in store.jobs(store.get_run("demo")) if j.kind == "retrain"]
    assert len(jobs) == 1, f"{len(jobs)} retrain jobs queued, expected 1"
    assert jobs[0].config["lam"] == float(lam), f"the member job is at λ {jobs[0].config['lam']}, picked {lam}"
    assert "genotype" in jobs[0].config, "the member job carries no genotype"
    assert any("Started" in s.value for s in at.success)
    cancel(store, jobs[0].id) if store.job(jobs[0].id).status in ("queued", "running") else None
    assert wait(store, [jobs[0].id], poll=0.3)[0].status in ("cancelled", "done", "failed")


def test_a_broken_run_gives_a_message_not_a_crash(home):
    at = app()
    run = Path(home, "demo")
    (run / "search" / "arch.safetensors").write_bytes(b"not a safetensors file")
    time.sleep(0.01)
    for page in ("pages/explore.py", "pages/search.py", "pages/hypernetwork.py", "pages/ensemble.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert at.error, page


def test_compare_page_queues_a_method_and_shows_finished_ones(home):
    at = app(page="pages/compare.py")
    methods = list(at.dataframe[0].value["method"])
    assert methods == ["edgenes (this run)", "deepens"], f"the demo's Compare table lists {methods}"
    sel = {s.label: s for s in at.selectbox}
    sel["Method"].set_value("random")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    store = Store()
    job, = [j for j in store.jobs(store.get_run("demo")) if j.kind == "baseline"]
    assert job.config["method"] == "random", f"the baseline job runs {job.config['method']!r}, picked random"
    assert job.config["members"] == 3, f"the baseline job trains {job.config['members']} members, expected 3"
    if store.job(job.id).status in ("queued", "running"):
        cancel(store, job.id)
    wait(store, [job.id], poll=0.3)

    from nes.method.baselines import run_baseline
    from nes.runs.tasks import search_task

    run = Path(store.register_run("tiny"))
    search_task(run, {"preset": "smoke"})
    run_baseline(run, "deepens", members=2, preset="smoke")
    run_baseline(run, "random", members=2, n_edges=1, preset="smoke")
    at = app({"run": "tiny"}, page="pages/compare.py")
    table = at.dataframe[0].value
    assert sorted(table["method"]) == ["deepens", "random"], f"the table shows methods {sorted(table['method'])}"
    assert list(table["members"]) == [2, 2], f"the table shows member counts {list(table['members'])}"
    titles = [json.dumps(s["layout"].get("title", ""), ensure_ascii=False) for s in specs(at)]
    assert sum("vs ensemble size" in t for t in titles) == 3, \
        f"{sum('vs ensemble size' in t for t in titles)} figures against ensemble size, expected 3"
    assert any("accuracy vs cost" in t for t in titles), "no accuracy vs cost figure"
    diffs = at.dataframe[1].value  # each method against DeepEns of the same seed, with its interval
    assert list(diffs["method"]) == ["random"], f"differences shown for {list(diffs['method'])}, expected random only"
    assert "95% CI" in diffs["Δ accuracy vs deepens"][0], \
        f"the difference has no 95% interval: {diffs['Δ accuracy vs deepens'][0]!r}"
    assert any("Paired bootstrap" in c.value for c in at.caption)


def test_compare_page_shows_the_levers_verdict_clean_and_under_shift(home):
    at = app(page="pages/compare.py")
    assert any("What diversity is worth" in h.value for h in at.subheader), "no levers section on the Compare page"
    assert not any("other members than the run has now" in w.value for w in at.warning), \
        "the demo's shipped levers report reads as stale"
    verdict = [m.value for m in at.markdown if "Best EdgeNES-derived ensemble" in m.value]
    assert len(verdict) == 2, f"expected the verdict at equal members and at equal cost, got {verdict}"
    assert any("At shift severity 3" in m.value for m in at.markdown), "the verdict says nothing at shift severity 3"
    table = next(d.value for d in at.dataframe if "NLL − DeepEns (95 % CI)" in d.value.columns)
    assert "95% CI" in table["NLL − DeepEns (95 % CI)"][0], "a lever's gap has no interval"
    assert any("do not cover training seeds" in c.value for c in at.caption), \
        "the levers caption does not say that its intervals leave out training-seed noise"


def test_a_clean_only_levers_report_shows_without_a_severity_slider(home):
    from nes.runs.tasks import levers_task

    app()  # the first visit copies the demo into the store
    levers_task(Path(home, "demo"), {"members": 5, "shift": False})
    at = app(page="pages/compare.py")
    assert not [s for s in at.select_slider if s.key == "levers_severity"], "a clean-only report offers severities"
    said = [m.value for m in at.markdown if "Best EdgeNES-derived ensemble" in m.value]
    assert len(said) == 2, f"expected the verdict at equal members and at equal cost, got {said}"
    assert not any("(8 corruptions ×" in m.value for m in at.markdown), "a clean-only levers report speaks of shift"


def test_members_started_on_the_ensemble_page_appear_when_their_epochs_finish(home):
    from nes.runs.tasks import search_task

    store = Store()
    run = Path(store.register_run("tinyens"))
    search_task(run, {"preset": "smoke"})
    at = app({"run": "tinyens"}, page="pages/ensemble.py")
    assert any("No member has finished an epoch" in i.value for i in at.info)
    for seed in (0, 1):
        at.checkbox[0].check()
        at.number_input[0].set_value(seed)
        at.button[0].click().run()
        assert not at.exception, [e.value for e in at.exception]
        jobs = [j for j in store.jobs(str(run)) if j.kind == "retrain"]
        assert len(jobs) == seed + 1
        done = wait(store, [j.id for j in jobs], poll=0.3)
        assert all(j.status == "done" for j in done), [j.error for j in done]
        at.run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Finished members"] == "2", f"finished members {metrics['Finished members']!r}, expected 2"
    assert "%" in metrics["Ensemble accuracy"], \
        f"ensemble accuracy {metrics['Ensemble accuracy']!r} is not a percentage"
    assert any("predictive JS" in json.dumps(s["layout"].get("title", ""), ensure_ascii=False) for s in specs(at))
    # a member still training (saved epochs, no final weights) stays out of the headline, marked
    RunDir(run).member(jobs[1].config["name"]).weights.unlink()
    at.run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Finished members"] == "1"
    table = at.dataframe[-1].value
    assert list(table["member"]) == [jobs[1].config["name"]], \
        f"members outside the headline {list(table['member'])}, expected {jobs[1].config['name']}"
    assert "training" in table["status"][0], f"the unfinished member is marked {table['status'][0]!r}"
    assert any("still training" in json.dumps(s["layout"].get("title", ""), ensure_ascii=False) for s in specs(at))


def test_export_page_previews_writes_and_offers_the_bundle(home):
    at = app(page="pages/export.py")
    members = at.multiselect[0].value
    demo = RunView(DEMO_DIR)
    greedy = demo.greedy_selection(demo.member_names(), size=3)  # on validation, never the test set
    assert sorted(members) == sorted(greedy), \
        f"preselected members {sorted(members)}, the greedy selection {sorted(greedy)}"
    assert len(members) == 3, f"{len(members)} members preselected, expected 3"
    pair = sorted(greedy)[:2]
    assert {m.label for m in at.metric} >= {"Ensemble accuracy", "NLL", "ECE"}
    assert len(at.dataframe[0].value) == 3
    assert "None yet." in [c.value for c in at.caption]
    at.multiselect[0].set_value(pair).run()
    assert len(at.dataframe[0].value) == 2, f"the preview lists {len(at.dataframe[0].value)} members, picked 2"
    assert not at.exception, f"picking two members raised {[e.value for e in at.exception]}"
    at.text_input[0].set_value("../escape")  # form fields are sent with the submit click
    at.button[0].click().run()
    assert any("bundle name" in e.value for e in at.error), \
        f"no error about the bundle name ../escape: {[e.value for e in at.error]}"
    assert not (home / "escape").exists(), "a bundle was written outside the run: ../escape"
    at.text_input[0].set_value("two")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any("Exported **two**" in s.value for s in at.success)
    bundle = home / "demo" / "exports" / "two"
    model = nes.load_ensemble(bundle.with_name("two.zip"))
    assert model.member_names == pair
    zips = [b for b in at.get("download_button") if b.proto.label == "Download zip"]
    assert len(zips) == 1, f"{len(zips)} bundles offered for download, expected 1"
    card = " ".join(m.value for m in at.markdown if "Ensemble model card" in m.value)
    assert "Trained on all the training images of fashion-mnist" in card, f"the model card's data line: {card[:2000]}"
    assert "None images" not in card, "the model card says 'Trained on None images'"
    at.text_input[0].set_value("two")
    at.button[0].click().run()  # the same name again: a message, the bundle is kept
    assert any("already exists" in e.value for e in at.error)
    assert nes.load_ensemble(bundle).member_names == pair


def _pair_whose_best_members_differ() -> tuple[list[str], dict]:
    """Two demo members whose best by validation NLL is not their best by test accuracy, and
    their manifest as `plan_export` computes it."""
    for pair in combinations(RunDir(DEMO_DIR).finished_members(), 2):
        manifest = plan_export(DEMO_DIR, list(pair)).manifest
        by_test = max(manifest["members"], key=lambda m: m["metrics"]["test_accuracy"])["name"]
        if by_test != manifest["ensemble"]["vs_best_member"]["best_member"]:
            return list(pair), manifest
    pytest.skip("no demo pair whose best member by validation NLL differs from the one by test accuracy")


def test_export_page_shows_the_validation_nll_best_member_with_its_interval(home):
    pair, manifest = _pair_whose_best_members_differ()
    vs = manifest["ensemble"]["vs_best_member"]
    at = app(page="pages/export.py")
    at.multiselect[0].set_value(pair).run()
    assert not at.exception, [e.value for e in at.exception]
    gain = Difference.from_dict(vs["accuracy"])
    acc = next(m for m in at.metric if m.label == "Ensemble accuracy")
    assert acc.delta == f"{gain.value:+.2f} pts vs best member", f"delta {acc.delta!r}, manifest {gain.value:+.2f}"
    said = [c.value for c in at.caption if "best member" in c.value]
    assert any(f"**{vs['best_member']}**" in c for c in said), f"the validation-NLL best {vs['best_member']}: {said}"
    assert any(gain.text() in c for c in said), f"no interval {gain.text()!r} in {said}"
    led = manifest["ensemble"]["ledger"]
    split = [c.value for c in at.caption if c.value.startswith("Where the gain comes from")]
    assert split and f"{led['diversity_nll']:.4f}" in split[0], f"the Export page lacks the ledger's diversity: {split}"
    for m in manifest["members"]:  # the demo's members were sampled from the edges hypernetwork
        assert m["lam"] is None or m["regularizer"] == "edges", f"{m['name']}: regularizer {m['regularizer']!r}"
    origins = list(at.dataframe[0].value["hypernetwork, λ"])
    assert all(o.startswith("edges, λ = ") or "α*" in o for o in origins), f"the table's λ column: {origins}"


@pytest.mark.parametrize("page", ["pages/search.py", "pages/hypernetwork.py", "pages/compare.py"])
def test_every_setting_explains_itself(home, page):
    at = app(page=page)
    kinds = ("number_input", "selectbox", "text_input", "checkbox", "multiselect", "toggle", "radio")
    inputs = [w for kind in kinds for w in at.main.get(kind)]
    assert inputs, f"{page} shows no settings"
    for w in inputs:
        assert w.help, f"{page}: the setting {w.label!r} has no help text"


def test_ensemble_page_hands_its_members_to_the_export_page(home):
    at = app(page="pages/ensemble.py")
    picked = [RunView(DEMO_DIR).member_names()[-1], "alpha_star"]
    at.multiselect(key="members_" + str(Store().get_run("demo"))).set_value(picked).run()
    button, = [b for b in at.button if b.label == "Export these members"]
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.header[0].value == "Export an ensemble"
    assert at.multiselect[0].value == picked, \
        f"the Export page selects {at.multiselect[0].value}, the Ensemble page handed {picked}"
    assert len(at.dataframe[0].value) == 2, f"the preview lists {len(at.dataframe[0].value)} members, handed 2"
