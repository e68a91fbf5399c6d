"""Search steps replayed as CUDA graphs.

A step of the small search networks is a few thousand tiny kernels; their launch cost, not the
GPU, sets the step time in eager mode (benchmarks/bench_search.py). On CUDA, a first-order step of
a `graph_safe` arch module is captured once per epoch (the learning rate is baked into the graph)
and replayed with the batch copied into static inputs.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable

import torch

def use_cuda_graphs(cfg, arch, device: torch.device) -> bool:
    """Replay each step as a CUDA graph: on CUDA, first order, a `graph_safe` arch module, unless
    NES_CUDA_GRAPHS=0. A step of the small search networks is a few thousand tiny kernels; their
    launch cost, not the GPU, sets the step time in eager mode (benchmarks/bench_search.py)."""
    return (device.type == "cuda" and not cfg.second_order and arch.graph_safe
            and os.environ.get("NES_CUDA_GRAPHS", "1") != "0")

def set_capturable(opt: torch.optim.Optimizer, on: bool, device: torch.device) -> None:
    """Adam inside a CUDA graph keeps its step count on the device (`capturable`); a checkpoint
    brings its own flag, so it is set here after loading, for this run's device."""
    for g in opt.param_groups:
        if "capturable" in g:
            g["capturable"] = on
    for st in opt.state.values():
        if torch.is_tensor(st.get("step")):
            st["step"] = st["step"].to(device if on else "cpu", torch.float32)

class GraphedStep:
    """`step(xt, yt, xv, yv, drawn, frac, sums)` run eagerly for a few warm-up steps on a side
    stream, then captured once and replayed with the batch copied into static inputs and the
    step's draw (`bilevel.Draw`: a float or None) and progress written into static 0-d device tensors. A batch of
    another shape (a last partial batch) runs eagerly. If capture fails, `ok` turns False after a
    warning and the caller goes on eagerly."""

    WARMUP = 3

    def __init__(self, step: Callable, sums: torch.Tensor) -> None:
        self.step, self.sums, self.ok = step, sums, True
        self.done, self.replays = 0, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: list[torch.Tensor] = []
        self.drawn: torch.Tensor | None = None
        self.frac: torch.Tensor | None = None
        self.out: torch.Tensor | None = None

    def _scalars(self, drawn, frac) -> None:
        if self.drawn is not None:
            self.drawn.fill_(drawn)
        self.frac.fill_(frac)

    def __call__(self, xt, yt, xv, yv, drawn, frac) -> torch.Tensor:
        batch = (xt, yt, xv, yv)
        if self.graph is not None:
            if any(b.shape != s.shape for b, s in zip(batch, self.static)):
                return self.step(*batch, drawn, frac, self.sums)
            for s, b in zip(self.static, batch):
                s.copy_(b, non_blocking=True)
            self._scalars(drawn, frac)
            self.graph.replay()
            self.replays += 1
            return self.out.clone()
        if self.done < self.WARMUP:
            self.done += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step(*batch, drawn, frac, self.sums)
            torch.cuda.current_stream().wait_stream(side)
            return out
        try:
            if not (drawn is None or isinstance(drawn, (int, float))):
                raise RuntimeError(f"a step's draw of type {type(drawn).__name__} cannot be replayed")
            self.static = [b.clone() for b in batch]
            self.drawn = None if drawn is None else torch.tensor(float(drawn), device=xt.device)
            self.frac = torch.tensor(float(frac), device=xt.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.out = self.step(*self.static, self.drawn, self.frac, self.sums)
            self.graph = graph
        except RuntimeError as e:  # e.g. an op that cannot be captured
            warnings.warn(f"CUDA graph capture failed ({str(e).splitlines()[0]}); going on without graphs "
                          f"(set NES_CUDA_GRAPHS=0 to skip the attempt)")
            self.ok, self.graph, self.static = False, None, []
            torch.cuda.synchronize()
            return self.step(*batch, drawn, frac, self.sums)
        self.graph.replay()
        self.replays += 1
        return self.out.clone()
