"""Writing a bundle: plan it (the manifest, before anything is written), write it atomically,
verify it against the run, zip it; the app's naming and listing of a run's bundles.

See `nes.export.bundle` for what a bundle holds and how it is read back.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import safetensors
import torch
from safetensors.torch import save as st_save

from .._version import __version__
from ..artifacts import ArtifactError, atomic_write_bytes, load_tensors, read_json, reading, with_suppress_unlink
from ..data import DataError, load_dataset
from ..layout import MemberDir, RunDir, check_name
from ..method.divergence import genotype_js_matrix
from ..method.ensemble import predictive_js
from ..method.network import Network
from ..method.space import Genotype
from ..method.scoring import MemberProbs, score
from ..method.shift import shift_summary
from ..method.train import read_member
from .bundle import bundle_problem, load_ensemble
from .manifest import SCHEMA, SCHEMA_VERSION, BundleError, model_sha256, sha256
from .card import model_card
from .model import EnsembleModel
from .onnx import export_onnx


@dataclass
class ExportResult:
    path: Path
    zip_path: Path | None
    manifest: dict[str, Any]

def _versions() -> dict[str, str]:

    out = {"nes": __version__, "torch": torch.__version__, "safetensors": safetensors.__version__,
           "numpy": np.__version__, "python": platform.python_version()}
    for mod in ("onnx", "onnxruntime"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out

@dataclass
class ExportPlan:
    """What a bundle of `names` will hold, before anything is written (the manifest without hashes)."""
    run: Path
    names: list[str]
    manifest: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]]
    probs: MemberProbs  # the members' saved probabilities (what the bundle must reproduce)
    config: dict[str, Any]  # the first member's training config (dataset, limits)

def _chosen(run: RunDir, members: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """The chosen member names (checked: known, distinct, finished) and the run's dataset info."""
    names = [n.strip() for n in members if n and n.strip()]
    if not names:
        raise BundleError("no members chosen; name at least one (e.g. --members alpha_star,edges_lam_2_50)")
    if len(set(names)) != len(names):
        raise BundleError(f"members repeat: {', '.join(names)}")
    if not run.run_json.exists():
        raise BundleError(f"{run.path}: not a run folder (no run.json)")
    known = run.list_members()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BundleError(f"{run.path}: no member(s) {', '.join(unknown)}; it has: {', '.join(known) or 'none'}")
    for name in names:
        if not run.member(name).finished:
            raise BundleError(f"member {name!r} has not finished training (no weights.safetensors yet); wait for "
                              "its job to finish or retrain it")
    info = run.info().get("info")
    if not isinstance(info, dict):
        raise BundleError(f"{run.path}/run.json has no dataset info; retrain a member to write it")
    return names, info


def _member_files(d: MemberDir) -> tuple[dict[str, Any], dict[str, Any], Genotype]:
    """A member's training config and genotype record, checked (BundleError naming the file)."""
    try:
        m = read_member(d)
    except ArtifactError as e:
        raise BundleError(str(e)) from None
    return m.raw, m.record, m.genotype


