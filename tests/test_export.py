"""Export bundles: round trip against the run's saved probabilities, ONNX equivalence, the CLI,
and every bad input (tampered, missing or foreign files; wrong images)."""
import json
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import nes
from nes.data import DataError, load_dataset
from nes.export.bundle import SCHEMA_VERSION, BundleError, load_ensemble
from nes.export.images import load_images
from nes.export.onnx import onnx_max_diff
from nes.export.write import export_ensemble
from nes.method.scoring import MemberProbs
from helpers import digits_members, nes as nes_cli

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = ["m0", "m1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A digits run with two members of different random genotypes, trained with the smoke preset."""
    return digits_members(tmp_path_factory.mktemp("export") / "run", MEMBERS, 3)


@pytest.fixture(scope="module")
def bundle(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "digits_ens"
    res = export_ensemble(run, MEMBERS, out, make_zip=True)
    assert res.path == out, f"the bundle was written to {res.path}, asked for {out}"
    assert res.zip_path == out.with_name("digits_ens.zip"), \
        f"the zip is {res.zip_path}, expected digits_ens.zip beside the folder"
    assert res.zip_path.is_file(), f"no zip at {res.zip_path}"
    return out


def _test_images(run: Path) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = json.loads((run / "members" / MEMBERS[0] / "config.json").read_text())
    ds = load_dataset(cfg["dataset"], None, "cpu", cfg["limit"], cfg["test_limit"])
    return ds.test_x, ds.test_y


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(bundle, dst)
    return dst


def _edit_manifest(folder: Path, fn) -> None:
    p = folder / "manifest.json"
    m = json.loads(p.read_text())
    fn(m)
    p.write_text(json.dumps(m))


# ----------------------------------------------------------------------------- round trip


def test_bundle_files_and_manifest(bundle, run):
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["schema"] == "nes-ensemble", f"manifest schema {m['schema']!r}"
    assert m["schema_version"] == SCHEMA_VERSION == 1, \
        f"manifest schema_version {m['schema_version']}, the library's {SCHEMA_VERSION}, expected 1"
    assert [x["name"] for x in m["members"]] == MEMBERS
    assert {"nes", "torch", "safetensors", "python"} <= set(m["library"])
    ds = m["dataset"]
    assert ds["name"] == "digits", f"manifest dataset {ds['name']!r}"
    assert ds["num_classes"] == 10, f"manifest num_classes {ds['num_classes']}"
    assert len(ds["class_names"]) == 10, f"manifest class_names {ds['class_names']}"
    assert ds["input"] == {**ds["input"], "channels": 1, "height": 8, "width": 8}
    assert set(ds["preprocess"]) >= {"pad", "image_size", "mean", "std"}
    for x in m["members"]:
        f = bundle / x["file"]
        assert f.is_file(), f"member {x['name']}: no file {x['file']}"
        assert len(x["sha256"]) == 64, f"member {x['name']}: sha256 {x['sha256']!r} is not 64 hex digits"
        assert x["bytes"] == f.stat().st_size, \
            f"member {x['name']}: manifest says {x['bytes']} bytes, the file has {f.stat().st_size}"
        assert {"genotype", "lam", "seed", "metrics", "network", "tensors"} <= set(x)
        assert x["metrics"]["test_accuracy"] == json.loads(
            (run / "members" / x["name"] / "metrics.json").read_text())["metrics"]["test_accuracy"]
    assert [x["seed"] for x in m["members"]] == [0, 1]
    for key in ("architecture_js", "predictive_js"):
        mat = torch.tensor(m["diversity"][key])
        assert mat.shape == (2, 2), f"{key}: shape {tuple(mat.shape)} for 2 members"
        assert torch.equal(mat, mat.T), f"{key}: not symmetric"
        assert mat.diagonal().abs().max() == 0, f"{key}: a member's JS to itself is not 0: {mat.diagonal().tolist()}"
        assert 0 <= mat.min(), f"{key}: negative JS {float(mat.min())}"
        assert mat.max() <= math.log(2) + 1e-9, f"{key}: JS above ln 2: {float(mat.max())}"
    assert m["diversity"]["architecture_js"][0][1] > 0  # two different genotypes
    assert m["verification"]["checked"], "the bundle was not verified against the run"
    assert m["verification"]["max_abs_diff_vs_run"] <= 5e-3, \
        f"the bundle differs from the run by {m['verification']['max_abs_diff_vs_run']}"
    vs = m["ensemble"]["vs_best_member"]  # the ensemble's gain, with its paired bootstrap interval
    assert vs["best_member"] in MEMBERS
    for metric in ("accuracy", "nll"):
        d = vs[metric]
        assert d["lo"] <= d["value"] <= d["hi"], f"{metric} vs best member: {d['value']} outside [{d['lo']}, {d['hi']}]"
        assert d["n"] == m["ensemble"]["test_images"], \
            f"{metric} vs best member: measured on {d['n']} images, the ensemble on {m['ensemble']['test_images']}"
        assert d["within_noise"] == (d["lo"] <= 0 <= d["hi"])
    cal = m["ensemble"]["calibrated"]  # temperature scaling, fitted on the validation split
    assert cal["temperature"] > 0, f"temperature {cal['temperature']}"
    assert cal["accuracy"] == pytest.approx(m["ensemble"]["metrics"]["accuracy"]), \
        f"temperature scaling changed the accuracy: {cal['accuracy']} vs {m['ensemble']['metrics']['accuracy']}"
    card = (bundle / "README.md").read_text()
    assert "Against its best member" in card, "the model card does not compare the ensemble with its best member"
    assert "95% CI" in card, "the model card gives no 95% interval"
    assert f"T = {cal['temperature']:.3f}" in card
    for section in ("## Intended use", "## Data", "## Metrics", "## Limitations"):
        assert section in card
    assert all(name in card for name in MEMBERS)
    assert not any(p.name.endswith(".tmp") for p in bundle.parent.iterdir())  # no leftovers


def test_round_trip_reproduces_the_runs_members(bundle, run):
    model = nes.load_ensemble(bundle)
    assert isinstance(model, nes.EnsembleModel), f"load_ensemble gave a {type(model).__name__}, not an EnsembleModel"
    assert isinstance(model, torch.nn.Module), "the loaded ensemble is not a torch.nn.Module"
    assert not model.training, "the loaded ensemble is in training mode"
    x, y = _test_images(run)
    member_p = model.member_probs(x)
    saved = MemberProbs.load(run, MEMBERS)
    assert member_p.shape == (2, len(y), 10)
    assert torch.equal(saved.test_y, y), "the run's saved test labels differ from the dataset's"
    for i, name in enumerate(MEMBERS):  # saved probabilities are float16
        assert (member_p[i] - saved.test[i]).abs().max() < 2e-3, f"member {name} does not reproduce the run"
    probs = model.predict(x)
    assert torch.allclose(probs, member_p.mean(0), atol=1e-6)
    assert torch.allclose(probs.sum(1), torch.ones(len(y)), atol=1e-5)
    with torch.no_grad():  # forward() is the same function on [0, 1] floats
        assert torch.allclose(model(x.float() / 255), probs, atol=1e-6)
    # every accepted input form gives the same answer
    assert torch.allclose(model.predict(x.float() / 255), probs, atol=1e-6)
    assert torch.allclose(model.predict(x.numpy()), probs, atol=1e-6)
    assert torch.allclose(model.predict(x[:, 0]), probs, atol=1e-6)  # [N, H, W]
    assert torch.allclose(model.predict(x.permute(0, 2, 3, 1).numpy()), probs, atol=1e-6)  # NHWC
    assert torch.allclose(model.predict(x[0, 0]), probs[:1], atol=1e-6)  # one [H, W] image
    assert model.classify(x[:3]) == [model.class_names[i] for i in probs[:3].argmax(1).tolist()]
    # the zip loads to the same model
    zipped = load_ensemble(bundle.with_name(bundle.name + ".zip"))
    assert torch.equal(zipped.predict(x), probs)


def test_demo_bundle_reproduces_fashion_members(tmp_path):
    """The bundled demo (Fashion-MNIST, padded crop): the reloaded bundle matches its saved probabilities."""
    demo = ROOT / "assets" / "demo"
    names = sorted(p.name for p in (demo / "members").iterdir())
    try:
        load_dataset("fashion-mnist", None, "cpu", 10, 10, download=False)
    except DataError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    res = export_ensemble(demo, names, tmp_path / "demo_bundle")
    v = res.manifest["verification"]
    assert v["checked"], "the demo bundle was not verified against the run"
    assert v["images"] > 0, "the demo bundle was verified on no images"
    assert v["max_abs_diff_vs_run"] < 2e-3, f"the demo bundle differs from the run by {v['max_abs_diff_vs_run']}"
    assert v["argmax_agreement"] == 1.0, \
        f"the demo bundle agrees with the run on {v['argmax_agreement']:.2%} of the predictions"
    model = load_ensemble(res.path)
    assert (model.pad, model.image_size, model.channels, model.height) == (2, 28, 1, 28)
    assert res.manifest["ensemble"]["metrics"]["size"] == len(names)


# ----------------------------------------------------------------------------- ONNX


def test_onnx_export_matches_pytorch(run, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    res = export_ensemble(run, MEMBERS, tmp_path / "b", onnx=True, verify=False)
    o = res.manifest["onnx"]
    assert (res.path / "ensemble.onnx").is_file(), "no ensemble.onnx in the bundle"
    assert o["max_abs_diff"] <= 1e-4, f"ONNX differs from PyTorch by {o['max_abs_diff']}"
    assert o["opset"] > 0, f"ONNX opset {o['opset']}"
    model = load_ensemble(res.path)
    x, _ = _test_images(run)
    for n in (1, 37, len(x)):  # the batch dimension is dynamic
        assert onnx_max_diff(model, res.path / "ensemble.onnx", x[:n].float() / 255) <= 1e-4
    card = (res.path / "README.md").read_text()
    assert "ensemble.onnx" in card


# ----------------------------------------------------------------------------- CLI


def test_cli_export_and_predict(run, tmp_path):
    out = tmp_path / "cli_bundle"
    r = nes_cli("export", "--run", str(run), "--members", ",".join(MEMBERS), "--out", str(out), "--zip")
    assert r.returncode == 0, r.stderr
    assert "matches the run" in r.stdout, f"export does not say the bundle matches the run:\n{r.stdout}"
    assert (tmp_path / "cli_bundle.zip").is_file(), "export --zip wrote no cli_bundle.zip"
    x, _ = _test_images(run)
    np.savez(tmp_path / "imgs.npz", images=x[:7].numpy())
    r = nes_cli("predict", str(tmp_path / "cli_bundle.zip"), str(tmp_path / "imgs.npz"), "--json")
    assert r.returncode == 0, r.stderr
    out_json = json.loads(r.stdout)
    preds = out_json["predictions"]
    want = load_ensemble(out).predict(x[:7])
    assert len(preds) == 7, f"{len(preds)} predictions for 7 images"
    assert out_json["members"] == MEMBERS, f"predict lists members {out_json['members']}, expected {MEMBERS}"
    for p, w in zip(preds, want):
        assert abs(sum(p["probs"]) - 1) < 1e-4, f"predicted probabilities sum to {sum(p['probs'])}"
        assert p["class"] == int(w.argmax()), f"predict says class {p['class']}, the library {int(w.argmax())}"
        assert p["label"] == out_json["classes"][p["class"]]
    # a folder of PNGs gives the same answers as the array
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(x[i, 0].numpy()).save(folder / f"img{i}.png")
    r = nes_cli("predict", str(out), str(folder), "--json")
    assert r.returncode == 0, r.stderr
    assert [p["class"] for p in json.loads(r.stdout)["predictions"]] == [p["class"] for p in preds[:3]]
    r = nes_cli("predict", str(out), str(folder))
    assert r.returncode == 0, f"predict on a folder: exit {r.returncode}:\n{r.stderr}"
    assert "img0.png" in r.stdout, f"predict on a folder does not name img0.png:\n{r.stdout}"
    # errors: exit 2, one message, no traceback
    r = nes_cli("export", "--run", str(run), "--members", "m0,nope", "--out", str(tmp_path / "x"))
    assert r.returncode == 2, f"export of an unknown member: exit {r.returncode}, expected 2:\n{r.stderr}"
    assert "nope" in r.stderr, f"export does not name the unknown member nope:\n{r.stderr}"
    assert "Traceback" not in r.stderr, f"export of an unknown member: a traceback instead of a message:\n{r.stderr}"
    r = nes_cli("export", "--run", str(run), "--members", "m0", "--out", str(out))
    assert r.returncode == 2, f"export over a bundle: exit {r.returncode}, expected 2:\n{r.stderr}"
    assert "already exists" in r.stderr, f"export over a bundle does not say it already exists:\n{r.stderr}"
    assert "--force" in r.stderr, f"export over a bundle does not offer --force:\n{r.stderr}"
    r = nes_cli("export", "--run", str(run), "--members", "m0", "--out", str(out), "--force", "--no-verify")
    assert r.returncode == 0, r.stderr
    assert [m["name"] for m in json.loads((out / "manifest.json").read_text())["members"]] == ["m0"]
    (folder / "notes.txt").write_text("hello")
    r = nes_cli("predict", str(out), str(folder))
    assert r.returncode == 2, f"predict on a folder with a text file: exit {r.returncode}, expected 2:\n{r.stderr}"
    assert "notes.txt" in r.stderr, f"predict does not name notes.txt:\n{r.stderr}"
    assert "Traceback" not in r.stderr, \
        f"predict on a folder with a text file: a traceback instead of a message:\n{r.stderr}"


# ----------------------------------------------------------------------------- bad bundles


def test_flipped_byte_fails_the_hash_check(bundle, tmp_path):
    b = _copy(bundle, tmp_path)
    f = b / "members" / "m1.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"member 'm1'.*sha256.*corrupt or was modified"):
        load_ensemble(b)


def test_missing_member_file(bundle, tmp_path):
    b = _copy(bundle, tmp_path)
    (b / "members" / "m0.safetensors").unlink()
    with pytest.raises(BundleError, match=r"member 'm0'.*missing from the bundle"):
        load_ensemble(b)


def test_unknown_schema_version(bundle, tmp_path):
    b = _copy(bundle, tmp_path)
    _edit_manifest(b, lambda m: m.update(schema_version=2))
    with pytest.raises(BundleError, match=r"schema version 2 is not supported.*reads version 1"):
        load_ensemble(b)


def test_manifest_with_missing_keys_names_them(bundle, tmp_path):
    b = _copy(bundle, tmp_path)

    def cut(m):
        del m["members"][1]["sha256"]
        del m["dataset"]["input"]

    _edit_manifest(b, cut)
    with pytest.raises(BundleError, match="missing or malformed") as e:
        load_ensemble(b)
    assert "members[1].sha256" in str(e.value), f"the error does not name members[1].sha256: {e.value}"
    assert "dataset.input" in str(e.value), f"the error does not name dataset.input: {e.value}"
    (b / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_ensemble(b)
    (b / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_ensemble(b)


def test_weights_of_the_wrong_shape_are_refused_even_with_a_matching_hash(bundle, tmp_path):
    """A consistent but wrong bundle (hash updated): the shapes are checked against the genotype."""
    from safetensors.torch import load, save

    b = _copy(bundle, tmp_path)
    f = b / "members" / "m0.safetensors"
    t = load(f.read_bytes())
    key = next(k for k in t if k.endswith("classifier.weight"))
    t[key] = torch.zeros(t[key].shape[0], t[key].shape[1] + 1)
    data = save(t)
    f.write_bytes(data)
    import hashlib

    _edit_manifest(b, lambda m: m["members"][0].update(sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(BundleError, match=r"member 'm0'.*does not fit its genotype.*classifier.weight"):
        load_ensemble(b)


def test_a_zip_that_is_not_a_bundle(tmp_path):
    p = tmp_path / "x.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(BundleError, match="no manifest.json"):
        load_ensemble(p)
    (tmp_path / "y.zip").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="not a bundle folder or a .zip"):
        load_ensemble(tmp_path / "y.zip")
    with pytest.raises(BundleError, match="no such bundle"):
        load_ensemble(tmp_path / "absent")


# ----------------------------------------------------------------------------- bad images


def test_images_of_the_wrong_shape_or_channels(bundle):
    model = load_ensemble(bundle)
    with pytest.raises(ValueError, match=r"shape \[4, 1, 9, 8\] do not fit.*1×8×8"):
        model.predict(np.zeros((4, 1, 9, 8), np.uint8))
    with pytest.raises(ValueError, match="3 channels but this ensemble takes 1-channel"):
        model.predict(np.zeros((4, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="3 channels"):
        model.predict(np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"scaled to \[0, 1\].*divide by 255"):
        model.predict(np.full((2, 1, 8, 8), 200.0, np.float32))
    with pytest.raises(ValueError, match="uint8 .* or float"):
        model.predict(np.zeros((2, 1, 8, 8), np.int64))
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full((2, 1, 8, 8), np.nan, np.float32))


def test_image_folder_and_npz_errors(tmp_path):
    from PIL import Image

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="folder is empty"):
        load_images(empty, 1, 8, 8)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mixed / "a.png")
    (mixed / "b.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="b.png: not a readable PNG/JPEG"):
        load_images(mixed, 1, 8, 8)
    (mixed / "b.png").unlink()
    (mixed / "c.csv").write_text("1,2")
    with pytest.raises(ValueError, match="c.csv: not a PNG/JPEG image"):
        load_images(mixed, 1, 8, 8)
    (mixed / "c.csv").unlink()
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(mixed / "d.png")
    with pytest.raises(ValueError, match=r"d.png: is 8×9 pixels.*8×8"):
        load_images(mixed, 1, 8, 8)
    (mixed / "d.png").unlink()
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(mixed / "e.png")
    with pytest.raises(ValueError, match="e.png: has 3 channels; this ensemble takes grayscale"):
        load_images(mixed, 1, 8, 8)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mixed / "e.png")  # gray saved as RGB is fine
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(mixed / "f.jpg")
    arr, names = load_images(mixed, 1, 8, 8)
    assert arr.shape == (3, 1, 8, 8), f"images array shape {arr.shape}"
    assert arr.dtype == np.uint8, f"images array dtype {arr.dtype}"
    assert names == ["a.png", "e.png", "f.jpg"], f"image names {names}"
    np.savez(tmp_path / "wrong.npz", pictures=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="no array named 'images' .*pictures"):
        load_images(tmp_path / "wrong.npz", 1, 8, 8)
    np.savez(tmp_path / "obj.npz", images=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="object array"):
        load_images(tmp_path / "obj.npz", 1, 8, 8)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match=r"\.npz file .* or a folder"):
        load_images(tmp_path / "x.txt", 1, 8, 8)


def test_export_refuses_bad_requests_and_leaves_nothing_behind(run, tmp_path):
    with pytest.raises(BundleError, match="no member.*nope.*it has: m0, m1"):
        export_ensemble(run, ["m0", "nope"], tmp_path / "a")
    with pytest.raises(BundleError, match="no members chosen"):
        export_ensemble(run, [], tmp_path / "a")
    with pytest.raises(BundleError, match="repeat"):
        export_ensemble(run, ["m0", "m0"], tmp_path / "a")
    unfinished = run / "members" / "half"
    unfinished.mkdir()
    try:
        for f in ("config.json", "genotype.json"):
            shutil.copy(run / "members" / "m0" / f, unfinished / f)
        with pytest.raises(BundleError, match="'half' has not finished training"):
            export_ensemble(run, ["m0", "half"], tmp_path / "a")
    finally:
        shutil.rmtree(unfinished)
    assert list(tmp_path.iterdir()) == []  # no bundle, no temporary folder
    res = export_ensemble(run, ["m0"], tmp_path / "a", verify=False)
    with pytest.raises(BundleError, match="already exists"):
        export_ensemble(run, ["m1"], tmp_path / "a")
    res = export_ensemble(run, ["m1"], tmp_path / "a", overwrite=True, verify=False)
    assert [m["name"] for m in load_ensemble(res.path).manifest["members"]] == ["m1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_manifest_values_of_the_wrong_type_are_named(bundle, tmp_path):
    b = _copy(bundle, tmp_path)

    def spoil(m):
        m["dataset"]["class_names"] = ["only one"]
        m["dataset"]["input"]["height"] = "8"
        m["members"][0]["tensors"] = []

    _edit_manifest(b, spoil)
    with pytest.raises(BundleError, match="wrong type or value") as e:
        load_ensemble(b)
    for key in ("dataset.class_names", "dataset.input.height", "members[0].tensors"):
        assert key in str(e.value)
    b2 = _copy(bundle, tmp_path / "2")
    _edit_manifest(b2, lambda m: m["members"][0]["network"].update(c=10**9))  # never allocated
    with pytest.raises(BundleError, match=r"members\[0\]\.network\.c \(must be an integer from 1 to 1024; is 1000000000"):
        load_ensemble(b2)


def test_a_corrupt_zip_is_a_message(bundle, tmp_path):
    """A byte flipped inside a stored member of the zip: zip's CRC or our sha256 catches it."""
    src = bundle.with_name(bundle.name + ".zip")
    with zipfile.ZipFile(src) as z:
        info = z.getinfo(f"{bundle.name}/members/m0.safetensors")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(src.read_bytes())
    data[start + info.compress_size // 2] ^= 0xFF
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupt"):
        load_ensemble(bad)
