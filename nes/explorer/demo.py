"""The bundled demo run (`assets/demo/`), made by the project's own pipeline.

`python -m nes demo --rebuild` runs, in a scratch folder: a DARTS search (quick preset), the
hypernetworks (`edges`, `js-target` and the paper's `js`), a sample of α(λ), the retraining of α*
plus a few members at distinct λ, a DeepEns baseline (for the Compare page), both ensembles under
shift and the levers report (`levers.json`: EdgeNES against DeepEns lever by lever); then it copies
the result without checkpoints or logs (≤ 10 MB) into `assets/demo`,
replacing the old one in one rename (the baselines' members keep their final epoch only). The app copies the demo into its run store on first start
(`install_demo`), so a first visit shows graphs at once and a teacher can train more members from
it, with the same member settings (`train_sets` in run.json) so that their ensembles stay valid.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..artifacts import ArtifactError, read_json, write_json
from ..data import DataError, load_dataset
from ..layout import RunDir, member_name
from ..method.baselines import run_baseline
from ..method.scoring import MemberProbs, compare, score
from ..method.stats import Difference
from ..runs.store import Store, StoreError
from ..runs.tasks import (evaluate_task, hypernet_task, levers_task, retrain_task, sample_task, search_task,
                          shift_task)
from . import leversview
from .shiftview import reports, summary
from .verdict import budget_verdict, own_record, record_probs

DEMO_DIR = Path(__file__).resolve().parents[2] / "assets" / "demo"  # the bundled demo (NES_DEMO_DIR overrides)
DEMO_RUN = "demo"
MAX_BYTES = 10 * 1024 * 1024
DEMO_MEMBERS = 5  # EdgeNES members (α* and 4 spread over the diversity axis); DeepEns has as many
_SKIP = {"checkpoint.safetensors", "logs"}


def _skipped(folder: str, names: list[str]) -> list[str]:
    """What a copy of the demo leaves out: checkpoints, logs, hidden files and the shift caches
    (RUN/shift/images/, MEMBER/shift/: regenerated on demand; the reports are kept)."""
    d = Path(folder)
    return [n for n in names if n in _SKIP or n.startswith(".") or (n == "images" and d.name == "shift")
            or (n == "shift" and d.parent.name == "members")]


def dataset_available(name: str = "fashion-mnist", data_dir: str | None = None) -> bool:
    try:
        load_dataset(name, data_dir, limit=2, test_limit=2, download=False)
        return True
    except DataError:
        return False


def _demo_sets(preset: str, data_dir: str | None, log: Callable[[str], None]) -> tuple[dict, dict]:
    """(search settings, member settings) of the demo: Fashion-MNIST when it is installed, else digits."""
    search_sets: dict[str, str] = {}
    train_sets: dict[str, str] = {}
    if preset == "quick":
        fashion = dataset_available("fashion-mnist", data_dir)
        search_sets["dataset"] = "fashion-mnist" if fashion else "digits"
        # the quick member recipe as it is: the full training and test sets
        train_sets = {"dataset": search_sets["dataset"]}
        if not fashion:  # digits: 8×8 images, 1797 of them; let the dataset defaults apply
            log("Fashion-MNIST not found (apt-get install dataset-fashion-mnist); building the demo on digits")
            for sets in (search_sets, train_sets):
                sets.update(limit="none", test_limit="none", image_size="none", pad="none")
            train_sets["epoch_sizes"] = ""  # 8×8 images: nothing to shrink
    if data_dir:
        search_sets["data_dir"] = train_sets["data_dir"] = data_dir
    return search_sets, train_sets


def _run_pipeline(run: Path, preset: str, search_sets: dict, members: int, device: str | None,
                  log: Callable[[str], None]) -> None:
    """The demo's steps, in `run`: search, both hypernetworks, samples, members, ensemble, DeepEns."""
    log(f"1/8 DARTS search ({preset} preset)")
    search_task(run, {"preset": preset, "set": search_sets}, None, device)
    for reg in ("edges", "js-target", "js"):
        log(f"2/8 hypernetwork, {reg} regularizer")
        hypernet_task(run, {"preset": preset, "regularizer": reg}, None, device)
    log("3/8 picking the members from α(λ) (architectures alone: spread over the diversity axis)")
    picked = sample_task(run, {"regularizer": "edges", "members": members, "preset": preset}, None, device)
    if picked.get("warning"):
        log(f"warning: {picked['warning']}")
    chosen = read_json(RunDir(run).samples_json, dict, "the sampled architectures")["samples"][1:]  # the first is the α* end
    lams = ", ".join(f"{s['lam']:.2f}" for s in chosen)
    log(f"4/8 retraining α* and the members at λ = {lams}")
    retrain_task(run, {"name": member_name(), "preset": preset, "seed": 0}, None, device)
    for i, s in enumerate(chosen, start=1):  # member i → seed i, as DeepEns's members below
        retrain_task(run, {"name": member_name("edges", s["lam"], i), "lam": s["lam"], "regularizer": "edges",
                           "genotype": s["genotype"], "preset": preset, "seed": i}, None, device)
    log("5/8 ensemble metrics")
    evaluate_task(run, {}, None, device)
    log("6/8 DeepEns baseline (α* with seeds), for the Compare page")
    run_baseline(run, "deepens", members, preset=preset, device=device)
    log("7/8 both ensembles under dataset shift (8 corruptions × severities 1–5)")
    shift_task(run, {"baselines": True}, None, device)
    log("8/8 the levers against DeepEns (selection, hybrid pool, temperatures), clean and under shift")
    levers_task(run, {"members": members}, None, device)


