"""Export faults with real files: what `export --force` may replace (only an earlier bundle, and
nothing stray left), zip bombs and huge images (refused before they are inflated), and manifest
values of the wrong type or edited by hand (named, or caught by `model_sha256`)."""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from nes.export.bundle import BundleError, load_ensemble
from nes.export.manifest import model_sha256
from nes.export.images import load_images
from nes.export.write import export_ensemble, make_bundle_zip
from helpers import ROOT, digits_members, nes as nes_cli

MEMBERS = ["m0", "m1"]
MB = 1 << 20


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A digits run with two members of different random genotypes, trained with the smoke preset."""
    return digits_members(tmp_path_factory.mktemp("faults") / "run", MEMBERS, 5)


@pytest.fixture(scope="module")
def bundle(run, tmp_path_factory) -> Path:
    return export_ensemble(run, MEMBERS, tmp_path_factory.mktemp("bundles") / "b", make_zip=True).path


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _edited_copy(bundle: Path, dst: Path, edit) -> Path:
    shutil.copytree(bundle, dst)
    m = json.loads((dst / "manifest.json").read_text())
    edit(m)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def _images(tmp_path: Path) -> Path:
    np.savez(tmp_path / "imgs.npz", images=np.zeros((3, 1, 8, 8), np.uint8))
    return tmp_path / "imgs.npz"


# ----------------------------------------------------------------------------- export --force


def test_force_never_replaces_the_run_or_a_folder_that_contains_it(run):
    before = _tree(run)
    for out, what in ((run, "the run being exported"), (run.parent, "contains the run")):
        r = nes_cli("export", "--run", str(run), "--members", "m0", "--out", str(out), "--force", "--no-verify")
        assert r.returncode == 2, f"export --force --out {out}: exit {r.returncode}, expected 2:\n{r.stderr}"
        assert what in r.stderr, f"export --force --out {out}: the error does not say {what!r}:\n{r.stderr}"
        assert "Traceback" not in r.stderr, f"export --force --out {out}: a traceback instead of a message:\n{r.stderr}"
    with pytest.raises(BundleError, match="the run being exported"):  # also without --force: not "already exists"
        export_ensemble(run, ["m0"], run)
    assert _tree(run) == before, "a refused export changed the run folder"
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".")], \
        f"a refused export left {[p.name for p in run.parent.iterdir() if p.name.startswith('.')]}"


def test_force_refuses_an_unrelated_folder_and_keeps_its_contents(run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"precious")
    r = nes_cli("export", "--run", str(run), "--members", "m0", "--out", str(photos), "--force", "--no-verify")
    assert r.returncode == 2, f"export --force over an unrelated folder: exit {r.returncode}, expected 2:\n{r.stderr}"
    assert "replaces only an earlier bundle" in r.stderr, \
        f"the error does not say --force replaces only an earlier bundle:\n{r.stderr}"
    assert "no manifest.json" in r.stderr, f"the error does not say the folder has no manifest.json:\n{r.stderr}"
    assert "Traceback" not in r.stderr
    assert _tree(photos) == {"holiday.jpg": b"precious"}, f"the unrelated folder was changed: {sorted(_tree(photos))}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"], \
        f"a refused export left {sorted(p.name for p in tmp_path.iterdir())}"


def _plain_file(p: Path) -> None:
    p.write_text("notes")


def _foreign_manifest(p: Path) -> None:
    p.mkdir()
    (p / "manifest.json").write_text(json.dumps({"schema": "something-else", "schema_version": 1}))


def _broken_manifest(p: Path) -> None:
    p.mkdir()
    (p / "manifest.json").write_text("{not json")


def _link_to_a_folder(p: Path) -> None:
    (p.parent / "real").mkdir()
    p.symlink_to(p.parent / "real")


@pytest.mark.parametrize("make, why", [(_plain_file, "is a file, not a bundle folder"),
                                       (_foreign_manifest, "not of schema 'nes-ensemble'"),
                                       (_broken_manifest, "not valid JSON"),
                                       (_link_to_a_folder, "symbolic link")],
                         ids=["file", "foreign-manifest", "broken-manifest", "symlink"])
def test_force_replaces_only_a_bundle(run, tmp_path, make, why):
    out = tmp_path / "out"
    make(out)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(BundleError, match=why):
        export_ensemble(run, ["m0"], out, overwrite=True, verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing replaced, no temporary left


def test_force_refuses_a_zip_path_that_is_not_a_bundle_zip(run, tmp_path):
    (tmp_path / "out.zip").write_bytes(b"my own archive")
    with pytest.raises(BundleError, match="already exists.*--force"):
        export_ensemble(run, ["m0"], tmp_path / "out", make_zip=True, verify=False)
    with pytest.raises(BundleError, match=r"out\.zip already exists and --force replaces only an earlier bundle"):
        export_ensemble(run, ["m0"], tmp_path / "out", make_zip=True, overwrite=True, verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zip"]
    assert (tmp_path / "out.zip").read_bytes() == b"my own archive"


def test_force_over_a_bundle_leaves_nothing_stray(run, tmp_path, monkeypatch):
    out = tmp_path / "b"
    export_ensemble(run, ["m0"], out, make_zip=True, verify=False)
    (out / "members").chmod(0o555)  # an earlier bundle copied from read-only media
    res = export_ensemble(run, ["m1"], out, make_zip=True, overwrite=True, verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "b.zip"]  # no .b.old-*, no temporaries
    assert load_ensemble(out).member_names == ["m1"], \
        f"the replaced folder bundle holds {load_ensemble(out).member_names}, expected ['m1']"
    assert load_ensemble(res.zip_path).member_names == ["m1"], \
        f"the replaced zip holds {load_ensemble(res.zip_path).member_names}, expected ['m1']"
    with zipfile.ZipFile(res.zip_path) as z:
        assert sorted(z.namelist()) == sorted(f"b/{k}" for k in _tree(out))
    # a failed replacement keeps the earlier bundle and its zip exactly as they were
    before = {**_tree(out), "zip": res.zip_path.read_bytes()}
    monkeypatch.setattr("nes.export.write.model_card", lambda m: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        export_ensemble(run, ["m0"], out, make_zip=True, overwrite=True, verify=False)
    monkeypatch.undo()
    assert {**_tree(out), "zip": res.zip_path.read_bytes()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "b.zip"]
    # replaced without --zip: the zip of the replaced bundle goes too (it no longer matches the folder)
    export_ensemble(run, ["m0"], out, overwrite=True, verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


# ----------------------------------------------------------------------------- zip bombs


def _zip_with_zeros(bundle: Path, dst: Path, zeros: dict[str, int], edit=None) -> Path:
    """A zip of `bundle` whose files in `zeros` are followed by that many zero bytes (streamed in:
    the test never holds them; 300 MB of zeros deflate to ~1 MB) and whose manifest `edit` changed."""
    man = json.loads((bundle / "manifest.json").read_text())
    if edit:
        edit(man)
    files = {**_tree(bundle), "manifest.json": json.dumps(man).encode()}
    chunk = bytes(MB)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for rel, data in files.items():
            with z.open(f"b/{rel}", "w", force_zip64=True) as w:
                w.write(data)  # a valid file first: its header and shapes pass, only the size gives it away
                for _ in range(zeros.get(rel, 0) // MB):
                    w.write(chunk)
    return dst


def _as_old_manifest(m: dict) -> None:
    """A manifest as written before member `bytes` and `model_sha256` existed."""
    m.pop("model_sha256")
    for row in m["members"]:
        row.pop("bytes")


LOAD_AND_MEASURE = """
import json, resource, sys
from nes.export.bundle import BundleError, load_ensemble

peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
load_ensemble(sys.argv[1])  # a good bundle first: every lazy import and allocator pool is warm
base, errors = peak(), []
for path in sys.argv[2:]:
    try:
        load_ensemble(path)
        errors.append(None)
    except BundleError as e:
        errors.append(str(e))
print(json.dumps({"errors": errors, "growth_mib": (peak() - base) / 1024}))
"""


def test_zip_bombs_are_refused_with_bounded_memory(bundle, tmp_path):
    member = "members/m0.safetensors"
    m0_bytes = (bundle / member).stat().st_size
    declared = _zip_with_zeros(bundle, tmp_path / "declared.zip", {member: 300 * MB})
    streamed = _zip_with_zeros(bundle, tmp_path / "streamed.zip", {member: 300 * MB}, _as_old_manifest)
    over_cap = _zip_with_zeros(bundle, tmp_path / "over_cap.zip", {member: 600 * MB}, _as_old_manifest)
    manifest = _zip_with_zeros(bundle, tmp_path / "manifest.zip", {"manifest.json": 64 * MB})
    assert max(p.stat().st_size for p in (declared, streamed, over_cap, manifest)) < 4 * MB
    good = bundle.with_name("b.zip")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NES_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", LOAD_AND_MEASURE, str(good), str(declared), str(streamed),
                        str(over_cap), str(manifest)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    e_declared, e_streamed, e_cap, e_manifest = got["errors"]
    assert re.search(rf"{member} in the zip is {300 * MB + m0_bytes} bytes uncompressed, more than the "
                     rf"{m0_bytes} bytes manifest.json records", e_declared), e_declared
    assert "member 'm0'" in e_streamed, f"the streamed bomb's error does not name member m0: {e_streamed!r}"
    assert "fails its sha256 check" in e_streamed, \
        f"the streamed bomb's error does not say its sha256 check fails: {e_streamed!r}"  # hashed while streaming
    assert member in e_cap, f"the over-cap error does not name {member}: {e_cap!r}"
    assert "512 MB a weights file may take" in e_cap, f"the over-cap error does not state the 512 MB cap: {e_cap!r}"
    assert "manifest.json in the zip" in e_manifest, \
        f"the manifest bomb's error does not name manifest.json: {e_manifest!r}"
    assert "8 MB a manifest may take" in e_manifest, \
        f"the manifest bomb's error does not state the 8 MB cap: {e_manifest!r}"
    assert got["growth_mib"] < 48, got  # zip.read() of the entries would take ≥ 300 MB
    r = nes_cli("predict", str(declared), str(_images(tmp_path)))
    assert r.returncode == 2, f"predict on a zip bomb: exit {r.returncode}, expected 2:\n{r.stderr}"
    assert member in r.stderr, f"predict on a zip bomb does not name {member}:\n{r.stderr}"
    assert "Traceback" not in r.stderr, f"predict on a zip bomb: a traceback instead of a message:\n{r.stderr}"


def test_a_weights_file_longer_than_recorded_is_refused_before_reading(bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    with open(b / "members" / "m1.safetensors", "ab") as f:
        f.write(b"\0" * 10)
    with pytest.raises(BundleError, match=r"members/m1.safetensors is \d+ bytes, more than the \d+ bytes "
                                          r"manifest.json records"):
        load_ensemble(b)


def test_a_weights_header_that_claims_too_much_is_refused(bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    (b / "members" / "m0.safetensors").write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(BundleError, match=r"member 'm0': members/m0.safetensors is not a readable safetensors "
                                          r"file \(its header length is 1099511627776 bytes"):
        load_ensemble(b)


def _png_header(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file that declares `width`×`height` pixels (its pixel data is never there)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_huge_images_are_refused_from_their_header(bundle, tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    _png_header(folder / "huge.png", 20000, 20000)
    with pytest.raises(ValueError, match=r"huge.png: declares more than .* pixels .*takes 8×8 images"):
        load_images(folder, 1, 8, 8)
    r = nes_cli("predict", str(bundle), str(folder))
    assert r.returncode == 2, f"predict on a huge image: exit {r.returncode}, expected 2:\n{r.stderr}"
    assert "huge.png" in r.stderr, f"predict on a huge image does not name huge.png:\n{r.stderr}"
    assert "8×8" in r.stderr, f"predict on a huge image does not state the 8×8 input size:\n{r.stderr}"
    assert "Traceback" not in r.stderr, f"predict on a huge image: a traceback instead of a message:\n{r.stderr}"
    (folder / "huge.png").unlink()
    _png_header(folder / "big.png", 4000, 3000)  # under PIL's limit: refused before decoding all the same
    with pytest.raises(ValueError, match=r"big.png: is 4000×3000 pixels; this ensemble takes 8×8"):
        load_images(folder, 1, 8, 8)


# ----------------------------------------------------------------------------- manifest values


def _set_first_tensor(value):
    def edit(m):
        row = m["members"][0]["tensors"]
        row[next(iter(row))] = value
    return edit


BAD_VALUES = {
    "std-zero": (lambda m: m["dataset"]["preprocess"].update(std=[0]), "dataset.preprocess.std"),
    "std-negative": (lambda m: m["dataset"]["preprocess"].update(std=[-0.3]), "dataset.preprocess.std"),
    "mean-nan": (lambda m: m["dataset"]["preprocess"].update(mean=[float("nan")]), "dataset.preprocess.mean"),
    "mean-inf": (lambda m: m["dataset"]["preprocess"].update(mean=[float("inf")]), "dataset.preprocess.mean"),
    "mean-text": (lambda m: m["dataset"]["preprocess"].update(mean=["0.5"]), "dataset.preprocess.mean"),
    "pad-float": (lambda m: m["dataset"]["preprocess"].update(pad=1.5), "dataset.preprocess.pad"),
    "classes-bool": (lambda m: m["dataset"].update(num_classes=True), "dataset.num_classes"),
    "class-names-int": (lambda m: m["dataset"].update(class_names=list(range(10))), "dataset.class_names"),
    "tensor-float": (_set_first_tensor([1.5]), "members[0].tensors."),
    "tensor-negative": (_set_first_tensor([-1]), "members[0].tensors."),
    "tensor-not-list": (_set_first_tensor(7), "members[0].tensors."),
    "sha-short": (lambda m: m["members"][1].update(sha256="abc"), "members[1].sha256"),
    "sha-upper": (lambda m: m["members"][1].update(sha256=m["members"][1]["sha256"].upper()), "members[1].sha256"),
    "bytes-negative": (lambda m: m["members"][0].update(bytes=-1), "members[0].bytes"),
    "lam-nan": (lambda m: m["members"][1].update(lam=float("nan")), "members[1].lam"),
    "lam-text": (lambda m: m["members"][1].update(lam="high"), "members[1].lam"),
    "c-float": (lambda m: m["members"][0]["network"].update(c=4.5), "members[0].network.c"),
    "name-empty": (lambda m: m["members"][0].update(name=""), "members[0].name"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_wrong_manifest_values_are_named(bundle, tmp_path, case):
    edit, key = BAD_VALUES[case]
    b = _edited_copy(bundle, tmp_path / "b", edit)
    with pytest.raises(BundleError, match="wrong type or value") as e:
        load_ensemble(b)
    assert key in str(e.value), f"{case}: the error does not name {key}: {e.value}"
    assert "must be" in str(e.value), f"{case}: the error does not say what {key} must be: {e.value}"


def test_cli_predict_refuses_a_zero_std(bundle, tmp_path):
    b = _edited_copy(bundle, tmp_path / "b", BAD_VALUES["std-zero"][0])
    r = nes_cli("predict", str(b), str(_images(tmp_path)))
    assert r.returncode == 2, f"predict with std 0: exit {r.returncode}, expected 2:\n{r.stderr}"
    assert "dataset.preprocess.std" in r.stderr, f"predict with std 0 does not name dataset.preprocess.std:\n{r.stderr}"
    assert "> 0" in r.stderr, f"predict with std 0 does not say it must be > 0:\n{r.stderr}"
    assert "Traceback" not in r.stderr, f"predict with std 0: a traceback instead of a message:\n{r.stderr}"
    assert "nan" not in r.stdout.lower(), f"predict with std 0 printed NaN:\n{r.stdout}"


@pytest.mark.parametrize("edit", [lambda m: m["dataset"]["preprocess"].update(std=[0.5]),
                                  lambda m: m["dataset"]["preprocess"].update(mean=[0.0]),
                                  lambda m: m["dataset"].update(class_names=m["dataset"]["class_names"][::-1]),
                                  lambda m: m["members"].reverse()],
                         ids=["std", "mean", "class-names", "member-order"])
def test_hand_edited_model_values_fail_the_integrity_check(bundle, tmp_path, edit):
    b = _edited_copy(bundle, tmp_path / "b", edit)
    with pytest.raises(BundleError, match=r"changed after export \(model_sha256"):
        load_ensemble(b)
    with pytest.raises(BundleError, match="changed after export"):
        load_ensemble(make_bundle_zip(b))
    # descriptive values are not part of it
    ok = _edited_copy(bundle, tmp_path / "ok", lambda m: m.update(title="renamed"))
    assert load_ensemble(ok).manifest["title"] == "renamed"


def test_bundles_written_before_bytes_and_model_sha256_still_load(bundle, tmp_path):
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["model_sha256"] == model_sha256(m), "the manifest's model_sha256 does not match its model values"
    assert m["schema_version"] == 1, f"manifest schema_version {m['schema_version']}, expected 1"
    old = _edited_copy(bundle, tmp_path / "old", _as_old_manifest)
    x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    want = load_ensemble(bundle).predict(x)
    assert torch.equal(load_ensemble(old).predict(x), want)
    assert torch.equal(load_ensemble(make_bundle_zip(old)).predict(x), want)
