"""`python -m nes shift`: members and ensembles on the test corruptions, severity by severity."""
from __future__ import annotations

import argparse
import json
import sys

from ..corruptions import SEVERITIES, TEST_CORRUPTIONS, VAL_CORRUPTIONS
from ..method.shift import DEFAULT_IMAGES, SELECT, report_path
from ..method.stats import Difference
from ..runs.tasks import shift_task
from ..runtime import configure_threads
from .common import Command, add_device, add_json, add_run, existing_run, member_list


def _args(p: argparse.ArgumentParser) -> None:
    add_run(p)
    p.add_argument("--members", default=None, help="comma-separated member names (default: every finished member)")
    p.add_argument("--baselines", action="store_true",
                   help="also every baseline of the run (each method's ensemble), with its difference to DeepEns")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES,
                   help=f"test images per condition (default {DEFAULT_IMAGES}; more: narrower intervals, longer)")
    p.add_argument("--seed", type=int, default=0, help="the corruptions' random seed (default 0)")
    p.add_argument("--select", default="clean", choices=list(SELECT),
                   help="where the best member is chosen and T fitted: the clean validation split (default) or "
                        f"it corrupted by the validation corruptions ({', '.join(VAL_CORRUPTIONS)})")
    add_device(p)
    add_json(p)
    p.epilog = (f"test corruptions: {', '.join(TEST_CORRUPTIONS)}; severities {SEVERITIES[0]}–{SEVERITIES[-1]} "
                "(MNIST-C / CIFAR-10-C tables). Reports are written to RUN/shift/<set>.json.")


def _severity_line(r: dict) -> str:
    cal = r.get("calibrated") or {}
    vs = r.get("vs_best")
    gain = Difference.from_dict(vs["nll"]).text() if vs else "n/a"
    return (f"{r['severity']:>3} {100 * r['accuracy']:>7.2f} {100 * r['mean_member_accuracy']:>7.2f} "
            f"{r['nll']:>7.4f} = {r['mean_member_nll']:.4f} − {r['diversity_nll']:.4f}  "
            f"{r['brier']:>6.4f} = {r['mean_member_brier']:.4f} − {r['diversity_brier']:.4f}  "
            f"{r['ece']:>6.4f} → {cal.get('ece', float('nan')):.4f}   {gain}")


def _print_report(label: str, rep: dict) -> None:
    print(f"\n{label}: {len(rep['members'])} members ({', '.join(rep['members'])}), {rep['images']} images per "
          f"condition, best member and T chosen on {rep['select']} validation")
    print("sev  acc %  mean m.  NLL     = mean member NLL − diversity   Brier  = mean member − diversity   "
          "ECE → after T   ensemble − best member, NLL")
    for r in rep["by_severity"]:
        print(_severity_line(r))
    vs = rep.get("vs")
    if vs and vs.get("by_severity"):
        print(f"  {label} − {vs['reference']} (severity: NLL; its member-strength and diversity terms; accuracy):")
        for d in vs["by_severity"]:
            terms = {k: Difference.from_dict(d[k]) for k in ("nll", "mean_member_nll", "diversity_nll", "accuracy")}
            print(f"  {d['severity']:>3}: NLL {terms['nll'].text()}; strength {terms['mean_member_nll'].text()}; "
                  f"diversity {terms['diversity_nll'].text()}; accuracy {terms['accuracy'].text()}")
    elif vs:
        print(f"  no difference to {vs['reference']}: {vs.get('error')}")


def cmd_shift(a: argparse.Namespace) -> int:
    configure_threads()
    run = existing_run(a.run)
    config = {"members": member_list(a.members), "baselines": a.baselines, "images": a.images, "seed": a.seed,
              "select": a.select}
    log = (lambda step, total, m: print(m.get("shift", ""), file=sys.stderr)) if not a.json else None
    out = shift_task(run.path, config, log, a.device)
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    for label, rep in out["reports"].items():
        _print_report(label, rep)
        print(f"  saved: {report_path(run.path, label, a.select)} ({rep['seconds']} s)")
    return 0


SHIFT = Command("shift", "members and ensembles under dataset shift: test corruptions at severities 1–5",
                _args, cmd_shift)
