"""Dataset shift: corruptions that are deterministic and keep images images, validation and test
corruptions apart, and the shift table of real trained members (cache, schema, exact ledger)."""
from __future__ import annotations

import json

import pytest
import torch

from helpers import digits_members, nes
from nes.corruptions import (CORRUPTIONS, SEVERITIES, TABLES, TEST_CORRUPTIONS, VAL_CORRUPTIONS, CorruptionError,
                             corrupt, level)
from nes.method.ledger import TERMS
from nes.method.scoring import MemberProbs
from nes.method.shift import CLEAN, ShiftSettings, load_reports, shift_report

ROW_KEYS = ("corruption", "severity", *TERMS)


def _images(n: int = 12, c: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, c, size, size, dtype=torch.uint8)
    q = size // 4
    x[:, :, q:-q, q:-q] = torch.randint(60, 256, (n, c, size - 2 * q, size - 2 * q), generator=g, dtype=torch.uint8)
    return x


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (1, 8)])
def test_a_corruption_keeps_shape_dtype_and_range_and_is_deterministic(name, channels, size):
    x = _images(c=channels, size=size)
    for s in SEVERITIES:
        y = corrupt(x, name, s, seed=3)
        assert y.shape == x.shape, f"{name} s{s} changed the shape {tuple(x.shape)} → {tuple(y.shape)}"
        assert y.dtype == torch.uint8, f"{name} s{s} returned {y.dtype}"
        assert torch.equal(y, corrupt(x, name, s, seed=3)), f"{name} s{s} differs between two calls with one seed"
        assert not torch.equal(y, x), f"{name} s{s} left the images unchanged"


def test_another_seed_gives_other_random_corruptions():
    x = _images()
    for name in ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "rotate", "translate"):
        assert not torch.equal(corrupt(x, name, 3, seed=0), corrupt(x, name, 3, seed=1)), f"{name} ignores its seed"


def test_validation_and_test_corruptions_never_overlap():
    assert not set(VAL_CORRUPTIONS) & set(TEST_CORRUPTIONS), "a corruption both selects and tests"
    assert len(TEST_CORRUPTIONS) >= 8, f"only {len(TEST_CORRUPTIONS)} test corruptions"
    assert set(CORRUPTIONS) == set(TABLES), "a corruption without its severity table (or the reverse)"
    assert all(len(t) == 5 for m, c in TABLES.values() for t in (m, c) if t is not None), "a table without 5 severities"


def test_the_tables_follow_the_image_size():
    assert level("gaussian_noise", 5, 28) == pytest.approx(0.38), "28×28 does not use MNIST-C's table"
    assert level("gaussian_noise", 5, 32) == pytest.approx(0.10), "32×32 does not use CIFAR-10-C's table"
    assert level("translate", 5, 8) == pytest.approx(5 * 8 / 28), "a length is not scaled to 8×8 images"


def test_a_bad_corruption_request_says_what_is_wrong():
    with pytest.raises(CorruptionError, match="unknown corruption"):
        corrupt(_images(), "fog", 1)
    with pytest.raises(CorruptionError, match="severity"):
        corrupt(_images(), "contrast", 6)
    with pytest.raises(CorruptionError, match="uint8"):
        corrupt(_images().float(), "contrast", 1)


# ----------------------------------------------------------------------------- real members
@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """Two smoke members on digits and their shift report (64 images per condition)."""
    run = digits_members(tmp_path_factory.mktemp("shift") / "run", ["m0", "m1"], seed=5)
    report, probs = shift_report(run, ["m0", "m1"], ShiftSettings(images=64))
    return run, report, probs


def test_severity_5_damages_a_trained_member_more_than_severity_1(shifted):
    _, report, _ = shifted
    acc = {r["severity"]: r["mean_member_accuracy"] for r in report["by_severity"]}
    assert acc[5] < acc[1], f"members' accuracy at severity 5 ({acc[5]:.3f}) is not below severity 1 ({acc[1]:.3f})"
    assert acc[1] <= acc[0] + 0.05, f"severity 1 ({acc[1]:.3f}) scores clearly above the clean images ({acc[0]:.3f})"


