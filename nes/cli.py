"""Command line: `python -m nes COMMAND ...`.

User errors (bad files, settings, missing data) print one clear message and exit with code 2;
there is no traceback unless NES_DEBUG=1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from . import __version__

EXIT_USER = 2


class UserError(ValueError):
    pass


def _progress_bar(desc: str) -> tuple[Callable[[int, int, dict], None], Callable[[], None]]:
    """A tqdm bar driven by the library's progress(step, total, metrics) callback."""
    from tqdm import tqdm

    bar = None

    def cb(step: int, total: int, metrics: dict[str, Any]) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True,
                       disable=os.environ.get("NES_NO_PROGRESS") == "1")
        bar.n = step
        shown = {k: f"{v:.3f}" for k, v in metrics.items()
                 if k in ("train_loss", "train_acc", "val_acc", "test_accuracy", "lam") and isinstance(v, float)}
        bar.set_postfix(shown, refresh=False)
        bar.refresh()

    def close() -> None:
        if bar is not None:
            bar.close()

    return cb, close


def _run_task(desc: str, task: Callable, run: Path, config: dict, device: str | None) -> dict:
    """Run a pipeline step in this process with a progress bar."""
    cb, close = _progress_bar(desc)
    try:
        return task(run, config, cb, device)
    finally:
        close()


def _run_info(run: Path) -> dict[str, Any]:
    from .artifacts import read_json

    if not run.is_dir():
        raise UserError(f"run folder {run} does not exist; create it with `python -m nes search --run {run} ...`")
    p = run / "run.json"
    return read_json(p) if p.exists() else {}


def cmd_search(a: argparse.Namespace) -> int:
    from .config import parse_sets
    from .tasks import search_task

    sets = parse_sets(a.set)
    if a.dataset:
        sets["dataset"] = a.dataset
    if a.data_dir:
        sets["data_dir"] = a.data_dir
    run = Path(a.run)
    run.mkdir(parents=True, exist_ok=True)
    res = _run_task("search", search_task, run, {"preset": a.preset, "set": sets}, a.device)
    print(f"genotype*: {res['compact']}")
    print(f"search: {res['steps']} steps in {res['seconds']:.1f} s")
    print(f"saved: {run / 'search' / 'genotype.json'}")
    return 0


def _load_genotype_arg(run: Path, spec: str):
    from .artifacts import read_json
    from .space import Genotype, load_genotype

    if spec in ("star", "alpha*", "*"):
        p = run / "search" / "genotype.json"
        if not p.exists():
            raise UserError(f"{p} missing: run `python -m nes search --run {run}` first, or pass --genotype FILE")
        return Genotype.from_dict(read_json(p)["genotype"])
    return load_genotype(spec)


def cmd_retrain(a: argparse.Namespace) -> int:
    from .config import parse_sets
    from .tasks import retrain_task

    run = Path(a.run)
    _run_info(run)
    genotype = _load_genotype_arg(run, a.genotype)
    sets = parse_sets(a.set)
    if a.data_dir:
        sets["data_dir"] = a.data_dir
    config = {"preset": a.preset, "set": sets, "genotype": genotype.to_dict(), "name": a.name, "seed": a.seed}
    res = _run_task(f"retrain {a.name}", retrain_task, run, config, a.device)
    m = res["metrics"]
    print(f"member {a.name}: {genotype.compact()}")
    print(f"test accuracy {m.get('test_accuracy', float('nan')):.4f}, NLL {m.get('test_nll', float('nan')):.4f}, "
          f"{res['steps']} steps in {res['seconds']:.1f} s")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .tasks import evaluate_task
    from .train import list_members

    run = Path(a.run)
    _run_info(run)
    names = [n.strip() for n in a.members.split(",") if n.strip()] if a.members else None
    if not names and not list_members(run):
        raise UserError(f"{run}: no retrained members; train one with `python -m nes retrain --run {run} --genotype star --name m0`")
    out = evaluate_task(run, {"members": names, "epoch": a.epoch, "write": False})
    rows, ens = out["members"], out["ensemble"]
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'member':<16}{'epoch':>6}{'acc':>8}{'nll':>8}{'ece':>8}{'brier':>8}")
    for r in rows:
        print(f"{r['name']:<16}{r['epoch']:>6}{r['accuracy']:>8.4f}{r['nll']:>8.4f}{r['ece']:>8.4f}{r['brier']:>8.4f}")
    print(f"{'ensemble':<16}{'':>6}{ens['accuracy']:>8.4f}{ens['nll']:>8.4f}{ens['ece']:>8.4f}{ens['brier']:>8.4f}")
    print(f"size {int(ens['size'])}; mean member acc {ens['member_accuracy']:.4f}; oracle NLL {ens['oracle_nll']:.4f}; "
          f"disagreement {ens['disagreement']:.4f}; predictive JS {ens['predictive_js']:.4f}")
    return 0


