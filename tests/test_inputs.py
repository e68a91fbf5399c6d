"""Every input bounded and every file named (issue 23, classes 3, 4, 5, 10, 11): JSON artifacts of
the wrong shape, `predict` inputs too large or not regular files, manifest numbers out of range,
and `export --out` inside a run. Real files; real CLI processes where the exit code matters."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import ROOT, nes as nes_cli
from nes.artifacts import ArtifactError
from nes.cli.common import genotype_arg
from nes.config import SearchConfig, TrainConfig, from_preset
from nes.explorer.runview import RunView
from nes.export.bundle import BundleError, load_ensemble
from nes.export.images import MAX_INPUT_VALUES, load_images
from nes.export.manifest import model_sha256
from nes.export.write import export_ensemble, plan_export
from nes.layout import RunDir
from nes.method.darts import load_search, search
from nes.method.interop_nni import load_genotype
from nes.method.space import Genotype
from nes.method.train import retrain
from nes.runs.tasks import member_config, resolve_genotype

STAR = Genotype(reduce=((("sep_conv_3x3", 1),), (("skip_connect", 0),), (("avg_pool_3x3", 2),), (("max_pool_3x3", 3),)))
MB = 1 << 20


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A digits run: a one-epoch smoke search and one smoke member m0."""
    r = tmp_path_factory.mktemp("inputs") / "run"
    torch.set_num_threads(1)
    search(from_preset(SearchConfig, "smoke", {"epochs": 1}), r, "cpu")
    retrain(from_preset(TrainConfig, "smoke", {"epochs": 1}), STAR, r, "m0", "cpu")
    return r


@pytest.fixture(scope="module")
def bundle(run, tmp_path_factory) -> Path:
    return export_ensemble(run, ["m0"], tmp_path_factory.mktemp("bundles") / "b").path


def exit_2(*args: str, names: str) -> subprocess.CompletedProcess:
    """Run the CLI; assert it exits 2 with a message (no traceback) that names `names`."""
    r = nes_cli(*args)
    assert r.returncode == 2, f"{args}: exit {r.returncode}, expected 2:\n{r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr, f"{args}: a traceback instead of a message:\n{r.stderr[-2000:]}"
    assert names in r.stderr, f"{args}: the message does not name {names!r}:\n{r.stderr[-2000:]}"
    return r


# ----------------------------------------------------------------------------- JSON artifacts (class 5)

# every JSON artifact of a run, and the readers that read it (each must name the file when it is broken)
READERS = {
    "members/m0/config.json": [lambda r: RunDir(r).member("m0").record(), lambda r: plan_export(r, ["m0"])],
    "members/m0/metrics.json": [lambda r: RunDir(r).member("m0").seconds(), lambda r: plan_export(r, ["m0"])],
    "members/m0/genotype.json": [lambda r: RunView(r).member("m0"), lambda r: plan_export(r, ["m0"]),
                                 lambda r: RunDir(r).member("m0").record()],
    "members/m0/history.json": [lambda r: RunView(r).member("m0")],
    "search/genotype.json": [load_search, lambda r: resolve_genotype(r, {}), lambda r: genotype_arg(RunDir(r), "star")],
    "search/config.json": [load_search],
    "search/history.json": [lambda r: RunView(r).search_history(), lambda r: RunDir(r).search.seconds()],
    "run.json": [lambda r: RunDir(r).info(), lambda r: member_config(r, {}), lambda r: plan_export(r, ["m0"])],
}

BAD_JSON = {
    "list": b"[1, 2]",
    "null": b"null",
    "non-utf8": b'{"genotype": "\xff\xfe"}',
    "deep": b"[" * 100_000 + b"]" * 100_000,
}

CASES = [(rel, i, bad) for rel, readers in READERS.items() for i in range(len(readers)) for bad in BAD_JSON]


