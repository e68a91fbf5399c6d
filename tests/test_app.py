"""The Streamlit app through AppTest, on the bundled demo run copied into a fresh store."""
import json
import math
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import nes
from nes.layout import RunDir
from nes.explorer.demo import DEMO_DIR
from nes.explorer.runview import RunView
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
    assert any(k in badge for k in ("CPU", "CUDA", "MPS")) and nes.__version__ in " ".join(c.value for c in at.sidebar.caption)
    cells = cell_specs(at)
    assert cells and not at.error
    assert {m.label for m in at.metric} >= {"Matched edges with α*", "Distance to α*"}
    assert any(s["data"][0]["type"] == "heatmap" for s in specs(at))  # the pairwise JS heatmap


def test_slider_changes_the_cell_figure(home):
    at = app()
    before = cell_specs(at)
    assert at.radio[0].value == "edges" and at.slider[0].value == 0.0  # the diversity axis starts at α*
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
    assert at.radio[0].value == "js" and at.slider[0].value == 0.5 and at.multiselect[0].value == [0.0, 1.0]
    old = app({"reg": "js", "lam": "1.0"})  # a link from before the diversity axis: js λ ∈ [0, 4]
    assert old.slider[0].value == 0.25
    bad = app({"run": "nope", "lam": "abc"})
    warnings = " ".join(w.value for w in bad.warning)
    assert "no run **nope**" in warnings and "'abc'" in warnings
    assert cell_specs(bad)  # still shows the demo


def test_search_page_validates_and_queues_a_job(home):
    at = app(page="pages/search.py")
    assert len(cell_specs(at)) >= 1 and any(s["data"][0]["type"] == "heatmap" for s in specs(at))
    at.button[0].click().run()  # no run name
    assert not at.exception and any("give the run a name" in e.value for e in at.error)
    at.text_input[0].set_value("s1")
    sel = {s.label: s for s in at.selectbox}
    sel["Dataset"].set_value("digits")
    sel["Preset"].set_value("smoke")
    sel["Search mode"].set_value("gdas")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    store = Store()
    jobs = store.jobs(store.get_run("s1"))
    assert [j.kind for j in jobs] == ["search", "hypernet"] and jobs[1].deps == [jobs[0].id]
    assert jobs[0].config["set"]["dataset"] == "digits" and jobs[0].config["set"]["mode"] == "gdas"
    for j in jobs[::-1]:
        if store.job(j.id).status in ("queued", "running"):
            cancel(store, j.id)
    assert all(j.status in ("cancelled", "done", "failed") for j in wait(store, [j.id for j in jobs], poll=0.3))


def test_hypernetwork_page_shows_every_hypernetworks_curve(home):
    at = app(page="pages/hypernetwork.py")
    curves = [s for s in specs(at) if "along the diversity axis" in json.dumps(s["layout"].get("title", ""), ensure_ascii=False)]
    assert len(curves) == len(RunView(DEMO_DIR).regularizers()) == 3  # edges, js-target, js
    for c in curves:
        matched = c["data"][0]["y"]
        assert len(matched) == 9


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
    assert gain and "95% CI" in gain[0] and ("within noise" in gain[0] or "beyond noise" in gain[0])
    heat = {json.dumps(s["layout"]["title"], ensure_ascii=False): s for s in specs(at) if "heatmap" in json.dumps(s["data"])}
    assert any("disagreement" in t for t in heat) and all("fitted" in t for t in heat)
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
    assert len(jobs) == 1 and jobs[0].config["lam"] == float(lam) and "genotype" in jobs[0].config
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
    assert list(at.dataframe[0].value["method"]) == ["deepens"]  # the demo's bundled baseline
    sel = {s.label: s for s in at.selectbox}
    sel["Method"].set_value("random")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    store = Store()
    job, = [j for j in store.jobs(store.get_run("demo")) if j.kind == "baseline"]
    assert job.config["method"] == "random" and job.config["members"] == 3
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
    assert sorted(table["method"]) == ["deepens", "random"] and list(table["members"]) == [2, 2]
    titles = [json.dumps(s["layout"].get("title", ""), ensure_ascii=False) for s in specs(at)]
    assert sum("vs ensemble size" in t for t in titles) == 3 and any("accuracy vs cost" in t for t in titles)
    diffs = at.dataframe[1].value  # each method against DeepEns of the same seed, with its interval
    assert list(diffs["method"]) == ["random"] and "95% CI" in diffs["Δ accuracy vs deepens"][0]
    assert any("Paired bootstrap" in c.value for c in at.caption)


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
    assert metrics["Finished members"] == "2" and "%" in metrics["Ensemble accuracy"]
    assert any("predictive JS" in json.dumps(s["layout"].get("title", ""), ensure_ascii=False) for s in specs(at))
    # a member still training (saved epochs, no final weights) stays out of the headline, marked
    RunDir(run).member(jobs[1].config["name"]).weights.unlink()
    at.run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Finished members"] == "1"
    table = at.dataframe[-1].value
    assert list(table["member"]) == [jobs[1].config["name"]] and "training" in table["status"][0]
    assert any("still training" in json.dumps(s["layout"].get("title", ""), ensure_ascii=False) for s in specs(at))


def test_export_page_previews_writes_and_offers_the_bundle(home):
    at = app(page="pages/export.py")
    members = at.multiselect[0].value
    demo = RunView(DEMO_DIR)
    greedy = demo.greedy_selection(demo.member_names(), size=3)  # on validation, never the test set
    assert sorted(members) == sorted(greedy) and len(members) == 3
    pair = sorted(greedy)[:2]
    assert {m.label for m in at.metric} >= {"Ensemble accuracy", "NLL", "ECE"}
    assert len(at.dataframe[0].value) == 3
    assert "None yet." in [c.value for c in at.caption]
    at.multiselect[0].set_value(pair).run()
    assert len(at.dataframe[0].value) == 2 and not at.exception
    at.text_input[0].set_value("../escape")  # form fields are sent with the submit click
    at.button[0].click().run()
    assert any("bundle name" in e.value for e in at.error) and not (home / "escape").exists()
    at.text_input[0].set_value("two")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any("Exported **two**" in s.value for s in at.success)
    bundle = home / "demo" / "exports" / "two"
    model = nes.load_ensemble(bundle.with_name("two.zip"))
    assert model.member_names == pair
    assert len(at.get("download_button")) == 1
    at.text_input[0].set_value("two")
    at.button[0].click().run()  # the same name again: a message, the bundle is kept
    assert any("already exists" in e.value for e in at.error)
    assert nes.load_ensemble(bundle).member_names == pair


def test_ensemble_page_hands_its_members_to_the_export_page(home):
    at = app(page="pages/ensemble.py")
    picked = [RunView(DEMO_DIR).member_names()[-1], "alpha_star"]
    at.multiselect(key="members_" + str(Store().get_run("demo"))).set_value(picked).run()
    button, = [b for b in at.button if b.label == "Export these members"]
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.header[0].value == "Export an ensemble"
    assert at.multiselect[0].value == picked and len(at.dataframe[0].value) == 2