def test_every_row_has_the_ledger_and_its_identities_hold(shifted):
    _, report, _ = shifted
    rows = report["rows"] + report["by_severity"]
    assert len(report["rows"]) == 1 + len(TEST_CORRUPTIONS) * 5, f"{len(report['rows'])} rows, not clean + 8 × 5"
    for r in rows:
        missing = [k for k in ROW_KEYS if k not in r]
        assert not missing, f"row {r.get('corruption')} s{r.get('severity')} lacks {missing}"
        for s in ("nll", "brier"):
            gap = abs(r[s] - (r[f"mean_member_{s}"] - r[f"diversity_{s}"]))
            assert gap < 1e-6, f"{r['corruption']} s{r['severity']}: {s} ≠ mean member − diversity by {gap:.2e}"


def test_the_clean_condition_is_the_members_own_test_scoring(shifted):
    run, _, probs = shifted
    saved = MemberProbs.load(run, ["m0", "m1"])
    pick = torch.randperm(len(saved.test_y), generator=torch.Generator().manual_seed(0))[:64]  # ShiftSettings.seed 0
    assert torch.equal(saved.test_y[pick], probs.y), "the shift images are not the members' test images"
    gap = (probs.test[CLEAN] - saved.test[:, pick]).abs().max().item()
    assert gap < 1e-2, f"clean probabilities differ from the members' saved test probabilities by {gap:.3g}"


def test_member_probabilities_are_cached_and_reused(shifted):
    run, _, _ = shifted
    files = sorted((run / "members" / "m0" / "shift").glob("*.safetensors"))
    assert len(files) == 1, f"expected one cache file for m0, found {[f.name for f in files]}"
    before = files[0].stat().st_mtime_ns
    shift_report(run, ["m0", "m1"], ShiftSettings(images=64))
    assert files[0].stat().st_mtime_ns == before, "a second shift of the same members recomputed m0's cache"
    assert list((run / "shift" / "images").glob("test_n64_*.safetensors")), "the shifted test images are not cached"


def test_shift_json_schema_and_saved_reports(shifted):
    run, _, _ = shifted
    r = nes("shift", "--run", str(run), "--images", "64", "--json")
    assert r.returncode == 0, f"shift --json failed: {r.stderr[-800:]}"
    out = json.loads(r.stdout)
    rep = out["reports"]["ensemble"]
    for key in ("members", "images", "select", "rows", "by_severity", "corruptions"):
        assert key in rep, f"shift --json lacks {key!r}"
    assert rep["corruptions"]["test"] == list(TEST_CORRUPTIONS), "the report does not name its test corruptions"
    assert "ensemble" in load_reports(run), "RUN/shift/ensemble.json was not written or not read back"


def test_shifted_selection_uses_the_validation_corruptions(shifted):
    run, _, _ = shifted
    report, probs = shift_report(run, ["m0", "m1"], ShiftSettings(images=64, select="shifted"))
    assert probs.val is not None and set(k.rsplit("_", 1)[0] for k in probs.val if k != CLEAN) == set(VAL_CORRUPTIONS), \
        "select=shifted did not score the members on the validation corruptions"
    assert report["select"] == "shifted", "the report does not say which protocol chose the best member"


def test_bad_shift_settings_exit_2_and_write_nothing(shifted):
    run, _, _ = shifted
    before = sorted(p.name for p in (run / "shift").glob("*.json"))
    r = nes("shift", "--run", str(run), "--images", "0")
    assert r.returncode == 2, f"--images 0 exited {r.returncode}: {r.stderr[-300:]}"
    assert "--images" in r.stderr, f"the message does not name the setting: {r.stderr[-300:]}"
    assert sorted(p.name for p in (run / "shift").glob("*.json")) == before, "a refused shift changed the reports"


def test_an_export_records_the_ensembles_shift_metrics(shifted, tmp_path):
    from nes.export.write import export_ensemble
    from nes.runs.tasks import shift_task

    run, _, _ = shifted
    report = shift_task(run, {"images": 64})["reports"]["ensemble"]
    export_ensemble(run, ["m0", "m1"], tmp_path / "bundle", verify=False)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    shift = manifest["ensemble"].get("shift")
    assert shift is not None, "the manifest has no shift metrics although the run has a shift report of its members"
    assert [r["severity"] for r in shift["by_severity"]] == [0, 1, 2, 3, 4, 5], "the manifest's severities"
    assert shift["by_severity"][5]["nll"] == pytest.approx(report["by_severity"][5]["nll"]), \
        "the manifest's severity-5 NLL is not the shift report's"
    card = (tmp_path / "bundle" / "README.md").read_text()
    assert "Under dataset shift" in card, "the model card does not show the shift metrics"


