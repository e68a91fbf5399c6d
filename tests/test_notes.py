"""What the pages say in words about a job or an ensemble (nes/explorer/notes.py)."""
from nes.explorer.notes import eta_text, ledger_text


def test_a_job_eta_comes_from_its_pace_and_only_once_it_has_one():
    assert eta_text(0, 100, 1000.0, 1010.0) is None, "an ETA before the first step"
    assert eta_text(10, None, 1000.0, 1010.0) is None, "an ETA without a total"
    assert eta_text(10, 100, 1000.0, 1010.0) == "≈ 2 min left", \
        f"10 of 100 steps in 10 s leave 90 s, shown in minutes: {eta_text(10, 100, 1000.0, 1010.0)!r}"
    assert eta_text(50, 100, 1000.0, 1010.0) == "≈ 10 s left", f"half-way in 10 s: {eta_text(50, 100, 1000.0, 1010.0)!r}"
    assert eta_text(100, 100, 1000.0, 1010.0) is None, "an ETA for a job at its last step"


def test_the_ledger_line_states_the_identity_it_shows():
    led = {"accuracy": 0.91, "mean_member_accuracy": 0.90, "nll": 0.3, "mean_member_nll": 0.32, "diversity_nll": 0.02,
           "brier": 0.14, "mean_member_brier": 0.15, "diversity_brier": 0.01}
    text = ledger_text(led)
    assert "NLL 0.3000 = mean member NLL 0.3200 − diversity 0.0200" in text, f"the NLL split is not stated: {text}"
    assert ledger_text(None) is None, "a line without a ledger"