def _member_entry(run: RunDir, name: str, info: dict[str, Any]) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(manifest row, float32 weights without the auxiliary head, training config) of one member."""
    d = run.member(name)
    cfg, gmeta, g = _member_files(d)
    state, _ = load_tensors(d.weights, finite=True)
    with reading(run.run_json, "the run's dataset facts"):
        net = Network(g, int(cfg["channels"]), int(info["num_classes"]), int(cfg["layers"]), int(info["channels"]))
    own = net.state_dict()  # without the auxiliary head (training only)
    missing = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    if missing:
        raise BundleError(f"member {name!r}: weights.safetensors does not fit its genotype ({missing[0]}); "
                          "retrain the member")
    tensors = {k: state[k].float() if state[k].is_floating_point() else state[k] for k in own}
    row = {
        "name": name, "file": f"members/{name}.safetensors", "genotype": g.to_dict(), "compact": g.compact(),
        "lam": gmeta.get("lam"), "regularizer": gmeta.get("regularizer"), "seed": cfg.get("seed"),
        "network": {"c": int(cfg["channels"]), "layers": int(cfg["layers"]), "stem_multiplier": 3},
        "num_parameters": int(sum(v.numel() for k, v in tensors.items()
                                  if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))),
        "training": {k: cfg.get(k) for k in ("epochs", "limit", "batch_size", "lr", "drop_path", "auxiliary")},
        "metrics": _metrics(d),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
    }
    return row, tensors, cfg


def _metrics(d: MemberDir) -> dict[str, Any]:
    """The member's test metrics from metrics.json ({} before it is written; ArtifactError naming it
    when it is of the wrong shape)."""
    m = d.read("metrics.json", {}).get("metrics", {})
    if not isinstance(m, dict):
        raise BundleError(f"{d.metrics}: 'metrics' must be a JSON object; the file was edited or damaged; retrain "
                          "the member or restore the file")
    return m


def _dataset_entry(info: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """The manifest's dataset: classes, input shape and the members' evaluation preprocessing."""
    pad, image_size = cfg.get("pad"), cfg.get("image_size")
    return {
        "name": cfg.get("dataset") or info["name"], "num_classes": int(info["num_classes"]),
        "class_names": list(info["class_names"]) or [str(i) for i in range(int(info["num_classes"]))],
        "input": {"channels": int(info["channels"]), "height": int(info["height"]), "width": int(info["width"]),
                  "dtype": "uint8 0..255 or float 0..1", "layout": "NCHW"},
        "preprocess": {"scale": 1 / 255, "pad": int(pad if pad is not None else info["pad"]),
                       "image_size": int(image_size if image_size is not None else info["image_size"]),
                       "crop": "center", "mean": list(info["mean"]), "std": list(info["std"]),
                       "tta_flip": bool(cfg.get("tta_flip", False) and info.get("flip", False))},
        "train_images": cfg.get("limit"),
    }


def plan_export(run_dir: str | Path, members: Sequence[str], title: str | None = None) -> ExportPlan:
    """Read `members` of run `run_dir` and build the bundle's manifest (metrics, diversity matrices).

    Cheap (JSON, weights and saved probabilities only; no data, no inference). BundleError when a
    member is unknown, unfinished, or does not fit with the others."""
    run = RunDir(run_dir)
    names, info = _chosen(run, members)
    rows, tensors, configs = [], {}, []
    keys = ("image_size", "pad", "dataset", "tta_flip")
    for name in names:
        row, tensors[name], cfg = _member_entry(run, name, info)
        crop, first = (tuple(c.get(k) for k in keys) for c in (cfg, configs[0] if configs else cfg))
        if crop != first:
            raise BundleError(f"member {name!r} was trained or scored on other inputs ({', '.join(keys)} = {crop}) "
                              f"than {names[0]!r} ({first}); export members with the same settings together")
        rows.append(row)
        configs.append(cfg)
    with reading(run.run_json, "the run's dataset facts"):
        dataset = _dataset_entry(info, configs[0])
    probs = MemberProbs.load(run.path, names)
    for row, epoch in zip(rows, probs.epochs):
        row["epoch"] = epoch
    report = score(probs)
    manifest: dict[str, Any] = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "title": title or f"{run.name}: {', '.join(names)}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "library": _versions(),
        "source": {"run": run.name, "members": names},
        "dataset": dataset,
        "members": rows,
        "ensemble": {"split": "test", "test_images": report.images,
                     "metrics": {k: float(v) for k, v in report.metrics.items()},
                     "vs_best_member": report.vs_best, "calibrated": report.calibrated,
                     "ledger": report.ledger, "shift": shift_summary(run.path, names)},
        "diversity": {"names": names,
                      "architecture_js": genotype_js_matrix([Genotype.from_dict(r["genotype"]) for r in rows]),
                      "predictive_js": [[round(float(v), 6) for v in r] for r in predictive_js(probs.test).tolist()]},
    }
    return ExportPlan(run.path, names, manifest, tensors, probs, configs[0])


def export_ensemble(run_dir: str | Path, members: Sequence[str], out: str | Path, *, onnx: bool = False,
                    make_zip: bool = False, overwrite: bool = False, title: str | None = None,
                    verify: bool = True, verify_images: int = 512) -> ExportResult:
    """Write the bundle of `members` of run `run_dir` to folder `out` (atomically: built next to it,
    then renamed into place), and `out`.zip with `make_zip`.

    overwrite: replace an earlier bundle at `out` (and its zip); never anything else (see
    `check_target`). verify: load the written bundle back and check it reproduces the members'
    saved test probabilities on up to `verify_images` test images (if the dataset is available
    here). onnx: also write ensemble.onnx and check onnxruntime against PyTorch (≤ ONNX_TOLERANCE)."""
    out = Path(out) if Path(out).name else Path(out).resolve()  # "." or "..": the folder it names
    if not out.name:
        raise BundleError(f"--out {out} is the root folder; write the bundle to a new folder (e.g. --out ./bundle)")
    zp = out.with_name(out.name + ".zip")
    check_target(out, run_dir, overwrite, zp if make_zip else None)
    plan = plan_export(run_dir, members, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp_zip: Path | None = None
    try:
        _write_bundle(tmp, plan, out.name, verify=verify, verify_images=verify_images, onnx=onnx)
        tmp_zip = _zip_beside(tmp, zp, out.name) if make_zip else None
        _swap_into_place(tmp, out, overwrite)
        _place_zip(tmp_zip, zp, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp_zip is not None:
            with_suppress_unlink(str(tmp_zip))
        raise
    return ExportResult(out, zp if make_zip else None, plan.manifest)


def check_target(out: Path, run_dir: str | Path, overwrite: bool, zip_path: Path | None = None) -> None:
    """Refuse an `out` (and `zip_path`) that export would write over, unless it is an earlier bundle
    and `overwrite` is set. Never the run itself or a folder that contains it, never a plain file,
    a link or a folder that is not a bundle (BundleError saying what is there and what to do)."""
    dest, run = out.resolve(), Path(run_dir).resolve()
    if dest == run or dest in run.parents:
        what = "the run being exported" if dest == run else f"a folder that contains the run {run_dir}"
        raise BundleError(f"--out {out} is {what}; write the bundle to a new folder outside the run "
                          f"(e.g. --out {Path(run_dir).name}_bundle)")
    inside = next((a for a in dest.parents if (a / "run.json").is_file() and a / "exports" not in dest.parents), None)
    if inside is not None:  # e.g. RUN/members/b would be read as a member and break `evaluate`
        raise BundleError(f"--out {out} lies inside the run folder {inside}, where the run's own files live; write "
                          f"the bundle outside it (e.g. --out {inside.name}_bundle) or under {inside / 'exports'}")
    for path, kind in ((out, "folder"), *(((zip_path, "zip"),) if zip_path is not None else ())):
        if not (path.exists() or path.is_symlink()):
            continue
        if not overwrite:
            raise BundleError(f"{path} already exists; choose another --out or pass --force to replace it")
        why = _not_replaceable(path, kind)
        if why:
            raise BundleError(f"{path} already exists and --force replaces only an earlier bundle, but {why}; "
                              "choose another --out (nothing was changed)")


def _not_replaceable(path: Path, kind: str) -> str | None:
    """Why export --force may not replace `path` (an existing bundle folder / bundle zip), or None."""
    if path.is_symlink():
        return "it is a symbolic link"
    if kind == "folder" and not path.is_dir():
        return "it is a file, not a bundle folder"
    if kind == "zip" and not path.is_file():
        return "it is a folder, not a bundle zip"
    return bundle_problem(path)


def _write_bundle(tmp: Path, plan: ExportPlan, name: str, *, verify: bool, verify_images: int, onnx: bool) -> None:
    """The bundle's files in the folder `tmp`: weights (hashed), manifest, verification, ONNX, card."""
    manifest = plan.manifest
    for row in manifest["members"]:
        data = st_save({k: v.contiguous() for k, v in plan.tensors[row["name"]].items()},
                       metadata={"nes_member": row["name"], "schema": SCHEMA})
        atomic_write_bytes(tmp / row["file"], data)
        row["sha256"], row["bytes"] = sha256(data), len(data)
    manifest["bundle_name"] = name
    manifest["model_sha256"] = model_sha256(manifest)
    model = None
    if verify or onnx:
        _write_manifest(tmp, manifest)
        model = load_ensemble(tmp)
    if verify:
        manifest["verification"] = _verify(model, plan, verify_images)
    if onnx:
        manifest["onnx"] = export_onnx(model, tmp / "ensemble.onnx")
    _write_manifest(tmp, manifest)
    atomic_write_bytes(tmp / "README.md", model_card(manifest).encode())
    _shareable(tmp)


