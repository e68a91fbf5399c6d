"""A refused command changes nothing (issue 23, classes 2, 6, 10, 11): every refusal the CLI has,
run over a copy of one finished smoke run, exits 2 with a message naming the setting or file and
leaves the run folder byte-identical (every path and every file's hash, before and after).

The CLI runs in this process (`nes.cli.main.main`): a subprocess per case would spend most of the
module's time importing torch."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from nes.artifacts import load_tensors, save_tensors
from nes.cli.main import main
from nes.method.baselines import run_baseline
from nes.runs.tasks import fixed_lambda_task, hypernet_task, retrain_task, search_task

SMOKE = {"preset": "smoke"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished smoke run on digits: search, edges hypernetwork, a per-λ search at λ=1, member m0,
    a one-member DeepEns baseline."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("refusals") / "run"
    search_task(run, {**SMOKE, "set": {"dataset": "digits"}}, device="cpu")
    hypernet_task(run, {**SMOKE, "regularizer": "edges"}, device="cpu")
    fixed_lambda_task(run, {**SMOKE, "regularizer": "edges", "lam": 1.0}, device="cpu")
    retrain_task(run, {**SMOKE, "name": "m0"}, device="cpu")
    run_baseline(run, "deepens", members=1, preset="smoke", device="cpu")
    return run


@pytest.fixture
def run(finished, tmp_path, monkeypatch) -> Path:
    """A private copy of the finished run, and a private NES_HOME."""
    monkeypatch.setenv("NES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NES_NO_PROGRESS", "1")
    dst = tmp_path / "run"
    shutil.copytree(finished, dst)
    return dst


def tree(path: Path) -> dict[str, str]:
    """Every path under `path` (folders too) → the sha256 of its bytes ('dir' for a folder)."""
    return {str(p.relative_to(path)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*"))}


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted({k for k in before.keys() | after.keys() if before.get(k) != after.get(k)})


# (id, argv with R for the run folder, a word the message must hold: the setting or file it names)
REFUSALS = [
    ("search-other-config", ["search", "--run", "R", "--preset", "smoke", "--dataset", "digits", "--set", "limit=100"],
     "configuration"),
    ("search-other-width", ["search", "--run", "R", "--preset", "smoke", "--dataset", "digits", "--set", "channels=6"],
     "configuration"),
    ("search-unknown-setting", ["search", "--run", "R", "--preset", "smoke", "--set", "bogus=1"], "bogus"),
    ("search-bad-dataset", ["search", "--run", "R", "--preset", "smoke", "--dataset", "bogus"], "bogus"),
    ("hypernet-other-config", ["hypernet", "--run", "R", "--regularizer", "edges", "--preset", "smoke",
                               "--set", "epochs=3"], "configuration"),
    ("hypernet-other-width", ["hypernet", "--run", "R", "--regularizer", "edges", "--preset", "smoke",
                              "--set", "channels=6"], "channels"),
    ("hypernet-bad-range", ["hypernet", "--run", "R", "--regularizer", "edges", "--preset", "smoke",
                            "--set", "lam_max=-1"], "lam_max"),
    ("hypernet-other-limit", ["hypernet", "--run", "R", "--regularizer", "edges", "--preset", "smoke",
                              "--set", "limit=100"], "configuration"),
    ("fixed-lambda-outside", ["fixed-lambda", "--run", "R", "--lam", "100", "--preset", "smoke"], "100"),
    ("fixed-lambda-other-config", ["fixed-lambda", "--run", "R", "--lam", "1", "--preset", "smoke",
                                   "--set", "epochs=3"], "configuration"),
    ("retrain-other-config", ["retrain", "--run", "R", "--genotype", "star", "--name", "m0", "--preset", "smoke",
                              "--set", "epochs=3"], "configuration"),
    ("retrain-no-validation", ["retrain", "--run", "R", "--genotype", "star", "--name", "m1", "--preset", "smoke",
                               "--set", "val_fraction=0.001"], "val_fraction"),
    ("retrain-missing-genotype", ["retrain", "--run", "R", "--genotype", "R/nope.json", "--name", "m1"], "nope.json"),
    ("retrain-bad-name", ["retrain", "--run", "R", "--genotype", "star", "--name", "../m1"], "../m1"),
    ("fixed-lambda-nan", ["fixed-lambda", "--run", "R", "--lam", "nan", "--preset", "smoke"], "nan"),
    ("sample-nan", ["sample", "--run", "R", "--lam", "nan"], "nan"),
    ("retrain-bad-setting", ["retrain", "--run", "R", "--genotype", "star", "--name", "m1", "--set", "lr=-1"], "lr"),
    ("sample-untrained", ["sample", "--run", "R", "--regularizer", "js"], "js"),
    ("sample-outside", ["sample", "--run", "R", "--lam", "100"], "100"),
    ("evaluate-unknown-member", ["evaluate", "--run", "R", "--members", "nope"], "nope"),
    ("evaluate-bad-epoch", ["evaluate", "--run", "R", "--epoch", "99"], "99"),
    ("baseline-zero-budget", ["baseline", "--run", "R", "--method", "nes-rs", "--budget", "0", "--preset", "smoke"],
     "budget"),
    ("baseline-zero-members", ["baseline", "--run", "R", "--method", "deepens", "--members", "0",
                               "--preset", "smoke"], "members"),
    ("baseline-bad-edges", ["baseline", "--run", "R", "--method", "random", "--n-edges", "99", "--preset", "smoke"],
     "n-edges"),
    ("baseline-bad-tournament", ["baseline", "--run", "R", "--method", "nes-re", "--tournament", "5",
                                 "--population", "2", "--preset", "smoke"], "tournament"),
    ("baseline-bad-setting", ["baseline", "--run", "R", "--method", "deepens", "--preset", "smoke",
                              "--set", "val_fraction=0.001"], "val_fraction"),
    ("baseline-rerun-other-config", ["baseline", "--run", "R", "--method", "deepens", "--members", "1",
                                     "--preset", "smoke", "--set", "epochs=3"], "epochs"),
    ("demo-too-many-members", ["demo", "--rebuild", "--out", "R/demo", "--members", "1000", "--preset", "smoke"],
     "--members"),
    ("run-existing", ["run", "--run", "R", "--preset", "smoke"], "exists"),
    ("export-unknown-member", ["export", "--run", "R", "--members", "nope", "--out", "OUT"], "nope"),
]




def nan_in(rel: str, prefix: str):
    """A tampering: the first floating tensor of RUN/rel whose name starts with `prefix` becomes NaN."""
    def tamper(run: Path) -> None:
        tensors, meta = load_tensors(run / rel)
        key = next(k for k, v in tensors.items() if k.startswith(prefix) and v.is_floating_point())
        tensors[key] = torch.full_like(tensors[key], float("nan"))
        save_tensors(run / rel, tensors, meta)
    return tamper


def file_at(rel: str):
    """A tampering: a plain file stands at RUN/rel."""
    def tamper(run: Path) -> None:
        (run / rel).write_text("not a folder")
    return tamper


# (id, tampering of the run before the command, argv, a word the message must hold)
DAMAGED = [
    ("search-rerun-nan-checkpoint", nan_in("search/checkpoint.safetensors", "arch."),
     ["search", "--run", "R", "--preset", "smoke", "--dataset", "digits"], "checkpoint.safetensors"),
    ("hypernet-nan-supernet", nan_in("search/supernet.safetensors", ""),
     ["hypernet", "--run", "R", "--regularizer", "js", "--preset", "smoke"], "supernet.safetensors"),
    ("hypernet-rerun-nan-checkpoint", nan_in("hypernet/edges/checkpoint.safetensors", "arch."),
     ["hypernet", "--run", "R", "--regularizer", "edges", "--preset", "smoke"], "checkpoint.safetensors"),
    ("retrain-rerun-nan-checkpoint", nan_in("members/m0/checkpoint.safetensors", "net."),
     ["retrain", "--run", "R", "--genotype", "star", "--name", "m0", "--preset", "smoke"], "checkpoint.safetensors"),
    ("search-run-is-a-file", file_at("afile"), ["search", "--run", "R/afile", "--preset", "smoke"], "is a file"),
    ("search-under-a-file", file_at("afile"), ["search", "--run", "R/afile/sub", "--preset", "smoke"], "is a file"),
    ("retrain-run-is-a-file", file_at("afile"), ["retrain", "--run", "R/afile", "--genotype", "star", "--name", "m"],
     "is a file"),
    ("evaluate-run-is-a-file", file_at("afile"), ["evaluate", "--run", "R/afile"], "is a file"),
    ("baseline-run-is-a-file", file_at("afile"), ["baseline", "--run", "R/afile", "--method", "deepens"], "is a file"),
    ("run-run-is-a-file", file_at("afile"), ["run", "--run", "R/afile", "--preset", "smoke", "--detach"], "is a file"),
]
CASES = [pytest.param(None, a, n, id=i) for i, a, n in REFUSALS] + [pytest.param(t, a, n, id=i) for i, t, a, n in DAMAGED]


@pytest.mark.parametrize("tamper,argv,needle", CASES)
def test_refusal_leaves_the_run_byte_identical(run, tmp_path, capsys, tamper, argv, needle):
    if tamper is not None:
        tamper(run)
    argv = [str(tmp_path / "out") if x == "OUT" else x.replace("R", str(run), 1) if x.startswith("R") else x
            for x in argv]
    before = tree(run)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"{' '.join(argv[:1])}: exit {code}, expected 2 (a refusal):\n{err}"
    assert needle in err, f"the message does not name {needle!r}:\n{err}"
    changed = changes(before, tree(run))
    assert not changed, f"the refused `{argv[0]}` changed the run folder: {changed}"


def queued(home: Path) -> list:
    """The jobs in the store at `home` ([] when no store was created)."""
    from nes.runs.store import Store

    return Store(home).jobs() if (home / "nes.db").exists() else []


@pytest.mark.parametrize("argv,needle", [
    pytest.param(["--dataset", "bogus"], "bogus", id="bogus-dataset"),
    pytest.param(["--members", "1000"], "--members", id="too-many-members"),
    pytest.param(["--members", "0"], "--members", id="no-members"),
    pytest.param(["--set", "limit=1"], "limit", id="bad-setting"),
])
def test_run_refuses_before_queueing(tmp_path, monkeypatch, capsys, argv, needle):
    home = tmp_path / "home"
    monkeypatch.setenv("NES_HOME", str(home))
    code = main(["run", "--run", "new", "--preset", "smoke", "--detach", *argv])
    err = capsys.readouterr().err
    assert code == 2, f"run {' '.join(argv)}: exit {code}, expected 2:\n{err}"
    assert needle in err, f"run {' '.join(argv)}: the message does not name {needle!r}:\n{err}"
    assert queued(home) == [], f"run {' '.join(argv)} queued jobs although it was refused"
    assert not (home / "new").exists(), f"run {' '.join(argv)} created the run folder although it was refused"


@pytest.mark.parametrize("argv", [["jobs", "list"], ["run", "--run", "x", "--preset", "smoke", "--detach"]],
                         ids=["jobs", "run"])
def test_nes_home_that_is_a_file(tmp_path, monkeypatch, capsys, argv):
    home = tmp_path / "home"
    home.write_text("a file")
    monkeypatch.setenv("NES_HOME", str(home))
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"{argv[0]} with NES_HOME a file: exit {code}, expected 2:\n{err}"
    assert "NES_HOME" in err and str(home) in err, f"{argv[0]}: the message names neither NES_HOME nor {home}:\n{err}"
    assert "Errno" not in err, f"{argv[0]}: the message is a bare OS error:\n{err}"
    assert home.read_text() == "a file", f"{argv[0]} changed the file NES_HOME names"


def test_diverged_fresh_hypernet_leaves_no_stray_files(run, capsys):
    """A training that diverges before its first checkpoint leaves no folder of files behind."""
    code = main(["hypernet", "--run", str(run), "--regularizer", "js", "--preset", "smoke", "--set", "w_lr=1e30",
                 "--set", "warm_start=false"])
    err = capsys.readouterr().err
    assert code == 2, f"a diverging hypernetwork: exit {code}, expected 2:\n{err}"
    assert "w_lr" in err, f"the message does not name the setting to lower:\n{err}"
    left = sorted(str(p.relative_to(run)) for p in (run / "hypernet").rglob("*") if "js" in p.parts)
    assert left == [], f"the diverged hypernetwork left files or its folder behind: {left}"


@pytest.mark.parametrize("argv,needle", [
    pytest.param(["--budget", "0"], "--budget", id="zero-budget"),
    pytest.param(["--budget", "2", "--members", "3"], "--budget", id="budget-below-members"),
    pytest.param(["--members", "1000"], "--members", id="too-many-members"),
])
def test_baseline_arguments_are_bounded(run, capsys, argv, needle):
    before = tree(run)
    code = main(["baseline", "--run", str(run), "--method", "nes-rs", "--preset", "smoke", *argv])
    err = capsys.readouterr().err
    assert code == 2, f"baseline {' '.join(argv)}: exit {code}, expected 2:\n{err}"
    assert needle in err, f"baseline {' '.join(argv)}: the message does not name {needle!r}:\n{err}"
    changed = changes(before, tree(run))
    assert not changed, f"the refused baseline {' '.join(argv)} changed the run folder: {changed}"
