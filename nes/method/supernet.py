"""The DARTS supernet: every edge holds all 7 ops; the architecture weights come in `forward`.

Node i = Σ_j q_{j→i} · Σ_o p_{j→i,o} · o(h_j), with (p [E, 7], q [E]) per cell type given by the
caller (softmax(α), softmax(β) per edge — see `ArchLayout.weights` — or Gumbel samples, or
one-hot vectors). There is no hidden α state: the same supernet serves the DARTS search, the
hypernetwork (θ = h(λ)) and the per-λ search.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .backbone import CellBase, CellStack
from .kernels import conv_ops_many, factorized_reduce_many
from .ops import FactorizedReduce, Identity, PoolBN, make_op
from .space import OPS, ArchWeights, edge_index, num_edges


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of `groups` equal groups (PC-DARTS), so that the next partial
    slice takes channels of every group."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class MixedEdge(nn.Module):
    """All 7 ops of an edge; with `partial_k` > 1 (PC-DARTS) they see only the first 1/k of the
    channels, the rest bypass them (max-pooled on stride-2 edges) and the two parts are shuffled."""

    def __init__(self, c: int, stride: int, affine: bool, partial_k: int = 1) -> None:
        super().__init__()
        if c % partial_k or (stride == 2 and (c // partial_k) % 2):
            raise ValueError(f"partial_k={partial_k} must divide the cell's {c} channels into an even number "
                             f"(stride-2 edges halve them); pick another partial_k (--set partial_k=2) or channels")
        self.stride, self.partial_k = stride, partial_k
        self.sparse = False  # skip ops of weight exactly 0 (GDAS samples; a host read per op)
        self.ops = nn.ModuleDict({name: make_op(name, c // partial_k, stride, affine) for name in OPS})

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W]; w: [7] weights (op prob × input prob). ReLU shared by conv ops."""
        cp = x.shape[1] // self.partial_k
        xp = x[:, :cp] if self.partial_k > 1 else x
        xr = F.relu(xp)
        out = None
        for k, op in enumerate(self.ops.values()):
            if self.sparse and float(w[k].detach()) == 0:  # GDAS: only the sampled op runs
                continue
            y = op.body(xr) if op.pre_relu else op(xp)
            y = w[k] * y
            out = y if out is None else out + y
        if self.partial_k == 1:
            return out
        if out is None:
            out = x.new_zeros(x.shape[0], cp, *bypass(x[:, :1], self.stride).shape[2:])
        return channel_shuffle(torch.cat([out, bypass(x[:, cp:], self.stride) * w.sum()], 1), self.partial_k)


def bypass(x: torch.Tensor, stride: int) -> torch.Tensor:
    """The channels PC-DARTS leaves out of an edge's ops (max-pooled to the edge's stride)."""
    return F.max_pool2d(x, 2, 2) if stride == 2 else x


