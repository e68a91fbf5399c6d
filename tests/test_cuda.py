"""CUDA-only checks (skipped without a GPU): whole search steps replayed as CUDA graphs."""
import pytest
import torch

from nes.config import SearchConfig, from_preset
from nes.method.darts import search

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


class Stop(Exception):
    pass


def test_search_steps_replayed_as_cuda_graphs_match_eager_and_resume(tmp_path, monkeypatch):
    cfg = from_preset(SearchConfig, "smoke", {"epochs": 2, "limit": 1024, "log_every": 1})
    monkeypatch.setenv("NES_CUDA_GRAPHS", "0")
    eager = search(cfg, tmp_path / "eager", "cuda")
    monkeypatch.setenv("NES_CUDA_GRAPHS", "1")
    graphed = search(cfg, tmp_path / "graphed", "cuda")
    steps_per_epoch = graphed.steps // 2
    # 3 warm-up steps per epoch run eagerly, the others are replays
    assert [row["graph_steps"] for row in graphed.history] == [steps_per_epoch - 3] * 2
    assert all("graph_steps" not in row for row in eager.history)
    theta0 = eager.layout.init_theta(generator=torch.Generator().manual_seed(cfg.seed))
    moved = (eager.theta - theta0).abs().max()
    assert moved > 0
    # same data, same initial weights: the same trajectory up to bf16 rounding
    assert torch.allclose(graphed.theta, eager.theta, atol=0.05 * float(moved) + 1e-4)
    for a, b in zip(graphed.history, eager.history):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.05 * b["train_loss"] + 1e-3

    def cut(step, total, metrics):
        if step >= steps_per_epoch + 5:
            raise Stop()

    with pytest.raises(Stop):  # stopped during the second epoch's replays
        search(cfg, tmp_path / "cut", "cuda", progress=cut)
    resumed = search(cfg, tmp_path / "cut", "cuda")  # Adam's state comes back capturable
    assert resumed.steps == graphed.steps, \
        f"the resumed run took {resumed.steps} steps, the uninterrupted one {graphed.steps}"
    assert len(resumed.history) == 2, f"the resumed run has {len(resumed.history)} epochs of history, expected 2"
    assert torch.allclose(resumed.theta, graphed.theta, atol=0.05 * float(moved) + 1e-4)
    # a checkpoint written by a CUDA-graph run resumes eagerly on the CPU
    with pytest.raises(Stop):
        search(cfg, tmp_path / "cpu", "cuda", progress=cut)
    on_cpu = search(cfg, tmp_path / "cpu", "cpu")
    assert on_cpu.steps == graphed.steps


@pytest.mark.parametrize("regularizer", ["js", "edges"])
def test_hypernetwork_steps_replayed_as_cuda_graphs(tmp_path, monkeypatch, regularizer):
    """λ and the progress reach the replayed graph through device buffers: the js hypernetwork
    (no noise) follows the eager trajectory; the edges one (Gumbel noise drawn inside the graph)
    trains with every step after the warm-up replayed."""
    from nes.method.darts import load_search
    from nes.method.hypernet import PiecewiseLinearHypernet, hypernet_config, train_hypernet
    from nes.method.regularizers import LamRange

    run = tmp_path / "run"
    search(from_preset(SearchConfig, "smoke", {"epochs": 1, "limit": 1024}), run, "cuda")
    cfg = hypernet_config(run, "smoke", {"regularizer": regularizer, "epochs": 2, "log_every": 1})
    results = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("NES_CUDA_GRAPHS", flag)
        results[flag] = train_hypernet(cfg, run, "cuda")
        (run / "hypernet" / regularizer / "checkpoint.safetensors").unlink()
    (h_eager, r_eager), (h_graph, r_graph) = results["0"], results["1"]
    steps_per_epoch = r_graph.steps // 2
    assert [row["graph_steps"] for row in r_graph.history] == [steps_per_epoch - 3] * 2
    assert all(torch.isfinite(torch.tensor([row["train_loss"], row["val_loss"]])).all() for row in r_graph.history)
    # λ buckets of the validation loss are still reported (λ values reach step_metrics)
    assert any(k.startswith("val_loss_lam_") for k in r_graph.history[-1])
    if regularizer == "js":  # the anchors move the same way (to 10 % of how far they moved)
        _, _, theta_star, star = load_search(run)
        start = PiecewiseLinearHypernet(theta_star, LamRange.from_config(cfg, star), cfg.pivots,
                                        cfg.init_noise, torch.Generator().manual_seed(cfg.seed)).anchors.detach()
        moved_eager, moved_graph = h_eager.anchors.detach() - start, h_graph.anchors.detach() - start
        assert moved_eager.norm() > 0
        assert (moved_graph - moved_eager).norm() < 0.1 * moved_eager.norm()