def test_compare_page_severity_slider_shows_each_ensemble_at_that_severity(home):
    from streamlit.testing.v1 import AppTest

    from helpers import ROOT

    at = AppTest.from_file(str(ROOT / "explorer_app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    slider = next((s for s in at.select_slider if s.label == "Severity"), None)
    assert slider is not None, "the Compare page has no severity slider for the demo's shift reports"
    assert list(slider.options) == ["0", "1", "2", "3", "4", "5"], f"severities offered: {slider.options}"

    def shift_table():
        tables = [t.value for t in at.dataframe if "diversity D" in t.value.columns]
        assert tables, "no table with the diversity term under the slider"
        return tables[0]
    worst = shift_table()
    assert set(worst["method"]) == {"EdgeNES (this run)", "DeepEns"}, f"methods under shift: {list(worst['method'])}"
    slider.set_value(0).run()
    assert not at.exception, [e.value for e in at.exception]
    clean = shift_table()
    assert (clean["NLL"] < worst["NLL"]).all(), "the clean NLL is not below severity 5's: the slider changed nothing"
    said = " ".join(m.value for m in at.markdown)
    assert "On the clean images" in said, "the verdict sentence does not follow the slider to severity 0"


def test_compare_py_shift_section_tables_each_method_and_says_the_verdict():
    import importlib.util

    from helpers import ROOT
    from nes.explorer.demo import DEMO_DIR
    from nes.explorer.shiftview import reports

    spec = importlib.util.spec_from_file_location("compare_bench_shift", ROOT / "benchmarks" / "compare.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    found = reports(DEMO_DIR)
    edges = {**found["ensemble"], "label": "edgenes-edges_s0"}
    lines = bench.shift_section([{"deepens": {"shift": found["deepens_s0"]}, "edgenes-edges": {"shift": edges}}])
    text = "\n".join(lines)
    assert "| DeepEns |" in text and "| EdgeNES (edges) |" in text, f"a method is missing from the shift table:\n{text}"
    assert "At shift severity 5" in text, f"no verdict at severity 5 in the shift section:\n{text}"


def test_the_frozen_inference_network_predicts_what_the_member_does(shifted):
    from nes.layout import RunDir
    from nes.method.shift import inference_network, member_network, split_images
    from nes.method.train import read_member

    run, _, _ = shifted
    d = RunDir(run).member("m0")
    member = read_member(d)
    x, _, info = split_images(member.config, "test", 32, 0)
    net = member_network(d, member, info, torch.device("cpu"))
    batch = ((x.float() / 255 - info.mean[0]) / info.std[0]).contiguous(memory_format=torch.channels_last)
    frozen = inference_network(net, batch)
    assert frozen is not net, "the member's network was not traced and frozen"
    with torch.no_grad():
        gap = (frozen(batch) - net(batch)).abs().max().item()
    assert gap < 1e-4, f"the frozen network's logits differ from the member's by {gap:.2e}"


def test_a_retrained_or_damaged_member_cache_is_recomputed(shifted):
    import os

    from nes.layout import RunDir
    from nes.method.shift import member_probs, shifted_images
    from nes.method.train import read_member

    run, _, _ = shifted
    rd = RunDir(run)
    d = rd.member("m1")
    s = ShiftSettings(images=64)
    cfg = read_member(d).config
    images, y, info = shifted_images(rd, cfg, s, "test")
    member_probs(d, images, y, info, s.key("test", cfg), torch.device("cpu"))
    cache = d.path / "shift" / f"{s.key('test', cfg)}.safetensors"
    before = cache.stat().st_mtime_ns
    st = d.weights.stat()
    os.utime(d.weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # as a retraining rewrites them
    member_probs(d, images, y, info, s.key("test", cfg), torch.device("cpu"))
    assert cache.stat().st_mtime_ns != before, "new weights reused the probabilities of the old ones"
    cache.write_bytes(b"damaged")
    probs = member_probs(d, images, y, info, s.key("test", cfg), torch.device("cpu"))
    assert probs[CLEAN].shape == (len(y), 10), "a damaged cache was not recomputed"
