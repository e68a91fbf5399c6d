"""The search replay (issue 26, item 4): a real smoke search records θ at the end of every epoch and
after ¼, ½, ¾ of the first; a resumed search continues the record; the replay module reads it back
(safetensors only) and counts genotype changes; the Search page replays it through AppTest."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from nes.artifacts import ArtifactError, load_tensors, save_tensors
from nes.config import SearchConfig, from_preset
from nes.explorer import replay
from nes.explorer.demo import DEMO_DIR
from nes.layout import RunDir
from nes.method.darts import Moment, first_epoch_steps, load_search, load_theta_history, search
from nes.runs.store import Store

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "explorer_app.py")
CFG = {"epochs": 2}  # smoke: 4 steps per epoch, progress every 2 steps


class Stop(Exception):
    pass


def stop_at(step_to_stop: int):
    def cb(step, total, metrics):
        if step >= step_to_stop:
            raise Stop()
    return cb


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A finished, uninterrupted smoke search: (run folder, its result)."""
    run = tmp_path_factory.mktemp("replay") / "run"
    res = search(from_preset(SearchConfig, "smoke", CFG), run, "cpu")
    return run, res


def expected_moments(steps: int, epochs: int) -> list[Moment]:
    """The first epoch's ¼, ½, ¾ moments, then every epoch's end (`steps` per epoch)."""
    return [Moment(0, s) for s in first_epoch_steps(steps)] + [Moment(e, steps) for e in range(epochs)]


