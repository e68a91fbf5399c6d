"""Every page's URL state (the query string), read and checked without Streamlit.

A link reproduces a view: `?run=demo` picks the run (every page), `?reg=js&div=0.5&sel=0.0&sel=1.0`
the Explore page's hypernetwork, position on the diversity axis and the positions it compares,
`?members=alpha_star&members=lam_1_00` the members in the Ensemble page's ensemble (`MEMBERS`), and
`?export=alpha_star&export=lam_1_00` the members the Export page bundles (`EXPORT`); one repeated key
per member, in the order chosen, and a key with an empty value (`?members=`) for an empty selection.
The functions here take the query parameters as a plain mapping (a key to a string, or to a list
of strings for a repeated key, as `st.query_params` holds them) and return what to show, the
messages for a link that asks for something that does not exist, and the parameters to write
back (`fixes`: a value to set, None to remove), which `apply` writes into any mutable mapping.
The pages pass `st.query_params` in and out; the widgets bound to the URL keep it current.

Links from before the diversity axis (`?lam=1.0`) are converted: λ becomes its diversity
position, `lam` leaves the URL.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, MutableMapping, Sequence

from ..method.regularizers import lam_diversity

Params = Mapping[str, "str | Sequence[str]"]
MEMBERS = "members"  # the Ensemble page's members in the ensemble
EXPORT = "export"  # the Export page's members in the bundle
DIVERSITY_STEP = 0.025  # the Explore slider's step
POSITIONS = tuple(i / 8 for i in range(9))  # the diversity positions the Explore page compares


def values(params: Params, key: str) -> list[str]:
    """Every value of `key` in the query ([] when absent); `params` may also be `st.query_params`
    (whose `get` gives the last value only: its `get_all` gives them all)."""
    get_all = getattr(params, "get_all", None)
    if callable(get_all):
        return [str(x) for x in get_all(key)]
    v = params.get(key)
    if v is None:
        return []
    return [v] if isinstance(v, str) else [str(x) for x in v]


def value(params: Params, key: str) -> str | None:
    """The last value of `key` (what Streamlit reads for a repeated key), or None."""
    vs = values(params, key)
    return vs[-1] if vs else None


def apply(target: MutableMapping, fixes: Mapping[str, "str | list[str] | None"]) -> None:
    """Write `fixes` into the query parameters `target`: set each value, remove keys fixed to None."""
    for k, v in fixes.items():
        if v is None:
            if k in target:
                del target[k]
        else:
            target[k] = v


def check_choice(params: Params, key: str, options: Sequence[str], what: str) -> str | None:
    """A message when the link's `key` is not one of `options` (the page then shows its default and
    the bad value leaves the URL); None when the key is absent or valid. `what` names the setting
    for the reader ("severity"). Every page's URL-bound choice goes through this, so a mistyped
    link says what it got and what it accepts instead of silently showing something else."""
    got = value(params, key)
    if got is None or got in options:
        return None
    shown = ", ".join(options[:8]) + (" …" if len(options) > 8 else "")
    return f"The link's {what} **{got}** (`{key}`) is not one of {shown}; showing the default."


# -- the run (every page) -------------------------------------------------------------------------
@dataclass(frozen=True)
class RunChoice:
    """The run to show, and a message when the link named a run the store does not have."""

    name: str | None
    warning: str | None = None


def read_run(params: Params, names: Sequence[str], remembered: str | None = None,
             fallback: str | None = None) -> RunChoice:
    """The run `?run=` asks for if the store has it, else the one this session showed last
    (`remembered`), else `fallback` (the demo), else the newest run; None for an empty store."""
    if not names:
        return RunChoice(None)
    wanted, warning = value(params, "run"), None
    if wanted is not None and wanted not in names:
        shown = fallback if fallback in names else names[0]
        warning = (f"There is no run **{wanted}** in this store. Showing **{shown}** instead; pick another run in "
                   "the sidebar.")
        wanted = None
    name = wanted or remembered or (fallback if fallback in names else names[-1])
    return RunChoice(name if name in names else names[0], warning)


def run_fixes(name: str) -> dict[str, str]:
    """The query that selects run `name`."""
    return {"run": name}


# -- member selections (the Ensemble and Export pages) --------------------------------------------
@dataclass(frozen=True)
class MemberLink:
    """The members a link selects (in its order; None: the page keeps its own choice), and a message
    naming the members it asked for that the run does not have (the rest of the selection applies)."""

    chosen: list[str] | None
    warning: str | None = None


def read_members(params: Params, key: str, names: Sequence[str],
                 written: Sequence[str] | None = None) -> MemberLink:
    """The member selection `key` of a link, among the run's members `names`. No selection (None)
    when the link has no `key`, or holds exactly what this session wrote there itself (`written`): the
    session's own choice then stands, and after a change of run in the sidebar the URL's members,
    which belong to the run shown before, are not read as a link naming members this run lacks."""
    raw = list(dict.fromkeys(values(params, key)))  # a member named twice is chosen once
    asked = [r for r in raw if r]  # `?members=` alone: an empty selection
    if not raw or (written is not None and asked == list(written)):
        return MemberLink(None)
    chosen = [r for r in asked if r in names]
    unknown = [r for r in asked if r not in names]
    if not unknown:
        return MemberLink(chosen)
    rest = "showing the rest of the selection" if chosen else "none of the link's members is shown"
    missing = ", ".join(f"**{u}**" for u in unknown)
    plural = "s" if len(unknown) > 1 else ""
    return MemberLink(chosen, f"This run has no member{plural} {missing} (`{key}` in the link); {rest}.")


def members_fixes(params: Params, key: str, chosen: Sequence[str]) -> dict[str, list[str]]:
    """What to write so that the query holds the selection `chosen` under `key` (nothing when it
    does): the key once per member, in order; an empty selection as the key with an empty value, so
    that a link keeps it empty instead of opening the page's default."""
    wanted = list(chosen) or [""]
    return {} if values(params, key) == wanted else {key: wanted}