def _results(run: Path, members: int) -> dict:
    """What the demo shows, measured: each ensemble against its best member and EdgeNES against
    DeepEns of the same size and seeds, with paired bootstrap 95 % intervals over the test images;
    the budget verdict (`verdict.budget_verdict`: at equal members, with the gain ledger, and
    at equal cost, in numbers and in words); and both ensembles under dataset shift per severity
    (`shiftview.summary` of the saved shift reports)."""
    rd = RunDir(run)
    dee = rd.baseline("deepens", 0)
    ens = MemberProbs.load(run, rd.list_members())
    ours = score(ens)
    ref = MemberProbs.load(dee.path, dee.list_members()[:members])
    out = {"test_images": ours.images,
           "member_accuracy": {n: m["accuracy"] for n, m in ours.members.items()},
           "edgenes_vs_best_member": ours.vs_best, "deepens_vs_best_member": score(ref).vs_best}
    diff = compare(ens, ref)
    if diff is not None:
        out["edgenes_vs_deepens"] = {k: v.to_dict() for k, v in diff.items()}
    own = own_record(run)
    if own is not None and dee.baseline_json.exists():
        dee_rec = read_json(dee.baseline_json, dict, "the DeepEns baseline's record")
        found = budget_verdict(own, dee_rec, record_probs(run, own), record_probs(run, dee_rec))
        if found is not None:
            out["verdict"] = found
    for key, select in (("shift", "clean"), ("shift_selected_on_shifted_val", "shifted")):
        shifted = summary(reports(run, select))
        if shifted is not None:
            out[key] = shifted
    found = leversview.load(run)
    if found is not None:
        out["levers"] = {"best": found["best"], "sentences": leversview.verdict(found)}
    return out


def summary_lines(record: dict) -> list[str]:
    """The demo in sentences a class reads, from its record (demo.json): how it was built, each
    ensemble against its best member, EdgeNES against DeepEns clean and under shift, and last the
    budget verdict (at equal members and at equal cost)."""
    res = record.get("results") or {}
    lines = [f"Built by `{record.get('command')}` on {record.get('built')} ({record.get('dataset')}, preset "
             f"{record.get('preset')}, {record.get('seconds')} s); results on {res.get('test_images')} test images."]
    for key, name in (("edgenes_vs_best_member", "EdgeNES"), ("deepens_vs_best_member", "DeepEns")):
        vs = res.get(key)
        if vs:
            acc, nll = Difference.from_dict(vs["accuracy"]), Difference.from_dict(vs["nll"])
            lines.append(f"{name}'s ensemble against its best member ({vs['best_member']}, chosen on validation): "
                         f"accuracy {acc.text()}, NLL {nll.text()}.")
    shifted = res.get("shift") or {}
    text = shifted.get("text") or []
    lines += [t for t in text if t.startswith(("On the clean", "At shift severity 5"))]
    verdict = res.get("verdict") or {}
    lines += list(verdict.get("sentences") or [])
    lines += [t.replace("**", "") for t in (res.get("levers") or {}).get("sentences") or []]
    return lines


