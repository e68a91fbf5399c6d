"""`python -m nes map`: the run's architecture map as one self-contained HTML file.

The file holds plotly's JavaScript itself (no network needed to open it: slides, rooms without the
app), is written atomically and never replaces an existing file unless --force is given; every
refusal happens before anything is computed or written.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..artifacts import atomic_write_bytes
from ..explorer.archmap import DEFAULT_GRID, SPACES, build_map, map_figure
from ..runtime import configure_threads
from .common import Command, UserError, add_run, existing_run


def _args(p: argparse.ArgumentParser) -> None:
    add_run(p, help="the run folder (needs a finished search; hypernetworks, members and baselines are added "
                    "where they exist)")
    p.add_argument("--out", required=True, help="the HTML file to write (e.g. map.html)")
    p.add_argument("--grid", type=int, default=DEFAULT_GRID,
                   help=f"points on each hypernetwork's path, evenly spaced on its diversity axis (default {DEFAULT_GRID})")
    p.add_argument("--seed", type=int, default=0, help="seed of the MDS embedding's random starts (default 0)")
    p.add_argument("--space", default="genotype", choices=list(SPACES),
                   help="genotype (default): every point is a discrete architecture; continuous: α* and the paths "
                        "by their softmax(θ)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.epilog = ("The map is a metric MDS of √(architecture JS); its Kruskal stress-1 is printed and shown in the "
                "title: the larger, the less the drawn distances can be trusted.")


def _check_out(out: Path, force: bool) -> None:
    """UserError when --out is a folder, sits under a file, or exists without --force."""
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; pass a file name such as {out / 'map.html'}")
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to replace it, or choose another --out")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out}: {parent} is a file, not a folder; choose another --out")
            break


def cmd_map(a: argparse.Namespace) -> int:
    out = Path(a.out)
    _check_out(out, a.force)
    if a.grid < 2:
        raise UserError(f"--grid must be at least 2, got {a.grid}")
    run = existing_run(a.run)
    if not run.has_search:
        raise UserError(f"{run.search.arch} missing: the run {run.path} has no finished search; run "
                        f"`python -m nes search --run {a.run}` first, or pass another --run")
    configure_threads()
    amap = build_map(run.path, grid=a.grid, seed=a.seed, space=a.space)
    html = map_figure(amap).to_html(include_plotlyjs=True, full_html=True)
    _check_out(out, a.force)  # again: the file may have appeared while the map was computed
    atomic_write_bytes(out, html.encode("utf-8"))
    kinds = {k: len(amap.of_kind(k)) for k in ("path", "member", "baseline")}
    print(f"{out}: {len(amap.paths)} hypernetwork path(s) ({kinds['path']} points), {kinds['member']} member(s), "
          f"{kinds['baseline']} baseline architecture(s); Kruskal stress-1 {amap.stress:.3f}")
    for note in amap.notes:
        print(f"note: {note}")
    return 0


MAP = Command("map", "the architecture map: α*, the hypernetworks' paths, members and baselines in 2-D (HTML)",
              _args, cmd_map)
