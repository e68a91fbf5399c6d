"""Every page's URL state (nes.explorer.urlstate): plain query mappings in, state, messages and fixes out."""
import pytest

from nes.explorer import urlstate

REGS = ["edges", "js-target", "js"]
BOUNDS = {"edges": (0.0, 4.0), "js-target": (0.0, 0.5), "js": (0.0, 4.0)}


def explore(params: dict) -> urlstate.ExploreState:
    return urlstate.read_explore(params, REGS, BOUNDS.__getitem__)


class Repeated(dict):
    """A stand-in for st.query_params: `get` gives the last value of a repeated key, `get_all` all."""

    def get(self, key, default=None):
        v = super().get(key)
        return v[-1] if v else default

    def get_all(self, key):
        return list(super().get(key, []))


def test_values_of_plain_and_repeated_keys():
    assert urlstate.values({"sel": ["0.0", "1.0"]}, "sel") == ["0.0", "1.0"], "a repeated key as a list"
    assert urlstate.values({"run": "demo"}, "run") == ["demo"], "a single value"
    assert urlstate.values({}, "run") == [], "an absent key"
    assert urlstate.value({"sel": ["0.0", "1.0"]}, "sel") == "1.0", "the last value, as Streamlit reads it"
    assert urlstate.values(Repeated(sel=["0.0", "1.0"]), "sel") == ["0.0", "1.0"], "get_all of st.query_params"


def test_apply_sets_values_and_removes_keys_fixed_to_none():
    params = {"lam": "1.0", "run": "demo"}
    urlstate.apply(params, {"div": "0.25", "lam": None, "sel": ["0.0", "0.5"], "gone": None})
    assert params == {"run": "demo", "div": "0.25", "sel": ["0.0", "0.5"]}, f"after apply: {params}"


def test_run_from_the_link_else_remembered_else_the_demo():
    names = ["demo", "a", "b"]
    assert urlstate.read_run({"run": "a"}, names, "b", "demo") == urlstate.RunChoice("a"), "the link's run"
    assert urlstate.read_run({}, names, "b", "demo").name == "b", "the session's last run"
    assert urlstate.read_run({}, names, None, "demo").name == "demo", "the demo by default"
    assert urlstate.read_run({}, ["a", "b"], None, "demo").name == "b", "the newest run without a demo"
    assert urlstate.read_run({}, [], None, "demo").name is None, "an empty store"
    assert urlstate.run_fixes("a") == {"run": "a"}, "the query that selects a run"


def test_a_link_to_a_missing_run_shows_the_demo_with_a_message():
    choice = urlstate.read_run({"run": "nope"}, ["demo", "a"], None, "demo")
    assert choice.name == "demo", f"shown instead: {choice.name}"
    assert "no run **nope**" in (choice.warning or ""), f"message: {choice.warning}"


def test_explore_link_reproduces_the_view():
    state = explore({"reg": "js", "div": "0.5", "sel": ["0.0", "1.0"]})
    assert (state.reg, state.div, state.sel) == ("js", 0.5, [0.0, 1.0]), f"state: {state}"
    assert not state.warnings, f"a good link needs no message: {state.warnings}"
    assert not state.fixes, f"a good link needs no fix: {state.fixes}"
    default = explore({})
    assert (default.reg, default.div, default.sel) == ("edges", 0.0, None), "no link: first hypernetwork, α*"


@pytest.mark.parametrize("reg, lam, div", [("js", "1.0", 0.25), ("edges", "1.0", 0.75), ("edges", "9", 0.0),
                                           ("edges", "-3", 1.0), ("js-target", "0.1", 0.2)])
def test_old_lambda_links_become_diversity_positions(reg, lam, div):
    state = explore({"reg": reg, "lam": lam})
    assert state.div == pytest.approx(div), f"{reg} λ = {lam}: diversity {state.div}, expected {div}"
    assert state.fixes == {"lam": None, "div": str(state.div)}, f"{reg} λ = {lam}: fixes {state.fixes}"


@pytest.mark.parametrize("params, message", [({"lam": "abc"}, "'abc'"), ({"div": "abc"}, "'abc'"),
                                             ({"div": "1.5"}, "from 0 to 1"), ({"div": "nan"}, "'nan'")])
def test_bad_diversity_in_a_link_shows_alpha_star_with_a_message(params, message):
    state = explore(params)
    assert state.div == 0.0, f"{params}: diversity {state.div}"
    assert any(message in w for w in state.warnings), f"{params}: warnings {state.warnings}"
    assert state.fixes.get("div", "0.0") == "0.0", f"{params}: fixes {state.fixes}"


def test_unknown_hypernetwork_and_off_grid_positions_are_replaced_with_messages():
    state = explore({"reg": "nope", "sel": ["0.0", "0.3", "x", "1.0"]})
    assert state.reg == "edges", f"an unknown hypernetwork falls back to the first: {state.reg}"
    assert state.fixes["reg"] == "edges", f"the fallback is written back to the URL: {state.fixes}"
    assert state.sel == [0.0, 1.0], f"positions kept: {state.sel}"
    assert state.fixes["sel"] == ["0.0", "1.0"], f"positions written back: {state.fixes}"
    assert len(state.warnings) == 2, f"one message per bad part: {state.warnings}"
    with pytest.raises(ValueError, match="hypernetwork"):
        urlstate.read_explore({}, [], BOUNDS.__getitem__)
