"""`python -m nes levers`: the run's EdgeNES members against its DeepEns, lever by lever, clean and
under shift, with the gain ledger's split of every gap (RUN/levers.json)."""
from __future__ import annotations

import argparse
import json
import sys

from ..explorer import leversview
from ..method.shift import DEFAULT_IMAGES
from ..runs.tasks import levers_task
from ..runtime import configure_threads
from .common import Command, add_device, add_json, add_run, existing_run


def _args(p: argparse.ArgumentParser) -> None:
    add_run(p)
    p.add_argument("--members", type=int, default=5, help="ensemble size M (default 5; at most DeepEns's members)")
    p.add_argument("--no-shift", action="store_true", help="only the clean test set (seconds instead of minutes)")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES,
                   help=f"test images per corruption and severity (default {DEFAULT_IMAGES}, as `nes shift`)")
    p.add_argument("--seed", type=int, default=0, help="the corruptions' random seed (default 0)")
    add_device(p)
    add_json(p)
    p.epilog = ("Levers: EdgeNES as trained, its forward selection, the hybrid pool (α* seeds + EdgeNES) and an "
                "equal-cost mix, each also with per-member temperatures; members and temperatures are chosen on "
                "validation, the test set is scored once. Needs the run's DeepEns baseline "
                "(`python -m nes baseline --method deepens`).")


def cmd_levers(a: argparse.Namespace) -> int:
    configure_threads()
    run = existing_run(a.run)
    config = {"members": a.members, "shift": not a.no_shift, "images": a.images, "seed": a.seed}
    log = (lambda step, total, m: print(m.get("levers", ""), file=sys.stderr)) if not a.json else None
    out = levers_task(run.path, config, log, a.device)
    rep = leversview.load(run.path)
    if a.json:
        print(json.dumps(rep, indent=2))
        return 0
    for protocol in leversview.protocols(rep):
        print(f"\n== levers chosen on {leversview.PROTOCOLS[protocol]} ==")
        for sev in leversview.severities(rep, protocol):
            print(f"\nseverity {sev}:" if sev else "\nclean test set:")
            for row in leversview.table(rep, sev, protocol):
                print(f"  {row['lever']} ({row['networks trained']} networks): NLL {row['NLL']:.4f}, "
                      f"− DeepEns {row['NLL − DeepEns (95 % CI)']}; strength {row['strength term']:+.4f}, "
                      f"diversity {row['diversity term']:+.4f}")
    for protocol in leversview.protocols(rep):
        print()
        for line in leversview.verdict(rep, protocol=protocol):
            print(line.replace("**", ""))
    print(f"saved: {out['levers']} ({out['seconds']} s)")
    return 0


LEVERS = Command("levers", "EdgeNES against DeepEns lever by lever (selection, hybrid pools, temperatures), "
                 "clean and under shift", _args, cmd_levers)