def _accumulate(acc: torch.Tensor | None, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """acc + w·y in one pass (w a 0-d tensor)."""
    return w * y if acc is None else torch.addcmul(acc, y, w)


class MixedCell(CellBase):
    edge_by_edge = False
    """True: the textbook evaluation, each edge on its own (`forward_edge_by_edge`); the search
    benchmark's plain baseline and the tests' reference set it."""

    def __init__(self, c_pp, c_p, c, reduction, reduction_prev, nodes: int, affine: bool, partial_k: int = 1):
        super().__init__(c_pp, c_p, c, reduction, reduction_prev, affine)
        self.nodes, self.partial_k = nodes, partial_k
        self.sparse = False  # GDAS: skip the ops of weight exactly 0 (`Supernet.set_sparse`)
        self.edges = nn.ModuleList()
        for i in range(nodes):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedEdge(c, stride, affine, partial_k))

    def forward(self, s0, s1, op_w: torch.Tensor, in_w: torch.Tensor) -> torch.Tensor:
        """Node i = Σ_j Σ_o w[j→i, o] · o_{j→i}(h_j), evaluated source by source.

        All edges leaving one state h_j share its ReLU; the parameter-free ops (pools with their
        non-affine BN, identity) give the same output on each of those edges, so they are computed
        once per source; the FactorizedReduce convs of a source's stride-2 edges are one matmul
        (`factorized_reduce_many`), and each conv op of its edges runs once for all of them
        (`conv_ops_many`). Node j−2 is complete once sources 0 … j−1 are done. Ops whose
        weight is exactly 0 on every edge of a source (GDAS's one sampled op per edge) are skipped.
        Equals `forward_edge_by_edge` (tests/test_networks.py checks it)."""
        if self.edge_by_edge:
            return self.forward_edge_by_edge(s0, s1, op_w, in_w)
        w = op_w * in_w.unsqueeze(-1)  # fold the node-input weight into the op weights once
        live = (op_w.detach() != 0).tolist() if self.sparse else None  # [E][7]: one host read per cell
        states = self.preprocess(s0, s1)
        acc: list[torch.Tensor | None] = [None] * self.nodes
        for j in range(1 + self.nodes):  # the last node feeds no edge
            if j >= 2:
                states.append(acc[j - 2])
            targets = [(i, edge_index(i, j)) for i in range(max(0, j - 1), self.nodes)]
            if self.partial_k > 1:
                self._partial_source(states[j], targets, w, acc, live)
            else:
                self._source(states[j], targets, w, acc, live)
        states.append(acc[-1])
        return torch.cat(states[2:], dim=1)

    def forward_edge_by_edge(self, s0, s1, op_w: torch.Tensor, in_w: torch.Tensor) -> torch.Tensor:
        w = op_w * in_w.unsqueeze(-1)
        states, e = self.preprocess(s0, s1), 0
        for i in range(self.nodes):
            s = None
            for j in range(2 + i):
                y = self.edges[e](states[j], w[e])
                s = y if s is None else s + y
                e += 1
            states.append(s)
        return torch.cat(states[2:], dim=1)

    def _partial_source(self, h: torch.Tensor, targets: list[tuple[int, int]], w: torch.Tensor,
                        acc: list[torch.Tensor | None], live: list[list[bool]] | None) -> None:
        """PC-DARTS: the ops of every edge leaving h see its first 1/k channels; each edge's output
        is its op mixture next to the bypassed channels (weighted by the edge's input weight, the
        sum of its op weights), channel-shuffled, then added into its node."""
        cp = h.shape[1] // self.partial_k
        part: list[torch.Tensor | None] = [None] * len(targets)
        self._source(h[:, :cp], [(t, e) for t, (_, e) in enumerate(targets)], w, part, live)
        rest = h[:, cp:]
        pooled = None
        for (i, e), mix in zip(targets, part):
            if self.edges[e].stride == 2:
                pooled = bypass(rest, 2) if pooled is None else pooled
                r = pooled
            else:
                r = rest
            if mix is None:  # no op of the edge has weight (never with a softmax or a one-hot sample)
                mix = r.new_zeros(r.shape[0], cp, *r.shape[2:])
            y = channel_shuffle(torch.cat([mix, r * w[e].sum()], 1), self.partial_k)
            acc[i] = y if acc[i] is None else acc[i] + y

    def _source(self, h: torch.Tensor, targets: list[tuple[int, int]], w: torch.Tensor,
                acc: list[torch.Tensor | None], live: list[list[bool]] | None) -> None:
        """Add every edge h → slot i (edge e) for (i, e) in `targets` into acc[i] (ops of weight
        exactly 0 on an edge are left out of it)."""
        hr = F.relu(h)
        for k, name in enumerate(OPS):
            sel = [(i, e) for i, e in targets if live is None or live[e][k]]
            if not sel:
                continue
            mods = [self.edges[e].ops[name] for _, e in sel]
            if _shared(mods[0]):
                y = mods[0](h)
                if len(mods) > 1 and mods[0].training:
                    _copy_buffers(mods[0], mods[1:])
                ys = [y] * len(mods)
            elif isinstance(mods[0], FactorizedReduce) and len(mods) > 1:
                ys = factorized_reduce_many(mods, hr) or [m.body(hr) for m in mods]
            elif name in _BATCHED and len(mods) > 1:
                ys = conv_ops_many(mods, hr) or [m.body(hr) for m in mods]
            else:
                ys = [m.body(hr) if m.pre_relu else m(h) for m in mods]
            for (i, e), y in zip(sel, ys):
                acc[i] = _accumulate(acc[i], y, w[e, k])


_BATCHED = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")  # kernels.conv_ops_many


def _shared(op: nn.Module) -> bool:
    """Parameter-free ops: the same output on every edge that leaves one state."""
    return isinstance(op, Identity) or (isinstance(op, PoolBN) and not op.bn.affine)


@torch.no_grad()
def _copy_buffers(src: nn.Module, dsts: list[nn.Module]) -> None:
    """Keep the running statistics of the ops that a shared op stands for equal to its own."""
    sb = list(src.buffers())
    if sb:
        torch._foreach_copy_([b for d in dsts for b in d.buffers()], sb * len(dsts))


class Supernet(CellStack):
    """DARTS supernet. `forward(x, weights)` with `weights` from `ArchLayout.weights(theta)`."""

    def __init__(
        self,
        c: int,
        num_classes: int,
        layers: int,
        nodes: int = 4,
        in_channels: int = 3,
        affine: bool = False,
        stem_multiplier: int = 3,
        partial_k: int = 1,
    ) -> None:
        super().__init__(
            lambda c_pp, c_p, cc, red, red_prev: MixedCell(c_pp, c_p, cc, red, red_prev, nodes, affine, partial_k),
            c, num_classes, layers, nodes, in_channels, stem_multiplier,
        )
        self.num_edges = num_edges(nodes)

    def set_sparse(self, sparse: bool) -> "Supernet":
        """Run only the ops whose mixing weight is not exactly 0 (GDAS's one-hot samples); this
        reads the weights on the host once per cell, so it stays off for dense mixing."""
        for m in self.modules():
            if isinstance(m, (MixedCell, MixedEdge)):
                m.sparse = sparse
        return self

    def forward(self, x: torch.Tensor, weights: ArchWeights) -> torch.Tensor:
        """x: [B, C_in, H, W] float → logits [B, classes]."""
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            op_w, in_w = weights[cell.cell_type]
            s0, s1 = s1, cell(s0, s1, op_w.to(s1.dtype), in_w.to(s1.dtype))
        return self.head(s1)