@pytest.fixture(scope="module")
def scratch(run, tmp_path_factory) -> Path:
    """A copy of the run that the JSON cases break one file at a time (each puts its file back)."""
    return Path(shutil.copytree(run, tmp_path_factory.mktemp("scratch") / "run"))


@pytest.mark.parametrize("rel, i, bad", CASES, ids=[f"{rel}-{i}-{bad}" for rel, i, bad in CASES])
def test_every_json_reader_names_the_broken_file(scratch, rel, i, bad):
    path = scratch / rel
    good = path.read_bytes()
    path.write_bytes(BAD_JSON[bad])
    try:
        with pytest.raises(ArtifactError) as e:
            READERS[rel][i](scratch)
    finally:
        path.write_bytes(good)
    assert rel.split("/")[-1] in str(e.value) and str(path.parent.name) in str(e.value), \
        f"reader {i} of {rel} given {bad} JSON: the message does not name the file: {e.value}"


@pytest.mark.parametrize("content", [{"dataset": None, "preset": None, "info": None, "train_sets": None},
                                     {"preset": 3}, {"train_sets": [1]}], ids=["nulls", "int-preset", "list-sets"])
def test_run_json_fields_of_the_wrong_type_name_the_file(run, tmp_path, content):
    bad = Path(shutil.copytree(run, tmp_path / "run"))
    (bad / "run.json").write_text(json.dumps(content))
    with pytest.raises(ArtifactError, match="run.json: wrong value of") as e:
        RunDir(bad).info()
    assert "unknown preset" not in str(e.value), f"run.json {content}: blames the preset, not the file: {e.value}"
    exit_2("retrain", "--run", str(bad), "--genotype", "star", "--name", "x", names="run.json")


def test_a_metrics_field_of_the_wrong_shape_names_the_file(run, tmp_path):
    bad = Path(shutil.copytree(run, tmp_path / "run"))
    (bad / "members" / "m0" / "metrics.json").write_text(json.dumps({"metrics": [1, 2]}))
    with pytest.raises(ArtifactError, match="metrics.json"):
        plan_export(bad, ["m0"])


@pytest.mark.parametrize("rel, args", [
    ("members/m0/config.json", ["export", "--members", "m0", "--no-verify"]),
    ("members/m0/metrics.json", ["export", "--members", "m0", "--no-verify"]),
    ("search/genotype.json", ["retrain", "--genotype", "star", "--name", "x"]),
    ("search/config.json", ["hypernet", "--regularizer", "edges", "--preset", "smoke"])], ids=["config", "metrics", "genotype", "search-config"])
def test_cli_exits_2_naming_a_json_file_of_the_wrong_shape(run, tmp_path, rel, args):
    bad = Path(shutil.copytree(run, tmp_path / "run"))
    (bad / rel).write_text("[1, 2]")
    out = ["--out", str(tmp_path / "b")] if args[0] == "export" else []
    exit_2(args[0], "--run", str(bad), *args[1:], *out, names=rel.split("/")[-1])
    assert not (tmp_path / "b").exists(), f"{rel}: a refused export left a bundle folder"


@pytest.mark.parametrize("content", [b'{"normal": "\xff"}', b"[1]", b"[" * 100_000 + b"]" * 100_000, b"null"],
                         ids=["non-utf8", "list", "deep", "null"])
def test_a_broken_genotype_file_is_named(run, tmp_path, content):
    g = tmp_path / "geno.json"
    g.write_bytes(content)
    with pytest.raises(ArtifactError, match="geno.json"):
        load_genotype(str(g))
    exit_2("retrain", "--run", str(run), "--genotype", str(g), "--name", "x", names="geno.json")


