"""The documents a newcomer reads stay true to the repository: the README's two set-up commands
first and short, the design in the repository, every results file indexed beside its command."""
from __future__ import annotations

import re

from helpers import ROOT

README = (ROOT / "README.md").read_text()
RESULTS = ROOT / "benchmarks" / "results"


def test_readme_is_a_short_guide_that_starts_with_the_two_commands():
    lines = README.splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines: figures go to benchmarks/results/README.md"
    first = [ln for ln in lines if ln.startswith(("pip ", "python "))][:2]
    assert "streamlit run explorer_app.py" in first[0], f"the first command must install and run the app: {first}"
    assert "pytest" in first[1], f"the second command must install the test dependencies and run the tests: {first}"


def test_readme_links_documents_that_exist():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README.md links {target}, which does not exist"
    assert "docs/design.md" in README, "README.md must link the design document"
    assert "../shared" not in README, "README.md links a document outside the repository"


def test_every_results_file_is_indexed():
    index = (RESULTS / "README.md").read_text()
    for path in sorted(RESULTS.iterdir()):
        if path.name != "README.md":
            assert path.name in index, f"benchmarks/results/{path.name} is not listed in benchmarks/results/README.md"


def test_the_ci_script_runs_the_readmes_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m pytest -q" in ci or "python -m pytest -q" in ci, ".ci/run does not run the tests"
    assert ".[dev]" in ci, ".ci/run does not install the package with its test dependencies"