def cmd_import_arch(a: argparse.Namespace) -> int:
    from .space import load_genotype

    g = load_genotype(a.file)
    print(g.to_json(indent=2 if a.pretty else None))
    return 0


def cmd_hypernet(a: argparse.Namespace) -> int:
    from .config import parse_sets
    from .tasks import hypernet_task

    run = Path(a.run)
    _run_info(run)
    config = {"preset": a.preset, "set": parse_sets(a.set), "regularizer": a.regularizer}
    res = _run_task(f"hypernet ({a.regularizer})", hypernet_task, run, config, a.device)
    print(f"hypernetwork ({a.regularizer}): {res['steps']} steps in {res['seconds']:.1f} s")
    _print_samples(run, a.regularizer, None)
    return 0


def _print_samples(run: Path, regularizer: str | None, lams: list[float] | None, as_json: bool = False) -> None:
    from .diversity import lam_grid, sample_architectures
    from .hypernet import load_hypernet, load_search

    hyper, meta = load_hypernet(run, regularizer)
    _, layout, _, star = load_search(run)
    if lams is None:
        lams = lam_grid(meta["lam_min"], meta["lam_max"], 5)
    samples = sample_architectures(hyper, layout, star, lams, meta["config"]["tau"])
    if as_json:
        print(json.dumps([s.to_dict() for s in samples], indent=2))
        return
    print(f"regularizer {meta['regularizer']}; genotype*: {star.compact()} (Λ = {star.num_edges()} edges)")
    print(f"{'lam':>6} {'matched':>8} {'JS to α*':>9}  genotype")
    for s in samples:
        print(f"{s.lam:>6.2f} {s.matched_edges:>8d} {s.js_to_star:>9.4f}  {s.genotype.compact()}")


def cmd_sample(a: argparse.Namespace) -> int:
    run = Path(a.run)
    _run_info(run)
    _print_samples(run, a.regularizer, a.lam, a.json)
    return 0


def cmd_fixed_lambda(a: argparse.Namespace) -> int:
    from .config import parse_sets
    from .space import Genotype
    from .tasks import fixed_lambda_task

    run = Path(a.run)
    _run_info(run)
    config = {"preset": a.preset, "set": parse_sets(a.set), "regularizer": a.regularizer, "lam": a.lam}
    res = _run_task(f"search at λ={a.lam:g}", fixed_lambda_task, run, config, a.device)
    g = Genotype.from_dict(res["genotype"])
    print(f"λ={a.lam:g}: {g.compact()}; matched edges {res['matched_edges']} of {g.num_edges()}")
    print(f"{res['steps']} steps in {res['seconds']:.1f} s; saved under {run / 'fixed_lambda' / f'lam_{a.lam:g}'}")
    return 0


def _job_row(j) -> dict[str, Any]:
    return {"id": j.id, "kind": j.kind, "status": j.status, "pid": j.pid, "progress": round(j.progress, 4),
            "step": j.step, "total": j.total, "executor": j.executor, "deps": j.deps,
            "name": j.config.get("name"), "error": (j.error or "").splitlines()[0] if j.error else None}


def _print_jobs(jobs) -> None:
    print(f"{'id':>4} {'kind':<13}{'status':<10}{'progress':>9} {'pid':>8}  detail")
    for j in jobs:
        detail = j.config.get("name") or j.config.get("regularizer") or ""
        if j.error:
            detail = (detail + " — " if detail else "") + j.error.splitlines()[0][:100]
        print(f"{j.id:>4} {j.kind:<13}{j.status:<10}{100 * j.progress:>8.1f}% {j.pid or '':>8}  {detail}")