def test_a_manifest_nested_100000_deep_is_named_by_predict(bundle, tmp_path):
    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    (b / "manifest.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    np.savez(tmp_path / "x.npz", images=np.zeros((2, 1, 8, 8), np.uint8))
    exit_2("predict", str(b), str(tmp_path / "x.npz"), names="manifest.json")


# ----------------------------------------------------------------------------- predict inputs (classes 3, 10)


def _npz_declaring(path: Path, shape: tuple, dtype=np.uint8, zeros: int = 0) -> Path:
    """An .npz whose images.npy header declares `shape` of `dtype`, followed by `zeros` zero bytes
    streamed through deflate (the test never holds them: 512 MiB deflate to ~0.5 MB)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("images.npy", "w", force_zip64=True) as w:
            np.lib.format.write_array_header_1_0(w, header)
            chunk = bytes(MB)
            for _ in range(zeros // MB):
                w.write(chunk)
    return path


PREDICT_AND_MEASURE = """
import resource, subprocess, sys
r = subprocess.run([sys.executable, "-m", "nes", "predict", *sys.argv[1:]], capture_output=True, text=True)
sys.stderr.write(r.stderr)
print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB on Linux: predict's peak
"""


def test_an_npz_bomb_is_refused_from_its_header_with_bounded_memory(bundle, tmp_path):
    bomb = _npz_declaring(tmp_path / "bomb.npz", (MB * 512 // 64, 1, 8, 8), zeros=512 * MB)
    assert bomb.stat().st_size < 8 * MB, f"the bomb is {bomb.stat().st_size} bytes; it should deflate to < 8 MB"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NES_THREADS": "1", "NES_NO_PROGRESS": "1"}
    for args in ([str(bundle), str(bomb)], [str(bundle), str(bomb), "--batch-size", "4096"]):
        r = subprocess.run([sys.executable, "-c", PREDICT_AND_MEASURE, *args], capture_output=True, text=True,
                           env=env, timeout=600)
        code, peak_kib = map(int, r.stdout.split())
        assert code == 2, f"predict {args[1:]}: exit {code}, expected 2:\n{r.stderr[-2000:]}"
        assert "bomb.npz" in r.stderr, f"predict on the npz bomb does not name the file:\n{r.stderr[-2000:]}"
        assert "nothing was inflated" in r.stderr, f"predict on the npz bomb does not say why:\n{r.stderr[-2000:]}"
        assert peak_kib < 1024 * 1024, f"predict on the npz bomb peaked at {peak_kib / 1024:.0f} MiB RSS (over 1 GB)"


@pytest.mark.parametrize("shape, dtype, says", [
    ((10 ** 12 // 64, 1, 8, 8), np.uint8, "declares"), ((10 ** 6, 10 ** 6), np.float64, "shape"),
    ((4, 1, 8, 8), np.int64, "dtype"), ((4, 1, 8, 8, 1), np.uint8, "shape"), ((4, 3, 8, 8), np.uint8, "shape")],
    ids=["1e12-elements", "not-images", "int64", "5-dims", "3-channels"])
def test_an_npz_header_that_does_not_fit_the_model_is_refused_unread(tmp_path, shape, dtype, says):
    p = _npz_declaring(tmp_path / "x.npz", shape, dtype)
    assert p.stat().st_size < 4096, f"the test file is {p.stat().st_size} bytes; it should be a header only"
    with pytest.raises(ValueError, match=says) as e:
        load_images(p, 1, 8, 8)
    assert "x.npz" in str(e.value), f"npz of shape {shape} {np.dtype(dtype)}: the message does not name the file"


@pytest.mark.parametrize("dtype, order", [("<f4", "C"), (">f4", "C"), ("u1", "F"), ("<f8", "F")])
def test_npz_arrays_read_from_their_header_equal_numpys(tmp_path, dtype, order):
    x = np.random.default_rng(0).random((3, 8, 8, 1))
    x = (x * 255).astype(dtype) if dtype == "u1" else x.astype(dtype)
    np.savez_compressed(tmp_path / "x.npz", images=np.asarray(x, order=order))
    got, names = load_images(tmp_path / "x.npz", 1, 8, 8)
    assert np.array_equal(got, x) and got.shape == x.shape, f"{dtype} {order}-order: the array read differs"
    assert got.dtype.isnative, f"{dtype}: the array read is not in native byte order ({got.dtype})"


def test_npz_inputs_that_are_not_arrays_are_named(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros((2, 8, 8), np.uint8))
    os.replace(tmp_path / "plain.npy", tmp_path / "plain.npz")
    np.savez(tmp_path / "obj.npz", images=np.array([{"a": 1}, None], dtype=object))
    np.savez(tmp_path / "other.npz", pixels=np.zeros((2, 8, 8), np.uint8))
    for name, says in (("plain.npz", "not a readable .npz"), ("obj.npz", "dtype object"), ("other.npz", "pixels")):
        with pytest.raises(ValueError, match=says) as e:
            load_images(tmp_path / name, 1, 8, 8)
        assert name in str(e.value), f"{name}: the message does not name the file: {e.value}"


def test_an_input_over_the_bound_is_refused_before_it_is_read(tmp_path):
    n = MAX_INPUT_VALUES // 64 + 1
    p = _npz_declaring(tmp_path / "big.npz", (n, 8, 8))
    with pytest.raises(ValueError, match="split the file"):
        load_images(p, 1, 8, 8)


def test_batch_size_is_bounded(bundle, tmp_path):
    np.savez(tmp_path / "x.npz", images=np.zeros((2, 1, 8, 8), np.uint8))
    for size in ("100000000", "0", "-3"):
        exit_2("predict", str(bundle), str(tmp_path / "x.npz"), "--batch-size", size, names="--batch-size")
    with pytest.raises(ValueError, match="batch size"):
        load_ensemble(bundle).predict(np.zeros((2, 1, 8, 8), np.uint8), batch_size=10 ** 8)


def test_a_fifo_named_like_an_image_is_refused_not_waited_on(bundle, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    os.mkfifo(folder / "f.png")
    exit_2("predict", str(bundle), str(folder), names="f.png")  # a blocked read would run into the 600 s timeout
    os.mkfifo(tmp_path / "x.npz")
    exit_2("predict", str(bundle), str(tmp_path / "x.npz"), names="x.npz: not a regular file")


# ----------------------------------------------------------------------------- manifest ranges (classes 4, 9, 11)


def _pre(**kw):
    return lambda m: m["dataset"]["preprocess"].update(kw)


def _cal(**kw):
    return lambda m: m["ensemble"].update(calibrated={**(m["ensemble"]["calibrated"] or {"temperature": 1.0}), **kw})


# every number of a manifest out of its range, with the key the refusal must name
OUT_OF_RANGE = {
    "pad-6000": (_pre(pad=6000), "dataset.preprocess.pad"),
    "pad-1e6": (_pre(pad=10 ** 6), "dataset.preprocess.pad"),
    "pad-negative": (_pre(pad=-1), "dataset.preprocess.pad"),
    "image-size-huge": (_pre(image_size=10 ** 6), "dataset.preprocess.image_size"),
    "mean-1e308": (_pre(mean=[1e308]), "dataset.preprocess.mean"),
    "mean-negative": (_pre(mean=[-0.5]), "dataset.preprocess.mean"),
    "std-tiny": (_pre(std=[1e-30]), "dataset.preprocess.std"),
    "std-huge": (_pre(std=[1e30]), "dataset.preprocess.std"),
    "scale-zero": (_pre(scale=0), "dataset.preprocess.scale"),
    "scale-huge": (_pre(scale=1e300), "dataset.preprocess.scale"),
    "height-huge": (lambda m: m["dataset"]["input"].update(height=10 ** 6), "dataset.input.height"),
    "channels-huge": (lambda m: m["dataset"]["input"].update(channels=10 ** 6), "dataset.input.channels"),
    "classes-huge": (lambda m: m["dataset"].update(num_classes=10 ** 9), "dataset.num_classes"),
    "c-huge": (lambda m: m["members"][0]["network"].update(c=10 ** 6), "members[0].network.c"),
    "layers-huge": (lambda m: m["members"][0]["network"].update(layers=10 ** 6), "members[0].network.layers"),
    "lam-huge": (lambda m: m["members"][0].update(lam=1e300), "members[0].lam"),
    "seed-negative": (lambda m: m["members"][0].update(seed=-1), "members[0].seed"),
    "seed-huge": (lambda m: m["members"][0].update(seed=2 ** 80), "members[0].seed"),
    "tensor-dim-huge": (lambda m: m["members"][0]["tensors"].update(
        {next(iter(m["members"][0]["tensors"])): [2 ** 40]}), "members[0].tensors."),
    "temperature-zero": (_cal(temperature=0), "ensemble.calibrated.temperature"),
    "temperature-huge": (_cal(temperature=1e9), "ensemble.calibrated.temperature"),
    "temperature-text": (_cal(temperature="1.5"), "ensemble.calibrated.temperature"),
    "calibrated-accuracy": (_cal(accuracy=5), "ensemble.calibrated.accuracy"),
    "calibrated-nll": (_cal(nll=-1), "ensemble.calibrated.nll"),
    "calibrated-list": (lambda m: m["ensemble"].update(calibrated=[1.3]), "ensemble.calibrated"),
    "metric-inf": (lambda m: m["ensemble"]["metrics"].update(accuracy=float("inf")), "ensemble.metrics.accuracy"),
}


def _rehashed_copy(bundle: Path, dst: Path, edit, rehash: bool = True) -> Path:
    """A copy of `bundle` whose manifest `edit` changed, its model_sha256 recomputed (a careful
    tamperer), so that only the value checks can refuse it."""
    shutil.copytree(bundle, dst)
    m = json.loads((dst / "manifest.json").read_text())
    edit(m)
    if rehash:
        m["model_sha256"] = model_sha256(m)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.mark.parametrize("case", list(OUT_OF_RANGE))
def test_every_manifest_number_out_of_range_is_refused(bundle, tmp_path, case):
    edit, key = OUT_OF_RANGE[case]
    b = _rehashed_copy(bundle, tmp_path / "b", edit)
    with pytest.raises(BundleError, match="wrong type or value") as e:
        load_ensemble(b)
    assert key in str(e.value), f"{case}: the refusal does not name {key}: {e.value}"


@pytest.mark.parametrize("case", ["pad-6000", "pad-1e6", "mean-1e308"])
def test_predict_refuses_an_out_of_range_bundle(bundle, tmp_path, case):
    b = _rehashed_copy(bundle, tmp_path / "b", OUT_OF_RANGE[case][0])
    np.savez(tmp_path / "x.npz", images=np.zeros((5, 1, 8, 8), np.uint8))
    r = exit_2("predict", str(b), str(tmp_path / "x.npz"), names=OUT_OF_RANGE[case][1])
    assert "nan" not in r.stdout.lower(), f"{case}: predict printed NaN:\n{r.stdout}"


def test_a_tampered_temperature_fails_the_integrity_check(bundle, tmp_path):
    m = json.loads((bundle / "manifest.json").read_text())
    t = (m["ensemble"]["calibrated"] or {}).get("temperature")
    edit = _cal(temperature=(t or 1.0) * 1.25)
    with pytest.raises(BundleError, match="changed after export"):
        load_ensemble(_rehashed_copy(bundle, tmp_path / "b", edit, rehash=False))
    # a bundle hashed before the temperature was (the earlier definition) still loads
    old = _rehashed_copy(bundle, tmp_path / "old", lambda m: m.update(model_sha256=model_sha256(m, calibration=False)),
                         rehash=False)
    assert load_ensemble(old).member_names == ["m0"], "a bundle of the earlier model_sha256 no longer loads"


def test_deleting_model_sha256_does_not_skip_the_check(bundle, tmp_path):
    def edit(m):
        m.pop("model_sha256")
        m["dataset"]["class_names"].reverse()
    b = _rehashed_copy(bundle, tmp_path / "b", edit, rehash=False)
    with pytest.raises(BundleError, match="model_sha256 is missing"):
        load_ensemble(b)


# ----------------------------------------------------------------------------- export targets and weights (class 11)


@pytest.mark.parametrize("where", ["members/bx", "search/bx", "members", "exports"])
def test_export_into_the_run_outside_its_exports_is_refused(run, tmp_path, where):
    before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    exit_2("export", "--run", str(run), "--members", "m0", "--out", str(run / where), "--no-verify", names="inside the run")
    after = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    assert after == before, f"a refused export --out RUN/{where} changed the run: {set(after) ^ set(before)}"


def test_export_to_the_root_folder_is_a_message(run):
    exit_2("export", "--run", str(run), "--members", "m0", "--out", "/", "--no-verify", names="--out /")


def test_export_into_the_runs_exports_folder_is_allowed(run, tmp_path):
    res = export_ensemble(run, ["m0"], run / "exports" / "b", verify=False)
    assert (res.path / "manifest.json").is_file(), "export to RUN/exports/b wrote no manifest"
    shutil.rmtree(run / "exports")


def test_a_flipped_weight_byte_names_its_member(run, tmp_path):
    bad = Path(shutil.copytree(run, tmp_path / "run"))
    w = bad / "members" / "m0" / "weights.safetensors"
    data = bytearray(w.read_bytes())
    n = int.from_bytes(data[:8], "little")
    tensors = json.loads(data[8:8 + n])
    name = next(k for k, v in tensors.items() if k.startswith("classifier") and k.endswith("weight"))
    start = 8 + n + tensors[name]["data_offsets"][0]
    data[start + 3] ^= 0x40  # the exponent byte of the first classifier weight: a huge but finite value
    w.write_bytes(bytes(data))
    exit_2("export", "--run", str(bad), "--members", "m0", "--out", str(tmp_path / "b"), names="m0 (max |Δp|")


# ----------------------------------------------------------------------------- the app's pages (class 5)

PAGES = ("pages/explore.py", "pages/ensemble.py", "pages/search.py", "pages/hypernetwork.py", "pages/compare.py",
         "pages/export.py")


@pytest.mark.parametrize("rel", ["search/genotype.json", "search/config.json", "members/{m}/config.json",
                                 "members/{m}/metrics.json"])
def test_pages_name_a_json_file_of_the_wrong_shape(home, monkeypatch, rel):
    from streamlit.testing.v1 import AppTest

    from nes.explorer.demo import DEMO_DIR

    if not (DEMO_DIR / "demo.json").exists():
        pytest.skip("no bundled demo (assets/demo)")
    monkeypatch.setenv("NES_MAX_WORKERS", "1")
    monkeypatch.delenv("NES_DEMO_DIR", raising=False)
    at = AppTest.from_file(str(ROOT / "explorer_app.py"), default_timeout=120)
    at.run()  # installs the demo into the fresh store
    run = Path(home, "demo")
    path = run / rel.format(m=RunDir(run).finished_members()[0])
    path.write_text("[1, 2]")
    arch = run / "search" / "arch.safetensors"
    os.utime(arch, (arch.stat().st_atime, arch.stat().st_mtime + 5))  # the cached view of the run is rebuilt
    named = []
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, f"{page} with a broken {rel}: {[e.value for e in at.exception]}"
        errors = [e.value for e in at.error]
        assert not [e for e in errors if "Something went wrong" in e], f"{page} with a broken {rel}: {errors}"
        named += [page for e in errors if path.name in e and path.parent.name in e]
    assert named, f"no page names {rel} in its message"
