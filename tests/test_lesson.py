"""The Lesson page (issue 26, item 1): its facts come from the run, and the page walks its six steps.

`nes.explorer.lesson` on the bundled demo (read only), and on copies of it in tmp_path whose files
were edited: the answers must follow the files (a member's metrics.json, the saved shift report), so
nothing in the lesson is prose written for one demo. Then the page through AppTest: every step shows
a figure or a metric, a "what to notice" box, a question and, after the reveal, the run's answer;
`?step=3` opens step 3; the Next button moves the URL; classroom mode offers no training.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from nes.explorer import lesson
from nes.explorer.demo import DEMO_DIR
from nes.explorer.runview import RunView
from nes.method.stats import Difference

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "explorer_app.py")
pytestmark = pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")


@pytest.fixture(scope="module")
def demo() -> RunView:
    return RunView(DEMO_DIR).validate()


def test_step_numbers_from_the_url():
    for raw, want in (("3", 3), (6, 6), (None, 1), ("0", 1), ("7", 1), ("x", 1), ("2.5", 1)):
        assert lesson.step_number(raw) == want, f"step={raw!r} opens step {lesson.step_number(raw)}, expected {want}"


def test_every_step_on_the_demo_has_a_question_the_run_answers(demo):
    for n in range(1, lesson.STEPS + 1):
        s = lesson.step(demo, n)
        assert s.number == n, f"step({n}) returned step {s.number}"
        assert s.question is not None, f"step {n} has no question on the demo: {s.missing}"
        assert s.question.answer in s.question.options, \
            f"step {n}'s answer {s.question.answer!r} is not one of its options {s.question.options}"
        assert s.notice.strip(), f"step {n} has no 'what to notice' text"
        assert (ROOT / s.page).exists(), f"step {n} links {s.page}, which does not exist"


def metrics_accuracy(run: Path, name: str) -> float:
    return json.loads((run / "members" / name / "metrics.json").read_text())["metrics"]["test_accuracy"]


def test_member_answer_is_the_demo_members_metrics(demo):
    s = lesson.step(demo, 4)
    far = s.question.prompt.split("(")[1].split(")")[0]
    d = metrics_accuracy(DEMO_DIR, far) - metrics_accuracy(DEMO_DIR, "alpha_star")
    want = lesson.ACCURACY[0] if d > 0 else lesson.ACCURACY[1] if d == 0 else lesson.ACCURACY[2]
    assert s.question.answer == want, f"{far} minus α* is {d:+.4f} in metrics.json, yet the lesson answers {s.question.answer!r}"
    rows = lesson.member_rows(demo)
    assert far == max((r for r in rows if not r["seed_only"]), key=lambda r: r["distance"])["member"], \
        f"{far} is not the member farthest from α*: {rows}"


def test_member_answer_follows_an_edited_metrics_json(demo, tmp_path):
    run = Path(shutil.copytree(DEMO_DIR, tmp_path / "demo"))
    before = lesson.step(RunView(run), 4).question
    far = before.prompt.split("(")[1].split(")")[0]
    path = run / "members" / far / "metrics.json"
    rec = json.loads(path.read_text())
    old = rec["metrics"]["test_accuracy"]
    flipped = metrics_accuracy(run, "alpha_star") + (0.05 if old < metrics_accuracy(run, "alpha_star") else -0.05)
    rec["metrics"]["test_accuracy"] = flipped
    path.write_text(json.dumps(rec))
    after = lesson.step(RunView(run), 4).question
    assert after.answer != before.answer, f"{far}'s accuracy moved from {old} to {flipped}, the answer stayed {after.answer!r}"
    assert f"{100 * flipped:.2f} %" in after.why, f"the answer's numbers do not show {far}'s new accuracy: {after.why!r}"


def own_shift_report(run: Path) -> tuple[Path, dict]:
    path = run / "shift" / "ensemble.json"
    return path, json.loads(path.read_text())


def test_shift_answer_and_seed_verdict_come_from_the_saved_report(demo):
    _, rep = own_shift_report(DEMO_DIR)
    last = max(rep["by_severity"], key=lambda r: int(r["severity"]))
    nll = Difference.from_dict(last["vs_best"]["nll"])
    s = lesson.step(demo, 6)
    want = lesson.gain_answer(nll, lesson.NLL_GAIN, better_when_lower=True)
    assert s.question.answer == want, f"the report says {nll.text()}, the lesson answers {s.question.answer!r}"
    seeds_win = all(not Difference.from_dict(r["nll"]).within_noise and r["nll"]["value"] > 0
                    for r in rep["vs"]["by_severity"] if int(r["severity"]) in (0, int(last["severity"])))
    said = "seed diversity beats architecture diversity" in s.notice
    assert said == seeds_win, f"DeepEns wins clean and shifted: {seeds_win}; the lesson says so: {said}"
    assert [r["images"] for r in s.table][0] == "clean", f"the ledger's first row is not the clean images: {s.table}"


def test_shift_answer_follows_an_edited_report(tmp_path):
    run = Path(shutil.copytree(DEMO_DIR, tmp_path / "demo"))
    before = lesson.step(RunView(run), 6)
    path, rep = own_shift_report(run)
    last = max(rep["by_severity"], key=lambda r: int(r["severity"]))
    last["vs_best"]["nll"].update(value=-0.5, lo=-0.6, hi=-0.4, within_noise=False)  # the ensemble wins
    for r in rep["vs"]["by_severity"]:  # and architecture diversity beats seed diversity
        r["nll"].update(value=-0.5, lo=-0.6, hi=-0.4, within_noise=False)
    path.write_text(json.dumps(rep))
    after = lesson.step(RunView(run), 6)
    assert after.question.answer == lesson.NLL_GAIN[0], f"the edited report has the ensemble win, the lesson: {after.question.answer!r}"
    assert after.question.answer != before.question.answer, "the answer did not change with the report"
    assert "seed diversity beats" not in after.notice, f"the lesson still says seeds win: {after.notice!r}"
    assert "architecture diversity (this run) wins" in after.notice, f"the lesson does not say who wins: {after.notice!r}"


# -- the page ------------------------------------------------------------------------------------------
@pytest.fixture
def home(app_home):
    """The app tests' store (conftest's app_home)."""
    return app_home


def lesson_app(step: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if step is not None:
        at.query_params["step"] = step
    at.run()
    at.switch_page("pages/lesson.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown_step(at: AppTest) -> str:
    return " ".join(s.value for s in at.subheader)


def test_the_lesson_walks_all_six_steps(home, demo):
    at = lesson_app()
    for n in range(1, lesson.STEPS + 1):
        at.radio(key="lesson_step").set_value(n).run()
        where = f"step {n}"
        assert not at.exception, (where, [e.value for e in at.exception])
        assert not at.error, (where, [e.value for e in at.error])
        assert f"Step {n} of" in shown_step(at), f"{where}: the page shows {shown_step(at)!r}"
        assert at.query_params.get("step") in (str(n), [str(n)]), f"{where}: the URL holds step={at.query_params.get('step')}"
        assert at.get("plotly_chart") or at.metric, f"{where} shows no figure and no metric"
        assert any("What to notice" in i.value for i in at.info), f"{where} has no 'what to notice' box"
        q = lesson.step(demo, n).question
        assert q.prompt in [r.label for r in at.radio], f"{where} does not ask {q.prompt!r}"
        at.button(key=f"lesson_reveal_btn_{n}").click().run()
        revealed = " ".join(s.value for s in at.success)
        assert f"The run's answer: {q.answer}" in revealed, f"{where}: after the reveal the page shows {revealed!r}"
        assert at.get("page_link"), f"{where} has no link to its full page"


def test_a_link_opens_step_3(home):
    at = lesson_app("3")
    assert "Step 3 of" in shown_step(at), f"?step=3 opened {shown_step(at)!r}"
    assert at.radio(key="lesson_step").value == 3, f"the step selector shows {at.radio(key='lesson_step').value}"


def test_next_moves_the_step_and_the_url(home):
    at = lesson_app("2")
    at.button(key="lesson_next").click().run()
    assert "Step 3 of" in shown_step(at), f"Next from step 2 shows {shown_step(at)!r}"
    assert at.query_params.get("step") in ("3", ["3"]), f"Next left step={at.query_params.get('step')} in the URL"


def test_classroom_mode_offers_no_training_in_step_5(home, monkeypatch):
    monkeypatch.setenv("NES_READONLY", "1")
    at = lesson_app("5")
    assert "Step 5 of" in shown_step(at), f"?step=5 opened {shown_step(at)!r}"
    labels = [b.label for b in at.button]
    assert set(labels) <= {"Previous", "Next", "Reveal the run's answer"}, f"step 5 offers controls that write: {labels}"
    assert any("Classroom mode" in c.value for c in at.caption), "step 5 does not say training is withheld"
    links = [json.dumps(str(p.proto)) for p in at.get("page_link")]
    assert not any("Train a member" in p for p in links), f"step 5 links the member form in classroom mode: {links}"


def test_step_3s_slider_moves_the_edges(home):
    at = lesson_app("3")
    matched = lambda: next(m.value for m in at.metric if m.label == "Matched edges with α*")  # noqa: E731
    before = matched()
    at.slider(key="lesson_div").set_value(1.0).run()
    assert not at.exception, [e.value for e in at.exception]
    assert matched() != before, f"the most diverse end still matches {matched()} edges, as α* did ({before})"
