"""Commands around the product: demo (the bundled demo run) and info (version and device)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .._version import __version__
from ..artifacts import read_json
from ..config import MAX_MEMBERS
from ..explorer.demo import DEMO_DIR, DEMO_MEMBERS, build_demo, folder_bytes, summary_lines
from ..layout import RunDir
from ..runtime import configure_threads, device_label, resolve_device
from .common import Command, UserError, add_data_dir, add_device


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rebuild", action="store_true", help="run the pipeline (quick preset) and replace the demo")
    p.add_argument("--out", default=None, help="demo folder (default: assets/demo of this checkout)")
    p.add_argument("--members", type=int, default=DEMO_MEMBERS,
                   help=f"EdgeNES members to retrain, α* included; DeepEns gets as many (default {DEMO_MEMBERS})")
    p.add_argument("--preset", default="quick", choices=["smoke", "quick"],
                   help="quick (default) or smoke (tiny, on digits)")
    add_device(p)
    add_data_dir(p)
    p.add_argument("--json", action="store_true", help="print the whole record (demo.json) as JSON")


def cmd_demo(a: argparse.Namespace) -> int:
    out = Path(a.out) if a.out else DEMO_DIR
    if a.rebuild and not 1 <= a.members <= MAX_MEMBERS:
        raise UserError(f"--members must be between 1 and {MAX_MEMBERS}, got {a.members}")
    if a.rebuild:
        build_demo(out, a.data_dir, a.device, a.members, a.preset, log=lambda m: print(m, file=sys.stderr))
    demo = RunDir(out).demo_json
    if not demo.exists():
        raise UserError(f"no demo run in {out}; make one with `python -m nes demo --rebuild`")
    record = {**read_json(demo, dict, "how the demo was made"), "path": str(out), "bytes": folder_bytes(out)}
    if a.json:
        print(json.dumps(record, indent=2))
        return 0
    print("\n".join(summary_lines(record)))
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    configure_threads()
    print(f"nes {__version__}, torch {torch.__version__}, device {device_label(resolve_device(a.device))}")
    return 0


DEMO = Command("demo", "show (or --rebuild) the demo run bundled in assets/demo", _demo_args, cmd_demo)
INFO = Command("info", "library version and compute device", add_device, cmd_info)