def recompute_results(out: str | Path | None = None, members: int = DEMO_MEMBERS,
                      keys: tuple[str, ...] = ("verdict",)) -> dict:
    """Measure an existing demo folder's results again (no training: from the saved probabilities)
    and write the results named in `keys` into its demo.json; every other key of the record and of
    its results stays as it was (results another step added included). Returns the new results."""
    rd = RunDir(Path(out or demo_dir()))
    record = read_json(rd.demo_json, dict, "how the demo was made")
    fresh = _results(rd.path, members)
    results = {**(record.get("results") or {}), **{k: fresh[k] for k in keys if k in fresh}}
    write_json(rd.demo_json, {**record, "results": results})
    return results


def _replace_folder(staged: Path, out: Path) -> None:
    """Put `staged` in place of `out` (renames only; the old folder is removed last)."""
    old = out.with_name(out.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    staged.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def build_demo(out: str | Path = DEMO_DIR, data_dir: str | None = None, device: str | None = None,
               members: int = DEMO_MEMBERS, preset: str = "quick", log: Callable[[str], None] = print) -> dict:
    """Build the demo run into `out` (atomically replaced). Returns the provenance record.

    `preset="smoke"` makes a tiny demo on digits in seconds (tests)."""
    out = Path(out)
    t0 = time.time()
    search_sets, train_sets = _demo_sets(preset, data_dir, log)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".demo_build_", dir=out.parent))
    try:
        run = work / DEMO_RUN
        run.mkdir()
        write_json(RunDir(run).run_json, {"preset": preset, "train_sets": train_sets})
        _run_pipeline(run, preset, search_sets, members, device, log)
        record = {"command": "python -m nes demo --rebuild", "built": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "preset": preset, "dataset": RunDir(run).info()["dataset"], "device": str(device or "auto"),
                  "seconds": round(time.time() - t0, 1), "results": _results(run, members)}
        write_json(RunDir(run).demo_json, record)
        staged = work / "staged"
        shutil.copytree(run, staged, ignore=_skipped)
        _final_epochs_only(staged / "baselines")
        size = folder_bytes(staged)
        if size > MAX_BYTES:
            raise ArtifactError(f"demo run is {size / 2**20:.1f} MB, over the {MAX_BYTES / 2**20:.0f} MB limit")
        _replace_folder(staged, out)
        record["bytes"] = size
        log(f"demo run written to {out} ({size / 2**20:.2f} MB, {record['seconds']:.0f} s)")
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _final_epochs_only(baselines: Path) -> None:
    """Keep only the last saved epoch of the baselines' members (the Compare page scores final
    members; the Ensemble page's per-epoch curves are of the run's own members)."""
    for probs_dir in baselines.glob("*/members/*/probs"):
        for f in sorted(probs_dir.glob("epoch_*.safetensors"))[:-1]:
            f.unlink()


def folder_bytes(path: Path) -> int:
    """Bytes of the files a copy of the demo keeps (`_skipped` caches and logs left out)."""
    root = Path(path)
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not _cached(f.relative_to(root)))


def _cached(rel: Path) -> bool:
    parts = rel.parts
    return any(_skipped(str(Path(*parts[:i]) if i else "."), [parts[i]]) for i in range(len(parts)))


def demo_dir() -> Path:
    return Path(os.environ.get("NES_DEMO_DIR") or DEMO_DIR)


def install_demo(store: Store, source: Path | None = None, name: str = DEMO_RUN) -> str | None:
    """Copy the bundled demo into the store as run `name` if the store has no run of that name.

    Returns the run id, or None when no demo is bundled. An existing run is never overwritten."""
    source = Path(source or demo_dir())
    try:
        return store.get_run(name)
    except StoreError:
        pass
    if not RunDir(source).has_search:
        return None
    target = store.home / name
    if not target.exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}_", dir=store.home))
        shutil.copytree(source, tmp / name, ignore=_skipped)
        (tmp / name).rename(target)
        tmp.rmdir()
    return store.register_run(target)
