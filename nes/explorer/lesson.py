"""The Lesson page's facts: six steps from "what is a cell" to "where did this ensemble's gain come from".

Every number, every answer to a *predict, then reveal* question and every "what to notice" text is
computed here from the selected run's files (its search, hypernetworks, members' metrics.json and
genotypes, the saved shift reports), never written for one demo: point it at another run and the
lesson says what that run shows, including when seed diversity (DeepEns) beats architecture
diversity. Plain data only (dataclasses of strings and numbers); the page (`pages/lesson.py`) only
draws. No Streamlit here. Costs: JSON reads and α(λ) samples (milliseconds), plus one scoring of the
finished members (`scoring.live_ensemble`, cached by the scoring module).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..method.divergence import genotype_js_matrix
from ..method.regularizers import diversity_lam
from ..method.stats import Difference
from . import shiftview
from .runview import RunView
from .verdict import label

TITLES = ("What a cell is", "What α* is", "Move λ, watch the edges change", "Why different members help",
          "Train a member, watch the ensemble", "Where the gain came from")
STEPS = len(TITLES)


@dataclass(frozen=True)
class Question:
    """A *predict, then reveal* question: the class picks one of `options`, the run's `answer`
    (one of them) is revealed with `why`, the run's numbers behind it."""

    prompt: str
    options: tuple[str, ...]
    answer: str
    why: str


@dataclass(frozen=True)
class Step:
    """One lesson step: its `number` (1…6), `title`, `notice` (what to notice, from the run), its
    `question` (None with `missing` saying what the run lacks), `facts` (numbers the page shows as
    metrics), `table` (rows, step 6's ledger) and the full page that opens at this state (`page`, `query`)."""

    number: int
    title: str
    notice: str
    question: Question | None
    facts: dict[str, str] = field(default_factory=dict)
    page: str = "pages/explore.py"
    query: dict[str, str] = field(default_factory=dict)
    missing: str | None = None
    table: list[dict[str, Any]] = field(default_factory=list)


def step_number(raw: Any) -> int:
    """The step a URL's `step=N` asks for, 1…6; anything else (absent, not a number, out of range) is 1."""
    try:
        n = int(str(raw))
    except (TypeError, ValueError):
        return 1
    return n if 1 <= n <= STEPS else 1


def op_kind(op: str) -> str:
    """An operation's family, as the lesson names it: convolution, pooling, or skip/none."""
    return "convolutions" if "conv" in op else ("pooling" if "pool" in op else "skip connections")


# -- step 1: a cell ---------------------------------------------------------------------------------
def cell_step(view: RunView) -> Step:
    """What α*'s cell is made of: its nodes, kept edges, and which operation family it uses most."""
    star, kinds = view.star, ("convolutions", "pooling", "skip connections")
    counts = {k: 0 for k in kinds}
    for _, _, _, op in star.edges():
        counts[op_kind(op)] += 1
    top = max(kinds, key=lambda k: (counts[k], -kinds.index(k)))
    n = star.num_kept_edges()
    notice = (f"Each of the {view.layout.nodes} intermediate nodes of a {' and '.join(view.layout.cell_types)} cell takes "
              f"its inputs from earlier nodes, each through one operation: {n} kept edges in all. The network stacks "
              f"{view.member_layers} such cells; only the cell is searched.")
    why = (f"α*'s {n} kept edges: " + ", ".join(f"{k} {counts[k]}" for k in kinds)
           + f" (`{star.compact()}`).")
    q = Question("Which kind of operation does the searched cell α* use most?", kinds, top, why)
    return Step(1, TITLES[0], notice, q, {"Kept edges": str(n), "Intermediate nodes": str(view.layout.nodes)},
                "pages/explore.py", {"div": "0.0"})


# -- step 2: α* -------------------------------------------------------------------------------------
CONFIDENCE = ("barely above chance (below 0.3)", "in between (0.3 to 0.6)", "sure (above 0.6)")


