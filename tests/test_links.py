"""Every view is a link (issue 26, item 2): the pages' choices live in the URL and a link opens the
same view; a link with a value the page does not offer gets a message naming it. Unit checks of
`urlstate.check_choice` and the app through AppTest on the bundled demo."""
import pytest
from streamlit.testing.v1 import AppTest

from helpers import ROOT
from nes.explorer.demo import DEMO_DIR
from nes.explorer.urlstate import check_choice

APP = str(ROOT / "explorer_app.py")
demo = pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")


def test_a_valid_or_absent_choice_needs_no_message():
    assert check_choice({"s": "3"}, "s", ["0", "3"], "severity") is None, "a valid value got a message"
    assert check_choice({}, "s", ["0", "3"], "severity") is None, "an absent value got a message"


def test_a_choice_the_page_does_not_offer_is_named_with_what_it_accepts():
    msg = check_choice({"s": "9"}, "s", ["0", "3"], "severity")
    assert msg and "**9**" in msg and "`s`" in msg, f"the message does not name the bad value and key: {msg!r}"
    assert "0, 3" in msg, f"the message does not say what the page accepts: {msg!r}"


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