def _write_manifest(folder: Path, manifest: dict) -> None:
    atomic_write_bytes(folder / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())

def _shareable(*paths: Path) -> None:
    """Bundles are meant to be copied and shared: folders 0755, files 0644 (less the umask),
    recursively (temporary files are created 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    for top in paths:
        for p in [top, *(top.rglob("*") if top.is_dir() else ())]:
            os.chmod(p, (0o755 if p.is_dir() else 0o644) & ~mask)


def _swap_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished bundle `tmp` to `out`. An earlier bundle there is first moved into a
    fresh hidden folder beside it (put back if the rename fails) and removed with that folder."""
    if not (out.exists() or out.is_symlink()):
        os.replace(tmp, out)
        return
    if not overwrite:  # appeared while this bundle was being written
        raise BundleError(f"{out} already exists; choose another --out or pass --force to replace it")
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    try:
        os.replace(out, aside / out.name)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(aside / out.name, out)
            raise
    finally:
        _remove_tree(aside)


def _remove_tree(path: Path) -> None:
    """rmtree that also removes read-only entries (a bundle copied from read-only media), and says
    so when something still cannot be removed instead of leaving it silently."""
    def retry(func, p, _exc) -> None:
        os.chmod(os.path.dirname(p), 0o700)
        if not os.path.islink(p) and os.path.isdir(p):
            os.chmod(p, 0o700)
        func(p)

    try:
        shutil.rmtree(path, onerror=retry)
    except OSError as e:
        raise BundleError(f"the bundle was written, but the earlier one moved aside to {path} could not be "
                          f"removed ({e}); delete that folder yourself") from None