def star_step(view: RunView) -> Step:
    """How sure the search is of α*: the mean probability of the kept operations, and for how many
    final epochs its genotype stayed the same."""
    c = view.search_confidence()
    p = float(c["kept_top_op"])
    answer = CONFIDENCE[0] if p < 0.3 else (CONFIDENCE[1] if p <= 0.6 else CONFIDENCE[2])
    stable = (f"its genotype stayed the same for the last {c['stable_epochs']} of {c['epochs']} recorded epochs"
              if c["epochs"] else "this search did not record its genotype per epoch")
    notice = ("α* is not one architecture but a probability for each of the 7 operations on every edge; the "
              f"cell drawn is its most likely choice (the genotype). Here {stable}.")
    why = (f"The kept operations have a mean probability of {p:.2f} (uniform over 7 would be {1 / 7:.2f}); the "
           f"chosen inputs win by a mean margin of {float(c['input_margin']):.2f}.")
    q = Question("How sure is the search of the operations it kept? Their mean probability is…", CONFIDENCE, answer, why)
    return Step(2, TITLES[1], notice, q, {"Kept-op probability": f"{p:.2f}", "Stable final epochs":
                                          f"{c['stable_epochs']} / {c['epochs']}"}, "pages/search.py", {})


# -- step 3: λ --------------------------------------------------------------------------------------
KEPT = ("all of them", "some of them", "none of them")


def lambda_step(view: RunView, reg: str, div: float = 0.0) -> Step:
    """α(λ) along one hypernetwork's diversity axis: matched edges at `div` (the page's slider), where
    the first edge leaves α* on a 9-point grid, and how many edges the most diverse end keeps."""
    lo, hi = view.lam_range(reg).target
    n = view.star.num_kept_edges()
    grid = [i / 8 for i in range(9)]
    samples = view.sample(reg, [diversity_lam(reg, d, lo, hi) for d in [div, *grid]])
    here, along = samples[0], samples[1:]
    first = next((d for d, s in zip(grid, along) if s.matched_edges < n), None)
    end = along[-1].matched_edges
    answer = KEPT[0] if end == n else (KEPT[2] if end == 0 else KEPT[1])
    moved = (f"the first edge leaves α* at diversity {first:g}" if first is not None
             else "no edge leaves α* anywhere on the axis")
    notice = (f"On the {reg} axis (λ from {lo:g} to {hi:g}) {moved}; at diversity {div:g} (λ = {here.lam:.3g}) the "
              f"cell shares {here.matched_edges} of {n} edges with α*. Edges that differ are haloed in vermillion.")
    why = f"At the most diverse end the cell keeps {end} of α*'s {n} edges (distance to α* {along[-1].distance:.3f})."
    q = Question(f"At the most diverse end of the {reg} axis, how many of α*'s {n} edges will the cell keep?",
                 KEPT, answer, why)
    facts = {"Matched edges with α*": f"{here.matched_edges} / {n}", "Distance to α*": f"{here.distance:.3f}"}
    return Step(3, TITLES[2], notice, q, facts, "pages/explore.py", {"reg": reg, "div": f"{div:g}"})


# -- step 4: different members ----------------------------------------------------------------------
def member_rows(view: RunView) -> list[dict[str, Any]]:
    """Each finished member with a test accuracy in its metrics.json: `member`, `accuracy` (0…1),
    `distance` (architecture JS of its genotype to genotype*, 0…ln 2) and `seed_only` (α*'s genotype)."""
    rows = []
    for name in view.finished_members():
        acc = ((view.run.member(name).read("metrics.json", {}) or {}).get("metrics") or {}).get("test_accuracy")
        g = view.member(name).genotype
        if acc is not None and g is not None:
            rows.append({"member": name, "accuracy": float(acc), "genotype": g, "seed_only": g == view.star})
    js = genotype_js_matrix([view.star, *(r["genotype"] for r in rows)]) if rows else None
    for i, r in enumerate(rows, start=1):
        r["distance"] = float(js[0][i]) if js is not None else float("nan")
        r.pop("genotype")
    return rows


ACCURACY = ("more accurate than α*", "as accurate as α*", "less accurate than α*")