# -- the Explore page -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ExploreState:
    """What an Explore link shows: the hypernetwork (`reg`), the position on the diversity axis
    (`div`, 0 = α*), the positions compared (`sel`; None: the page's default), the messages for
    parts of the link that were not usable, and the parameters to write back."""

    reg: str
    div: float
    sel: list[float] | None
    warnings: list[str] = field(default_factory=list)
    fixes: dict[str, "str | list[str] | None"] = field(default_factory=dict)

    def widget_fixes(self) -> dict[str, "str | float | list[float]"]:
        """The values of the URL-bound widgets (keys `reg`, `div`, `sel`) that the link got wrong:
        a bound widget reads the URL when the session starts, so a corrected value must also be set
        as the widget's state before it is drawn."""
        typed = {"reg": self.reg, "div": self.div, "sel": self.sel}
        return {k: typed[k] for k, v in self.fixes.items() if k in typed and v is not None}


def _number(raw: str | None) -> float | None:
    try:
        x = float(raw) if raw is not None else None
    except ValueError:
        return None
    return x if x is not None and math.isfinite(x) else None


def _diversity(params: Params, reg: str, bounds: Callable[[str], tuple[float, float]],
               warnings: list[str], fixes: dict) -> float:
    """`div` if it is a number from 0 to 1; else the position of an old link's `lam`; else 0 (α*)."""
    raw, old = value(params, "div"), value(params, "lam")
    if raw is None and old is not None:  # a link from before the diversity axis
        fixes["lam"] = None
        lam = _number(old)
        if lam is None:
            warnings.append(f"λ = {old!r} from the link is not a number; showing α* (diversity 0).")
            return 0.0
        d = min(max(lam_diversity(reg, lam, *bounds(reg)), 0.0), 1.0)
        div = round(round(d / DIVERSITY_STEP) * DIVERSITY_STEP, 6)  # on the slider's steps
        fixes["div"] = str(div)
        return div
    if raw is None:
        return 0.0
    div = _number(raw)
    if div is None or not 0.0 <= div <= 1.0:
        warnings.append(f"diversity = {raw!r} from the link is not a number from 0 to 1; showing α* (0).")
        fixes["div"] = "0.0"
        return 0.0
    return div


def _positions(params: Params, warnings: list[str], fixes: dict) -> list[float] | None:
    """`sel`: the compared positions that are on the page's grid (others dropped with a message)."""
    raw = values(params, "sel")
    if not raw:
        return None
    on_grid = {r: next((p for p in POSITIONS if x is not None and math.isclose(x, p, abs_tol=1e-9)), None)
               for r, x in ((r, _number(r)) for r in raw)}
    kept = [on_grid[r] for r in raw if on_grid[r] is not None]
    if len(kept) != len(raw):
        bad = [r for r in raw if on_grid[r] is None]
        warnings.append(f"positions {', '.join(map(repr, bad))} from the link are not on the grid "
                        f"({', '.join(f'{p:g}' for p in POSITIONS)}); left out.")
        fixes["sel"] = [str(p) for p in kept] if kept else None
    return kept or None


def read_explore(params: Params, regularizers: Sequence[str],
                 bounds: Callable[[str], tuple[float, float]]) -> ExploreState:
    """The Explore page's state from its query. `regularizers` are the run's trained
    hypernetworks (the first is the default), `bounds(reg)` the λ range one was trained for (to
    convert an old `lam` link)."""
    if not regularizers:
        raise ValueError("read_explore needs at least one trained hypernetwork")
    warnings: list[str] = []
    fixes: dict[str, "str | list[str] | None"] = {}
    reg = value(params, "reg")
    if reg is not None and reg not in regularizers:
        warnings.append(f"This run has no **{reg}** hypernetwork (it has {', '.join(regularizers)}); "
                        f"showing {regularizers[0]}.")
        fixes["reg"] = regularizers[0]
        reg = None
    reg = reg or regularizers[0]
    div = _diversity(params, reg, bounds, warnings, fixes)
    return ExploreState(reg, div, _positions(params, warnings, fixes), warnings, fixes)