def cmd_run(a: argparse.Namespace) -> int:
    from .config import parse_sets
    from .jobs import pipeline, wait
    from .store import Store, resolve_run

    store = Store()
    run = resolve_run(a.run)
    if (run / "search").exists() or any(j.run_id == str(run) for j in store.jobs()):
        raise UserError(f"run {run} already exists; pick a new --run, or manage its jobs with `python -m nes jobs list --run {a.run}`")
    sets = parse_sets(a.set)
    if a.data_dir:
        sets["data_dir"] = a.data_dir
    res = {"num_cpus": a.ray_cpus, "num_gpus": a.ray_gpus} if a.executor == "ray" else None
    ids = pipeline(store, str(run), a.dataset, a.preset, a.members, a.regularizer, a.executor, sets, res)
    print(f"run {run}: jobs {', '.join(map(str, ids))} (search → hypernet → sample → {a.members} members → evaluate)")
    if a.executor == "ray" and a.detach:
        import subprocess

        from .jobs import _worker_env

        subprocess.Popen([sys.executable, "-m", "nes", "ray-driver", *map(str, ids)], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_worker_env(1))
    if a.detach:
        print(f"detached; follow with `python -m nes jobs list --run {a.run}`")
        return 0
    last = {}

    def show(jobs) -> None:
        for j in jobs:
            key = (j.status, int(20 * j.progress))
            if last.get(j.id) != key:
                last[j.id] = key
                print(f"  job {j.id} {j.kind:<9} {j.status:<9} {100 * j.progress:5.1f}%", file=sys.stderr)

    if a.executor == "ray":
        from .ray_executor import run_ray_jobs

        run_ray_jobs(store, [i for i in ids if store.job(i).kind == "retrain"], address=a.ray_address)
    jobs = wait(store, ids, on_poll=show)
    _print_jobs(jobs)
    if any(j.status != "done" for j in jobs):
        print(f"some jobs did not finish; see `python -m nes jobs show ID` and the logs in {run / 'logs'}", file=sys.stderr)
        return 1
    ens = store.job(ids[-1]).result["ensemble"]
    print(f"ensemble of {a.members}: accuracy {ens['accuracy']:.4f}, NLL {ens['nll']:.4f}, ECE {ens['ece']:.4f} "
          f"(mean member accuracy {ens['member_accuracy']:.4f})")
    return 0


def cmd_jobs(a: argparse.Namespace) -> int:
    from .jobs import cancel, reap, resume
    from .store import Store

    store = Store(create=False) if a.action != "list" else Store()
    if a.action == "list":
        run_id = store.get_run(a.run) if a.run else None
        reap(store, run_id)
        jobs = store.jobs(run_id)
        if a.json:
            print(json.dumps([_job_row(j) for j in jobs], indent=2))
        else:
            _print_jobs(jobs)
        return 0
    if a.id is None:
        raise UserError(f"jobs {a.action} needs a job id")
    if a.action == "show":
        reap(store)
        j = store.job(a.id)
        d = j.to_dict()
        d["metrics_last"] = {}
        for m in store.metrics(j.id):
            d["metrics_last"][m["name"]] = m["value"]
        print(json.dumps(d, indent=2, default=str))
    elif a.action == "cancel":
        print(f"job {a.id}: {cancel(store, a.id)}")
    elif a.action == "resume":
        resume(store, a.id)
        print(f"job {a.id}: queued again (continues from its last checkpoint)")
    return 0


def cmd_worker(a: argparse.Namespace) -> int:
    from .jobs import run_worker

    return run_worker(a.job_id)


def cmd_ray_driver(a: argparse.Namespace) -> int:
    from .ray_executor import run_ray_jobs
    from .store import Store

    run_ray_jobs(Store(), a.job_ids or None, address=a.address)
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    import torch

    from .runtime import configure_threads, device_label, resolve_device

    configure_threads()
    print(f"nes {__version__}, torch {torch.__version__}, device {device_label(resolve_device(a.device))}")
    return 0