def members_step(view: RunView) -> Step:
    """Whether the member farthest from α* is more or less accurate than α* retrained (from the
    members' metrics.json), and how many members beat α*."""
    rows = member_rows(view)
    star = next((r for r in rows if r["seed_only"]), None)
    others = [r for r in rows if not r["seed_only"]]
    notice = ("An ensemble averages its members' probabilities: it gains only where members make *different* "
              "mistakes. Members far from α* differ more; the question is what that costs each of them.")
    if star is None or not others:
        return Step(4, TITLES[3], notice, None, page="pages/ensemble.py",
                    missing="This run needs α* retrained and at least one member from α(λ) (Ensemble page).")
    far = max(others, key=lambda r: (r["distance"], r["member"]))
    d = far["accuracy"] - star["accuracy"]
    answer = ACCURACY[0] if d > 0 else (ACCURACY[1] if d == 0 else ACCURACY[2])
    better = sum(r["accuracy"] > star["accuracy"] for r in others)
    why = (f"{far['member']} (architecture JS {far['distance']:.3f} to α*) reaches {100 * far['accuracy']:.2f} % on "
           f"the test set, α* ({star['member']}) {100 * star['accuracy']:.2f} %: {100 * d:+.2f} points. "
           f"{better} of the {len(others)} members from α(λ) beat α*.")
    q = Question(f"Will the member farthest from α* ({far['member']}) be more or less accurate than α*?",
                 ACCURACY, answer, why)
    facts = {"α* accuracy": f"{100 * star['accuracy']:.2f} %", f"{far['member']} accuracy": f"{100 * far['accuracy']:.2f} %"}
    return Step(4, TITLES[3], notice, q, facts, "pages/ensemble.py")


# -- step 5: the live ensemble ----------------------------------------------------------------------
GAIN = ("yes, beyond noise", "the test set cannot tell (within noise)", "no, it is less accurate")
NLL_GAIN = ("yes, a lower NLL beyond noise", "the test set cannot tell (within noise)", "no, a higher NLL beyond noise")


def gain_answer(d: Difference, options: tuple[str, ...] = GAIN, better_when_lower: bool = False) -> str:
    """Which of `options` (better, within noise, worse) a difference "ensemble − best member" is;
    lower is better for NLL (`better_when_lower`)."""
    if d.within_noise:
        return options[1]
    return options[0] if (d.value < 0) == better_when_lower else options[2]


def live_step(view: RunView) -> Step:
    """The ensemble of the finished members against its best member (chosen on validation), as the
    Ensemble page's headline scores it (`RunView.live_ensemble`)."""
    names = view.finished_members()
    notice = ("A member trains in a background worker and joins the ensemble when it finishes; members still "
              "training are kept apart, since a half-trained member would drag the ensemble down.")
    ens = view.live_ensemble(names) if len(names) >= 2 else None
    if ens is None or not ens.vs_best:
        return Step(5, TITLES[4], notice, None, page="pages/ensemble.py",
                    missing="The ensemble needs two finished members (train them on the Ensemble page).")
    acc, best = Difference.from_dict(ens.vs_best["accuracy"]), ens.vs_best["best_member"]
    why = (f"The ensemble of {len(ens.finished)} members reaches {100 * ens.metrics['accuracy']:.2f} %; against its "
           f"best member ({best}, chosen on validation NLL) the accuracy differs by {acc.text()}.")
    q = Question(f"Will the ensemble of all {len(ens.finished)} finished members be more accurate than its best "
                 f"member ({best})?", GAIN, gain_answer(acc), why)
    facts = {"Ensemble accuracy": f"{100 * ens.metrics['accuracy']:.2f} %", "Finished members": str(len(ens.finished))}
    return Step(5, TITLES[4], notice, q, facts, "pages/ensemble.py")


# -- step 6: the ledger -----------------------------------------------------------------------------
def ledger_rows(rep: dict) -> list[dict[str, Any]]:
    """The shift report's ledger at clean (severity 0) and at its strongest severity: accuracy,
    NLL = mean member NLL − diversity, and the NLL gain over the best member."""
    rows = sorted(rep["by_severity"], key=lambda r: int(r["severity"]))
    picked = [rows[0], rows[-1]] if len(rows) > 1 else rows
    return [{"images": "clean" if int(r["severity"]) == 0 else f"shifted (severity {int(r['severity'])})",
             "accuracy %": round(100 * r["accuracy"], 2), "mean member acc %": round(100 * r["mean_member_accuracy"], 2),
             "NLL": round(r["nll"], 4), "mean member NLL": round(r["mean_member_nll"], 4),
             "diversity D": round(r["diversity_nll"], 4),
             "NLL vs best member": Difference.from_dict(r["vs_best"]["nll"]).text() if r.get("vs_best") else "n/a"}
            for r in picked]