def _zip_beside(folder: Path, zp: Path, root: str) -> Path:
    """A zip of `folder`'s files under `root/`, streamed to a hidden temporary file next to `zp`
    (the caller renames it into place or removes it)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{zp.name}.", suffix=".tmp", dir=zp.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
                for p in sorted(folder.rglob("*")):
                    if p.is_file():
                        z.write(p, f"{root}/{p.relative_to(folder).as_posix()}")
            f.flush()
            os.fsync(f.fileno())
        _shareable(Path(tmp))
    except BaseException:
        with_suppress_unlink(tmp)
        raise
    return Path(tmp)


def _place_zip(tmp_zip: Path | None, zp: Path, overwrite: bool) -> None:
    """Rename the new zip into place; without one, an earlier bundle's zip of the replaced bundle
    goes too (it would otherwise be shared as this bundle)."""
    if tmp_zip is not None:
        os.replace(tmp_zip, zp)
    elif overwrite and zp.is_file() and not zp.is_symlink() and bundle_problem(zp) is None:
        zp.unlink()


def _verify(model: EnsembleModel, plan: ExportPlan, limit: int) -> dict[str, Any]:
    """Bundle vs the run: the reloaded members' probabilities on the run's test images."""

    cfg, probs = plan.config, plan.probs
    try:
        ds = load_dataset(cfg["dataset"], cfg.get("data_dir"), "cpu", cfg.get("limit"), cfg.get("test_limit"),
                          download=False)
    except (DataError, OSError, ImportError) as e:
        return {"checked": False, "reason": f"dataset not available here ({str(e).splitlines()[0][:160]})"}
    n = min(limit, len(ds.test_y))
    if not torch.equal(ds.test_y[:n].cpu(), probs.test_y[:n]):
        return {"checked": False, "reason": "the test images here differ from the run's (other data files)"}
    mp = model.member_probs(ds.test_x[:n])
    saved = probs.test[:, :n]
    per_member = (mp - saved).abs().flatten(1).max(1).values.tolist()  # NaN stays NaN
    diff = max(per_member, key=lambda d: d if d == d else float("inf"))
    agree = float((mp.argmax(-1) == saved.argmax(-1)).float().mean())
    bad = [f"{name} (max |Δp| = {d:.3g})" for name, d in zip(plan.names, per_member) if not d <= 5e-3]
    if bad:  # saved probabilities are float16 (≈ 5e-4); more (or NaN) means the weights do not match
        raise BundleError(f"the exported member(s) {', '.join(bad)} do not reproduce the run's saved test "
                          f"probabilities on {n} images: their weights.safetensors and probs/ disagree (a damaged or "
                          "replaced weights file?); retrain those members")
    return {"checked": True, "images": n, "max_abs_diff_vs_run": round(diff, 6), "argmax_agreement": agree,
            "note": "run probabilities are stored as float16"}

def make_bundle_zip(folder: str | Path) -> Path:
    """`folder`.zip holding the bundle folder (written atomically)."""
    folder = Path(folder)
    zp = folder.with_name(folder.name + ".zip")
    os.replace(_zip_beside(folder, zp, folder.name), zp)
    return zp


def list_bundles(folder: str | Path) -> list[Path]:
    """Bundle folders (with a manifest.json) directly under `folder`, newest first."""
    d = Path(folder)
    if not d.is_dir():
        return []
    found = [p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


# ----------------------------------------------------------------------------- the app's bundles


def default_bundle_name(run_dir: str | Path, names: Sequence[str]) -> str:
    """A valid bundle name made of the run's and the members' names."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{Path(run_dir).name}_{'-'.join(names)}")[:80]
    return name.lstrip(".-") or "bundle"


def export_into_run(run_dir: str | Path, names: Sequence[str], bundle_name: str, *, onnx: bool = False,
                    overwrite: bool = False) -> ExportResult:
    """Export `names` to RUN/exports/<bundle_name> with its zip (the app's export)."""
    check_name(bundle_name, "bundle")
    return export_ensemble(run_dir, names, RunDir(run_dir).exports / bundle_name, onnx=onnx, make_zip=True,
                           overwrite=overwrite)


def bundle_summary(folder: str | Path) -> dict[str, Any]:
    """What the app lists of a written bundle: members, metrics, ONNX, zip, model card, manifest."""
    b = Path(folder)
    man = read_json(b / "manifest.json", dict, "a bundle's manifest")
    zp = b.with_name(b.name + ".zip")
    card = b / "README.md"
    with reading(b / "manifest.json", "a bundle's manifest"):
        members, metrics = [m.get("name") for m in man.get("members", [])], dict(man.get("ensemble", {}).get("metrics", {}))
    return {"name": b.name, "manifest": man, "members": members, "metrics": metrics, "onnx": "onnx" in man,
            "created": str(man.get("created", "")), "zip": zp if zp.is_file() else None,
            "card": card.read_text(errors="replace") if card.is_file() else None}