def test_a_search_records_each_epoch_end_and_the_first_epoch(searched):
    run, res = searched
    hist = load_theta_history(RunDir(run).search.theta_history, res.layout)
    want = expected_moments(res.steps // 2, 2)
    assert len(first_epoch_steps(res.steps // 2)) == 3, f"{res.steps // 2} steps per epoch give no ¼, ½, ¾ moments"
    assert hist.moments == want, f"recorded moments {hist.moments}, expected {want}"
    assert tuple(hist.theta.shape) == (len(want), res.layout.size), f"record of shape {list(hist.theta.shape)}"
    assert bool(torch.isfinite(hist.theta).all()), "a recorded θ holds NaN or inf"
    star = load_search(run).theta
    assert torch.equal(hist.theta[-1], star), "the last recorded θ is not the saved α* of arch.safetensors"
    assert not torch.equal(hist.theta[0], hist.theta[-1]), "θ did not move between the first and last moment"
    stray = [p.name for p in RunDir(run).search.path.iterdir() if p.name.endswith(".tmp")]
    assert not stray, f"temporary files left in the search folder: {stray}"


def test_a_resumed_search_continues_the_record_without_duplicates(searched, tmp_path):
    run, full = searched
    steps = full.steps // 2
    cut = tmp_path / "cut"
    with pytest.raises(Stop):  # killed in the middle of the second epoch, after the first checkpoint
        search(from_preset(SearchConfig, "smoke", CFG), cut, "cpu", progress=stop_at(steps + 2))
    path = RunDir(cut).search.theta_history
    before = load_theta_history(path)
    assert before.moments == expected_moments(steps, 1), f"the cut search recorded {before.moments}"
    # a crash between the checkpoint and the record: the record lacks the first epoch's end
    tensors, meta = load_tensors(path)
    save_tensors(path, {"theta": tensors["theta"][:-1]}, {**meta, "moments": meta["moments"][:-1]})
    resumed = search(from_preset(SearchConfig, "smoke", CFG), cut, "cpu")
    after = load_theta_history(path, resumed.layout)
    want = expected_moments(steps, 2)
    assert after.moments == want, f"the resumed record has moments {after.moments}, expected {want} once each"
    ref = load_theta_history(RunDir(run).search.theta_history)
    bad = [m for m, a, b in zip(want, after.theta, ref.theta) if not torch.allclose(a, b, atol=1e-6)]
    assert not bad, f"the resumed record differs from the uninterrupted search's at {bad}"
    assert torch.equal(after.theta[-1], load_search(cut).theta), "the resumed record's last θ is not α*"


def test_change_counts_are_zero_between_identical_moments(searched):
    run, res = searched
    rep = replay.load_replay(run, res.layout)
    same = replay.Replay.from_history(load_theta_history(RunDir(run).search.theta_history)._replace(
        theta=rep.theta[[0, 0, -1, -1]], moments=[Moment(0, 1), Moment(0, 2), Moment(0, 4), Moment(1, 4)]))
    rows = replay.change_counts(same, res.genotype)
    assert rows[0]["vs_previous"] is None, f"the first moment has a predecessor count {rows[0]['vs_previous']}"
    assert rows[1]["vs_previous"] == 0, f"two identical θ differ in {rows[1]['vs_previous']} kept edges"
    assert rows[3]["vs_previous"] == 0, f"two identical θ differ in {rows[3]['vs_previous']} kept edges"
    assert rows[3]["vs_final"] == 0, f"the final θ differs from α* in {rows[3]['vs_final']} kept edges"
    real = replay.change_counts(rep, res.genotype)
    kept = res.genotype.num_kept_edges()
    assert all(0 <= r["vs_final"] <= kept for r in real), f"change counts outside 0…{kept}: {real}"
    assert real[-1]["vs_final"] == 0, f"the last recorded moment differs from α*: {real[-1]}"
    fig = replay.changes_figure(rep, res.genotype, at=1)
    assert fig.layout.meta["changes"] == real, "the change chart does not plot change_counts"


def test_a_damaged_or_foreign_record_is_a_clear_error(searched, tmp_path):
    run, res = searched
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    path = RunDir(bad).search.theta_history
    tensors, meta = load_tensors(path)
    save_tensors(path, {"theta": tensors["theta"][:, :-1]}, meta)
    with pytest.raises(ArtifactError, match="the record needs float32"):
        replay.load_replay(bad, res.layout)
    save_tensors(path, tensors, {**meta, "moments": meta["moments"][::-1]})
    with pytest.raises(ArtifactError, match="out of order"):
        replay.load_replay(bad, res.layout)
    save_tensors(path, tensors, {**meta, "moments": "epoch one"})
    with pytest.raises(ArtifactError, match="replay record"):
        replay.load_replay(bad, res.layout)
    path.write_bytes(b"\x80\x04not safetensors but a pickle's first bytes")
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        replay.load_replay(bad, res.layout)
    path.unlink()
    assert replay.load_replay(bad, res.layout) is None, "a search without a record has a replay"


# -- the Search page -------------------------------------------------------------------------------
@pytest.fixture
def home(home, monkeypatch):
    monkeypatch.delenv("NES_DEMO_DIR", raising=False)
    return home


def search_page(run: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if run:
        at.query_params["run"] = run
    at.run()
    at.switch_page("pages/search.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def replay_cells(at: AppTest) -> list[dict]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return [s for s in specs if (s["layout"].get("meta") or {}).get("cell_type")
            and "replay" in json.dumps(s["layout"].get("title", ""))]


def test_the_replay_slider_redraws_the_cell(home, searched):
    store = Store()
    run = Path(store.register_run("replayed"))
    shutil.copytree(searched[0], run, dirs_exist_ok=True)
    at = search_page("replayed")
    slider = at.select_slider(key="moment")
    last = len(expected_moments(searched[1].steps // 2, 2)) - 1
    assert slider.value == last, f"the replay starts at moment {slider.value}, expected the last ({last}: α*)"
    before = replay_cells(at)
    assert before, "the Search page draws no replayed cell"
    slider.set_value(0).run()
    assert not at.exception, [e.value for e in at.exception]
    after = replay_cells(at)
    assert after and after != before, "moving the replay slider did not change the replayed cell figure"
    assert not at.error, f"the replay shows errors: {[e.value for e in at.error]}"


@pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")
def test_the_demo_without_a_record_says_so_in_one_line(home):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()  # the first visit copies the demo into the store
    RunDir(Path(home, "demo")).search.theta_history.unlink(missing_ok=True)  # a demo rebuilt later may hold one
    at.switch_page("pages/search.py").run()
    assert not at.exception, [e.value for e in at.exception]
    notes = [c.value for c in at.caption if c.value == replay.MISSING_NOTE]
    assert notes, f"the Search page on the demo does not say {replay.MISSING_NOTE!r}"
    assert not at.select_slider, "the Search page offers a replay slider without a record"
    assert not at.error, f"the demo's Search page shows errors: {[e.value for e in at.error]}"
    RunDir(Path(home, "demo")).search.theta_history.write_bytes(b"\x80\x04 a pickle, not a record")
    at.run()
    assert not at.exception, f"a damaged record crashes the page: {[e.value for e in at.exception]}"
    errors = [e.value for e in at.error if "replay" in e.value]
    assert errors and "theta_history.safetensors" in errors[0], \
        f"a damaged record gives no message naming the file: {[e.value for e in at.error]}"