def seed_vs_architecture(rep: dict) -> str | None:
    """What the saved shift report says of the run's architecture diversity against seed diversity
    (its DeepEns reference), clean and at the strongest shift; None without a reference."""
    vs = rep.get("vs") or {}
    rows = sorted(vs.get("by_severity") or [], key=lambda r: int(r["severity"]))
    if not rows:
        return None
    ref, parts = label(shiftview.method_of(vs["reference"])), []
    for r in ([rows[0], rows[-1]] if len(rows) > 1 else rows):
        nll = Difference.from_dict(r["nll"])
        where = "clean" if int(r["severity"]) == 0 else f"at severity {int(r['severity'])}"
        who = ("neither wins" if nll.within_noise else
               f"seed diversity ({ref}) wins" if nll.value > 0 else "architecture diversity (this run) wins")
        parts.append(f"{where}, {who} (NLL {nll.text()})")
    head = ("**In this run, seed diversity beats architecture diversity** — " if
            all("seed" in p for p in parts) else "Seed diversity against architecture diversity: ")
    return head + "; ".join(parts) + f". ({ref} retrains α* with other seeds; the run's members come from α(λ).)"


def ledger_step(view: RunView) -> Step:
    """Where the gain came from, clean and shifted: the run's saved shift report (NLL = mean member
    NLL − diversity D), whether the ensemble beats its best member under the strongest shift, and
    seed against architecture diversity."""
    found = shiftview.reports(view.dir, "clean")
    rep = found.get(shiftview.OWN_REPORT)
    notice = ("The ensemble's NLL is exactly its mean member's NLL minus its diversity D (the Jensen gap): a gain "
              "comes from stronger members, from members that disagree usefully, or both. Shift widens both terms.")
    if rep is None:
        return Step(6, TITLES[5], notice, None, page="pages/compare.py",
                    missing=f"No shift evaluation on this run yet (Compare page, or `python -m nes shift --run "
                            f"{view.dir.name} --baselines`).")
    last = max(rep["by_severity"], key=lambda r: int(r["severity"]))
    nll = Difference.from_dict(last["vs_best"]["nll"])
    why = (f"At severity {int(last['severity'])} the ensemble's NLL minus its best member's "
           f"({last['vs_best']['best_member']}) is {nll.text()}; mean member NLL {last['mean_member_nll']:.4f} − "
           f"diversity {last['diversity_nll']:.4f} = {last['nll']:.4f}.")
    q = Question(f"Under the strongest shift (severity {int(last['severity'])}), does the ensemble beat its best "
                 "member in NLL?", NLL_GAIN, gain_answer(nll, NLL_GAIN, better_when_lower=True), why)
    verdict = seed_vs_architecture(rep)
    first = min(rep["by_severity"], key=lambda r: int(r["severity"]))
    facts = {f"Ensemble NLL, {'clean' if int(first['severity']) == 0 else 'severity ' + str(first['severity'])}":
             f"{first['nll']:.4f}",
             f"Ensemble NLL, severity {int(last['severity'])}": f"{last['nll']:.4f}"}
    return Step(6, TITLES[5], notice + (" " + verdict if verdict else ""), q, facts, "pages/compare.py",
                table=ledger_rows(rep))


def step(view: RunView, number: int, reg: str | None = None, div: float = 0.0) -> Step:
    """Step `number` (1…6) of the lesson on `view`'s run; step 3 follows hypernetwork `reg`
    (default: the run's first) at diversity `div`."""
    if not view.has_search:
        return Step(number, TITLES[number - 1], "The lesson starts from a finished search.", None,
                    missing="This run has no finished search yet (Search page).")
    if number == 3:
        regs = view.regularizers()
        if not regs:
            return Step(3, TITLES[2], "α(λ) needs a trained hypernetwork.", None,
                        missing="This run has no trained hypernetwork (Hypernetwork page).")
        return lambda_step(view, reg if reg in regs else regs[0], div)
    build = {1: cell_step, 2: star_step, 4: members_step, 5: live_step, 6: ledger_step}[number]
    return build(view)
