"""Command line: `python -m nes COMMAND ...`.

User errors (bad files, settings, missing data) print one clear message and exit with code 2;
there is no traceback unless NES_DEBUG=1. Each command lives in the module of its kind
(method, jobs, bundle, misc) as a `Command`; the parser is built from their tables.
"""
from __future__ import annotations

import argparse
import os
import sys

from .._version import __version__
from . import archmap, bundle, jobs, levers, method, misc, shift
from .common import EXIT_USER, Command, check_home, describe

# in the order `--help` lists them
ALL_COMMANDS: list[Command] = [*method.COMMANDS, shift.SHIFT, levers.LEVERS, archmap.MAP, *jobs.COMMANDS, method.BASELINE, misc.DEMO,
                               *bundle.COMMANDS, misc.INFO]

STORE_COMMANDS = ("run", "jobs", "worker", "ray-driver")  # those that open the run store in NES_HOME


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nes", description="NES Explorer: differentiable neural ensemble search")
    p.add_argument("--version", action="version", version=f"nes {__version__}")
    shown = [c.name for c in ALL_COMMANDS if not c.hidden]
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(shown) + "}")
    for c in ALL_COMMANDS:
        kwargs = {} if c.hidden else {"help": c.help}
        sp = sub.add_parser(c.name, description=c.help, **kwargs)
        c.add_args(sp)
        sp.set_defaults(fn=c.run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        if a.command in STORE_COMMANDS:
            check_home()
        return a.fn(a)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # DataError, ArtifactError, UserError are ValueErrors
        if os.environ.get("NES_DEBUG") == "1":
            raise
        print(f"error: {describe(e)}", file=sys.stderr)
        return EXIT_USER