def cmd_baseline(a: argparse.Namespace) -> int:
    from .config import parse_sets
    from .tasks import baseline_task

    run = Path(a.run)
    if not (run / "search" / "genotype.json").exists():
        raise UserError(f"{run}: no finished search; run `python -m nes search --run {run}` first")
    cfg = {"method": a.method, "members": a.members, "seed": a.seed, "budget": a.budget, "n_edges": a.n_edges,
           "population": a.population, "sample": a.sample, "preset": a.preset, "set": parse_sets(a.set)}
    cb, close = _progress_bar(f"baseline {a.method}")
    try:
        res = baseline_task(run, cfg, cb, a.device)
    finally:
        close()
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        ens = res["ensemble"]
        print(f"{a.method}: members {', '.join(res['members'])}")
        print(f"  ensemble accuracy {ens.get('accuracy', float('nan')):.4f}  nll {ens.get('nll', float('nan')):.4f}  "
              f"ece {ens.get('ece', float('nan')):.4f}")
        print(f"  cost: search {res['search_seconds']:.1f} s, training {res['train_seconds']:.1f} s, "
              f"total {res['total_seconds']:.1f} s")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .artifacts import read_json
    from .demo import DEMO_DIR, build_demo, folder_bytes

    out = Path(a.out) if a.out else DEMO_DIR
    if a.rebuild:
        build_demo(out, a.data_dir, a.device, a.members, a.preset, log=lambda m: print(m, file=sys.stderr))
    if not (out / "demo.json").exists():
        raise UserError(f"no demo run in {out}; make one with `python -m nes demo --rebuild`")
    rec = read_json(out / "demo.json")
    print(json.dumps({**rec, "path": str(out), "bytes": folder_bytes(out)}, indent=2))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from .export import export_ensemble
    from .train import finished_members

    run = Path(a.run)
    _run_info(run)
    if a.members:
        names = [n.strip() for n in a.members.split(",") if n.strip()]
    else:  # every finished member
        names = finished_members(run)
        if not names:
            raise UserError(f"{run}: no finished members to export; train one with "
                            f"`python -m nes retrain --run {run} --genotype star --name m0`")
    res = export_ensemble(run, names, a.out, onnx=a.onnx, make_zip=a.zip, overwrite=a.force, title=a.title,
                          verify=not a.no_verify)
    m = res.manifest
    if a.json:
        print(json.dumps({"path": str(res.path), "zip": str(res.zip_path) if res.zip_path else None,
                          "manifest": m}, indent=2))
        return 0
    ens = m["ensemble"]["metrics"]
    print(f"bundle {res.path}: {len(m['members'])} members ({', '.join(names)})")
    print(f"  ensemble test accuracy {ens['accuracy']:.4f}, NLL {ens['nll']:.4f}, ECE {ens['ece']:.4f} "
          f"({m['ensemble']['test_images']} test images)")
    v = m.get("verification", {})
    if v.get("checked"):
        print(f"  reloaded bundle matches the run's saved probabilities: max |Δp| {v['max_abs_diff_vs_run']:.2e} "
              f"on {v['images']} test images")
    elif v:
        print(f"  not verified against the run: {v.get('reason')}")
    if "onnx" in m:
        o = m["onnx"]
        print(f"  ensemble.onnx (opset {o['opset']}): onnxruntime vs PyTorch max |Δp| {o['max_abs_diff']:.2e}")
    if res.zip_path:
        print(f"  zip {res.zip_path}")
    return 0


