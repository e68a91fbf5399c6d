"""What every command shares: the exit code of user errors, the option helpers, the progress bar.

A command is a `Command`: its name, help, a function that adds its options and the handler. The
choices of options come from the tables they name (presets, regularizers, methods, datasets), so
a new entry in a table shows up on the command line by itself.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..artifacts import reading
from ..config import SEARCH_PRESETS
from ..layout import RunDir
from ..method.interop_nni import load_genotype
from ..method.regularizers import REGULARIZERS
from ..method.space import Genotype

EXIT_USER = 2
PRESETS = tuple(SEARCH_PRESETS)  # smoke, quick, paper
REGULARIZER_CHOICES = tuple(REGULARIZERS)


class UserError(ValueError):
    pass


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    hidden: bool = False  # internal (worker, ray-driver): not listed in --help


# -- options ------------------------------------------------------------------------------------
def add_run(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--run", required=True, help=help)


def add_preset(p: argparse.ArgumentParser, default: str | None = None, help: str | None = None,
               choices: tuple[str, ...] = PRESETS) -> None:
    p.add_argument("--preset", default=default, choices=list(choices),
                   help=help or ("default: the run's search preset" if default is None else None))


def add_set(p: argparse.ArgumentParser, what: str | None) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=f"override a {what} field" if what else None)


def add_device(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--device", default=None, help=help)


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None)


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def add_regularizer(p: argparse.ArgumentParser, default: str | None = None, required: bool = False,
                    help: str | None = None) -> None:
    p.add_argument("--regularizer", default=default, required=required, choices=list(REGULARIZER_CHOICES),
                   help=help)


def check_home() -> None:
    """NES_HOME (the run store's folder) must be a folder or not exist yet: UserError naming it."""
    home = Path(os.environ.get("NES_HOME", "runs"))
    for p in (home, *home.resolve().parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"NES_HOME={home}: {p} is a file, not a folder; set NES_HOME to a folder "
                                "(it is created if missing), or move the file away")
            return


def describe(e: BaseException) -> str:
    """The message of a user error; a file standing where a folder is needed is said so, by path."""
    if isinstance(e, (FileExistsError, NotADirectoryError)) and getattr(e, "filename", None):
        return (f"{e.filename}: a file stands where a folder is needed ({e.strerror}); move it away or "
                "choose another path")
    return str(e)


# -- running ------------------------------------------------------------------------------------
def progress_bar(desc: str) -> tuple[Callable[[int, int, dict], None], Callable[[], None]]:
    """A tqdm bar driven by the library's progress(step, total, metrics) callback."""
    from tqdm import tqdm  # only commands that train draw a bar

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


def run_task(desc: str, task: Callable, run: Path, config: dict, device: str | None) -> dict:
    """Run a pipeline step in this process with a progress bar."""
    cb, close = progress_bar(desc)
    try:
        return task(run, config, cb, device)
    finally:
        close()


def run_folder(run: str | Path) -> RunDir:
    """--run of a command that may create the folder: UserError when the path, or a folder above
    it, is a file (checked before anything is written)."""
    rd = RunDir(run)
    for p in (rd.path, *rd.path.parents):
        if p.exists():
            if not p.is_dir():
                what = "the run folder" if p == rd.path else f"a folder above the run folder {rd.path}"
                raise UserError(f"--run {run}: {p} is a file, not a folder, where {what} should be; "
                                "pass another --run, or move the file away")
            break
    return rd


def existing_run(run: str | Path) -> RunDir:
    """The run folder (UserError that says how to create it when it does not exist, or that it
    is a file)."""
    rd = run_folder(run)
    if not rd.path.is_dir():
        raise UserError(f"run folder {rd.path} does not exist; create it with `python -m nes search --run {run} ...`")
    return rd


def genotype_arg(run: RunDir, spec: str) -> Genotype:
    """--genotype: 'star' (α* of the run) or a genotype file (ours or NNI's arc.json)."""
    if spec in ("star", "alpha*", "*"):
        p = run.search.genotype
        if not p.exists():
            raise UserError(f"{p} missing: run `python -m nes search --run {run.path}` first, or pass --genotype FILE")
        with reading(p, "the search's genotype record"):
            return Genotype.from_dict(run.search.read("genotype.json", {})["genotype"])
    return load_genotype(spec)


def member_list(text: str | None) -> list[str] | None:
    """Comma-separated member names (None when not given)."""
    return [n.strip() for n in text.split(",") if n.strip()] if text else None
