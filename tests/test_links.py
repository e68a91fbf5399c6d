"""Every view is a link (issue 26, item 2): the pages' choices live in the URL and a link opens the
same view; a link with a value the page does not offer gets a message naming it. Unit checks of
`urlstate.check_choice` and `urlstate.read_members`, and the app through AppTest on the bundled demo
(the Ensemble and Export pages' member selections, `?members=` and `?export=`, among them)."""
import pytest
from streamlit.testing.v1 import AppTest

from helpers import ROOT
from nes.explorer.demo import DEMO_DIR
from nes.explorer.urlstate import EXPORT, MEMBERS, check_choice, members_fixes, read_members

APP = str(ROOT / "explorer_app.py")
demo = pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")


def test_a_valid_or_absent_choice_needs_no_message():
    assert check_choice({"s": "3"}, "s", ["0", "3"], "severity") is None, "a valid value got a message"
    assert check_choice({}, "s", ["0", "3"], "severity") is None, "an absent value got a message"


def test_a_choice_the_page_does_not_offer_is_named_with_what_it_accepts():
    msg = check_choice({"s": "9"}, "s", ["0", "3"], "severity")
    assert msg and "**9**" in msg and "`s`" in msg, f"the message does not name the bad value and key: {msg!r}"
    assert "0, 3" in msg, f"the message does not say what the page accepts: {msg!r}"


def test_a_member_link_selects_its_members_in_order_and_names_the_unknown_ones():
    link = read_members({"members": ["b", "nope", "a", "b"]}, "members", ["a", "b", "c"])
    assert link.chosen == ["b", "a"], f"the link's known members, in order and once each: {link.chosen}"
    assert link.warning and "**nope**" in link.warning, f"the warning does not name the member: {link.warning!r}"
    assert "`members`" in link.warning, f"the warning does not name the link's key: {link.warning!r}"
    assert "**a**" not in link.warning, f"the warning names a member the run has: {link.warning!r}"
    assert read_members({"members": ["a", "b"]}, "members", ["a", "b"]).warning is None, "a good link got a warning"


def test_a_member_selection_is_read_from_the_url_only_when_it_is_a_link():
    assert read_members({}, "members", ["a"]).chosen is None, "no `members`: the page keeps its own choice"
    written = read_members({"members": ["a"]}, "members", ["a"], written=["a"])
    assert written.chosen is None, "what this session wrote itself (e.g. for the run shown before) was read as a link"
    assert read_members({"members": ""}, "members", ["a"]).chosen == [], "`?members=` is not an empty selection"


def test_a_member_selection_is_written_as_one_repeated_key():
    assert members_fixes({}, EXPORT, ["a", "b"]) == {EXPORT: ["a", "b"]}, "the selection is not written in order"
    assert members_fixes({EXPORT: ["a", "b"]}, EXPORT, ["a", "b"]) == {}, "a URL that holds the selection is rewritten"
    assert members_fixes({EXPORT: "a"}, EXPORT, []) == {EXPORT: [""]}, "an empty selection is not `?export=`"


@pytest.fixture
def home(app_home):
    """The app tests' store (conftest's app_home)."""
    return app_home


def page_at(page: str, query: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()  # the first visit copies the demo into the store
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@demo
def test_a_compare_link_opens_the_same_severity_protocol_and_reference(home):
    at = page_at("pages/compare.py", {"shift_severity": "3", "shift_protocol": "shifted"})
    assert at.select_slider(key="shift_severity").value == 3, "?shift_severity=3 did not open severity 3"
    assert at.radio(key="shift_protocol").value == "shifted", "?shift_protocol=shifted did not open that protocol"


@demo
def test_a_levers_link_opens_the_same_test_set(home):
    clean = page_at("pages/compare.py", {})
    at = page_at("pages/compare.py", {"levers_severity": "3"})
    assert at.select_slider(key="levers_severity").value == 3, "?levers_severity=3 did not open severity 3"
    lever_table = lambda a: next(d.value for d in a.dataframe if "NLL − DeepEns (95 % CI)" in d.value.columns)  # noqa: E731
    assert list(lever_table(at)["NLL"]) != list(lever_table(clean)["NLL"]), "severity 3 shows the clean table's NLLs"
    shifted = page_at("pages/compare.py", {"levers_protocol": "shifted", "levers_severity": "3"})
    said = [m.value for m in shifted.markdown if "Best EdgeNES-derived ensemble" in m.value]
    assert said and all("chosen on the validation corruptions" in t for t in said), f"the shifted protocol's verdict: {said}"
    assert 0 not in shifted.select_slider(key="levers_severity").options, "levers chosen on corruptions offer the clean set"


@demo
def test_a_compare_link_with_an_unknown_severity_says_so(home):
    at = page_at("pages/compare.py", {"shift_severity": "9"})
    warnings = " ".join(w.value for w in at.warning)
    assert "**9**" in warnings and "shift_severity" in warnings, f"no warning names the bad severity: {warnings!r}"
    assert at.select_slider(key="shift_severity").value == 5, "an unknown severity should show the default (5)"


@demo
def test_a_your_image_link_opens_the_same_corruption_and_severity(home):
    at = page_at("pages/image.py", {"image_corruption": "contrast", "image_severity": "4"})
    assert at.selectbox(key="image_corruption").value == "contrast", "?image_corruption=contrast was not opened"
    assert at.slider(key="image_severity").value == 4, "?image_severity=4 was not opened"


def picker(at: AppTest, label: str):
    """The multiselect labelled `label`."""
    return next(m for m in at.multiselect if m.label == label)


@demo
@pytest.mark.parametrize("page, key, label", [("pages/ensemble.py", MEMBERS, "Members in the ensemble"),
                                              ("pages/export.py", EXPORT, "Members")])
def test_a_member_link_opens_the_same_members_and_a_change_goes_back_into_the_url(home, page, key, label):
    at = page_at(page, {key: ["lam_1_00", "alpha_star"]})
    assert not at.error, f"{page}: {[e.value for e in at.error]}"
    assert picker(at, label).value == ["lam_1_00", "alpha_star"], f"{page}: ?{key}= did not open its members"
    picker(at, label).set_value(["lam_1_50", "alpha_star"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.query_params.get(key) == ["lam_1_50", "alpha_star"], f"{page}: the URL holds {at.query_params}"


@demo
@pytest.mark.parametrize("page, key, label", [("pages/ensemble.py", MEMBERS, "Members in the ensemble"),
                                              ("pages/export.py", EXPORT, "Members")])
def test_a_member_link_naming_a_member_the_run_lacks_says_so_and_shows_the_rest(home, page, key, label):
    at = page_at(page, {key: ["alpha_star", "no_such_member"]})
    warnings = " ".join(w.value for w in at.warning)
    assert "**no_such_member**" in warnings, f"{page}: no warning names the unknown member: {warnings!r}"
    assert picker(at, label).value == ["alpha_star"], f"{page}: the rest of the link's selection was not shown"
    assert at.query_params.get(key) == "alpha_star", f"{page}: the unknown member stayed in the URL: {at.query_params}"


@demo
def test_the_ensemble_page_hands_its_members_to_the_export_page_in_the_link(home):
    at = page_at("pages/ensemble.py", {MEMBERS: ["lam_1_50", "alpha_star"]})
    next(b for b in at.button if b.label == "Export these members").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.query_params.get(EXPORT) == ["lam_1_50", "alpha_star"], f"the Export page's URL: {at.query_params}"
    assert picker(at, "Members").value == ["lam_1_50", "alpha_star"], "the Export page did not open the members handed"