def cmd_predict(a: argparse.Namespace) -> int:
    from .export import load_ensemble, load_images
    from .runtime import configure_threads

    configure_threads()
    model = load_ensemble(a.bundle)
    images, names = load_images(a.input, model.channels, model.height, model.width)
    probs = model.predict(images, a.batch_size)
    names = names or [f"{Path(a.input).name}[{i}]" for i in range(len(probs))]
    top = probs.argmax(1).tolist()
    if a.json:
        print(json.dumps({"bundle": str(a.bundle), "classes": model.class_names, "members": model.member_names,
                          "predictions": [{"input": n, "class": k, "label": model.class_names[k],
                                           "probability": round(float(p[k]), 6),
                                           "probs": [round(float(v), 6) for v in p]}
                                          for n, k, p in zip(names, top, probs)]}, indent=2))
        return 0
    width = max([len(n) for n in names] + [5])
    print(f"{'input':<{width}}  {'class':<16}{'p':>7}")
    for n, k, p in zip(names, top, probs):
        print(f"{n:<{width}}  {model.class_names[k]:<16}{float(p[k]):>7.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nes", description="NES Explorer: differentiable neural ensemble search")
    p.add_argument("--version", action="version", version=f"nes {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="DARTS search for the base architecture α*")
    s.add_argument("--dataset", help="fashion-mnist, cifar10, cifar100 or digits (default: the preset's)")
    s.add_argument("--preset", default="paper", choices=["smoke", "quick", "paper"])
    s.add_argument("--run", required=True, help="run folder (created; an existing search resumes)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a SearchConfig field")
    s.add_argument("--device", default=None, help="auto (default), cpu, cuda, mps")
    s.add_argument("--data-dir", default=None)
    s.set_defaults(fn=cmd_search)

    r = sub.add_parser("retrain", help="retrain a genotype from scratch as an ensemble member")
    r.add_argument("--run", required=True)
    r.add_argument("--genotype", required=True, help="genotype JSON or NNI arc.json file, or 'star' for α*")
    r.add_argument("--name", required=True, help="member name (folder under RUN/members)")
    r.add_argument("--preset", default=None, choices=["smoke", "quick", "paper"], help="default: the run's search preset")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a TrainConfig field")
    r.add_argument("--device", default=None)
    r.add_argument("--data-dir", default=None)
    r.set_defaults(fn=cmd_retrain)

    e = sub.add_parser("evaluate", help="metrics of members and of their ensemble (test split)")
    e.add_argument("--run", required=True)
    e.add_argument("--members", default=None, help="comma-separated member names (default: all)")
    e.add_argument("--epoch", type=int, default=None, help="epoch whose probabilities to use (default: last)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_evaluate)

    i = sub.add_parser("import-arch", help="convert an EdgeNES/NNI arc.json (or our JSON) to our genotype JSON")
    i.add_argument("file")
    i.add_argument("--pretty", action="store_true")
    i.set_defaults(fn=cmd_import_arch)

    h = sub.add_parser("hypernet", help="train the hypernetwork α(λ) on a searched run")
    h.add_argument("--run", required=True)
    h.add_argument("--regularizer", required=True, choices=["js", "edges"])
    h.add_argument("--preset", default=None, choices=["smoke", "quick", "paper"], help="default: the run's search preset")
    h.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a HypernetConfig field")
    h.add_argument("--device", default=None)
    h.set_defaults(fn=cmd_hypernet)

    sp = sub.add_parser("sample", help="architectures α(λ) of the trained hypernetwork")
    sp.add_argument("--run", required=True)
    sp.add_argument("--lam", type=float, nargs="+", default=None, help="λ values (default: 5 over the range)")
    sp.add_argument("--regularizer", default=None, choices=["js", "edges"], help="default: edges if trained, else js")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_sample)

    f = sub.add_parser("fixed-lambda", help="per-λ search: one search with the regularizer at a fixed λ")
    f.add_argument("--run", required=True)
    f.add_argument("--lam", type=float, required=True)
    f.add_argument("--regularizer", default="edges", choices=["js", "edges"])
    f.add_argument("--preset", default=None, choices=["smoke", "quick", "paper"])
    f.add_argument("--set", action="append", metavar="KEY=VALUE")
    f.add_argument("--device", default=None)
    f.set_defaults(fn=cmd_fixed_lambda)

    rp = sub.add_parser("run", help="the whole pipeline as background jobs: search → hypernet → sample → members → evaluate")
    rp.add_argument("--dataset", default=None)
    rp.add_argument("--preset", default="quick", choices=["smoke", "quick", "paper"])
    rp.add_argument("--run", required=True, help="run name (in NES_HOME) or folder")
    rp.add_argument("--members", type=int, default=3)
    rp.add_argument("--regularizer", default="edges", choices=["js", "edges"])
    rp.add_argument("--executor", default="local", choices=["local", "ray"])
    rp.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local one)")
    rp.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs per member task (ray executor)")
    rp.add_argument("--ray-gpus", type=float, default=0.0, help="GPUs per member task (ray executor), e.g. 0.25")
    rp.add_argument("--detach", action="store_true", help="return at once; workers carry on")
    rp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a SearchConfig field")
    rp.add_argument("--data-dir", default=None)
    rp.set_defaults(fn=cmd_run)

    jp = sub.add_parser("jobs", help="list, show, cancel or resume background jobs")
    jp.add_argument("action", choices=["list", "show", "cancel", "resume"])
    jp.add_argument("id", nargs="?", type=int)
    jp.add_argument("--run", default=None)
    jp.add_argument("--json", action="store_true")
    jp.set_defaults(fn=cmd_jobs)

    w = sub.add_parser("worker", help=argparse.SUPPRESS)
    w.add_argument("job_id", type=int)
    w.set_defaults(fn=cmd_worker)

    rd = sub.add_parser("ray-driver", help=argparse.SUPPRESS)
    rd.add_argument("job_ids", type=int, nargs="*")
    rd.add_argument("--address", default=None)
    rd.set_defaults(fn=cmd_ray_driver)

    b = sub.add_parser("baseline", help="a baseline ensemble: deepens, darts, random, nes-rs, nes-re, per-lambda")
    b.add_argument("--run", required=True, help="a run with a finished search (and, for per-lambda, its supernet)")
    b.add_argument("--method", required=True, choices=["deepens", "darts", "random", "nes-rs", "nes-re", "per-lambda",
                                                        "edgenes-edges", "edgenes-js"])
    b.add_argument("--members", type=int, default=3, help="ensemble size M (default 3)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--budget", type=int, default=None, help="NES-RS / NES-RE: member trainings; EdgeNES: λ values in the pool (default 2·M)")
    b.add_argument("--n-edges", type=int, default=2, help="random deviation: edges of genotype* replaced (default 2)")
    b.add_argument("--population", type=int, default=4, help="NES-RE population size")
    b.add_argument("--sample", type=int, default=2, help="NES-RE tournament sample size")
    b.add_argument("--preset", default=None, choices=["smoke", "quick", "paper"], help="default: the run's preset")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a TrainConfig field of the members")
    b.add_argument("--device", default=None)
    b.add_argument("--json", action="store_true")
    b.set_defaults(fn=cmd_baseline)

    dm = sub.add_parser("demo", help="show (or --rebuild) the demo run bundled in assets/demo")
    dm.add_argument("--rebuild", action="store_true", help="run the pipeline (quick preset) and replace the demo")
    dm.add_argument("--out", default=None, help="demo folder (default: assets/demo of this checkout)")
    dm.add_argument("--members", type=int, default=3, help="members to retrain, α* included (default 3)")
    dm.add_argument("--preset", default="quick", choices=["smoke", "quick"], help="quick (default) or smoke (tiny, on digits)")
    dm.add_argument("--device", default=None)
    dm.add_argument("--data-dir", default=None)
    dm.set_defaults(fn=cmd_demo)

    ex = sub.add_parser("export", help="write a bundle of chosen members (manifest, safetensors, model card; --onnx, --zip)")
    ex.add_argument("--run", required=True)
    ex.add_argument("--members", default=None, help="comma-separated member names (default: every finished member)")
    ex.add_argument("--out", required=True, help="bundle folder to create")
    ex.add_argument("--onnx", action="store_true", help="also write ensemble.onnx (checked with onnxruntime)")
    ex.add_argument("--zip", action="store_true", help="also write BUNDLE.zip")
    ex.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    ex.add_argument("--title", default=None, help="title of the model card")
    ex.add_argument("--no-verify", action="store_true",
                    help="skip reloading the bundle and comparing it with the run's saved test probabilities")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(fn=cmd_export)

    pr = sub.add_parser("predict", help="class probabilities of an exported ensemble for images")
    pr.add_argument("bundle", help="bundle folder or .zip written by `export`")
    pr.add_argument("input", help="an .npz with an 'images' array (uint8 0-255 or float 0-1), or a folder of PNG/JPEG files")
    pr.add_argument("--batch-size", type=int, default=256)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(fn=cmd_predict)

    n = sub.add_parser("info", help="library version and compute device")
    n.add_argument("--device", default=None)
    n.set_defaults(fn=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return a.fn(a)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # DataError, ArtifactError, UserError are ValueErrors
        if os.environ.get("NES_DEBUG") == "1":
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER
