"""The DARTS cell search space: operations, the architecture-parameter layout and `Genotype`.

A cell has two input nodes (c_{k-2}, c_{k-1}) and `nodes` intermediate nodes; intermediate node i
(0-based) has 2 + i candidate inputs (the two cell inputs and every earlier intermediate node).
For every edge j→i there are 7 op logits α_e, and for every node i there are 2 + i input logits β_i
("edge normalization"). Edges are numbered node-major: node 0's inputs 0, 1, then node 1's inputs
0, 1, 2, and so on, so edge e of node i, input j is `offset(i) + j` with offset(i) = Σ_{i'<i}(2+i').

Architecture parameters for all used cell types are kept as one flat vector θ (the hypernetwork
outputs θ(λ)); `ArchLayout` maps θ to per-cell (α [E, 7], β list of [2+i]) views and back.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

# The 7 DARTS operations of the original EdgeNES code (no `none`).
OPS: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
OP_INDEX = {name: i for i, name in enumerate(OPS)}
CONV_OPS = frozenset(op for op in OPS if "conv" in op)  # the ops with a learned spatial kernel
CELL_TYPES: tuple[str, ...] = ("normal", "reduce")


def reduction_positions(layers: int) -> tuple[int, ...]:
    """Indices of reduction cells in a stack of `layers` cells (DARTS: layers//3 and 2*layers//3).

    A 1-cell network is a single reduction cell; with 2 cells both are reductions.
    """
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    return tuple(sorted({layers // 3, 2 * layers // 3}))


def cell_types_for(layers: int) -> tuple[str, ...]:
    """The cell types that a stack of `layers` cells actually uses (in CELL_TYPES order)."""
    red = reduction_positions(layers)
    used = {"reduce" if i in red else "normal" for i in range(layers)}
    return tuple(ct for ct in CELL_TYPES if ct in used)


def num_edges(nodes: int) -> int:
    """Number of candidate edges in a cell with `nodes` intermediate nodes: Σ (2 + i)."""
    return sum(2 + i for i in range(nodes))


def edge_index(node: int, inp: int) -> int:
    """Flat edge index of edge inp → node (node 0-based among intermediate nodes)."""
    return sum(2 + i for i in range(node)) + inp


# --------------------------------------------------------------------------------------------
# Genotype
# --------------------------------------------------------------------------------------------
Node = tuple[tuple[str, int], ...]  # ((op, input_index), ...) : the kept inputs of one node
Cell = tuple[Node, ...]  # one entry per intermediate node


def _cell_from_obj(obj: Any, field: str) -> Cell:
    if obj is None:
        return ()
    if not isinstance(obj, (list, tuple)):
        raise ValueError(f"{field}: expected a list of nodes, got {type(obj).__name__}")
    cell = []
    for i, node in enumerate(obj):
        nf = f"{field}[node {i}]"
        if not isinstance(node, (list, tuple)) or len(node) == 0:
            raise ValueError(f"{nf}: expected a non-empty list of [op, input] pairs, got {node!r}")
        edges = []
        for pair in node:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"{nf}: expected an [op, input] pair, got {pair!r}")
            op, inp = pair
            if not isinstance(op, str):
                raise ValueError(f"{nf}: op must be a string, got {op!r}")
            if isinstance(inp, bool) or not isinstance(inp, int):
                raise ValueError(f"{nf}: input index must be an integer, got {inp!r}")
            edges.append((op, inp))
        cell.append(tuple(edges))
    return tuple(cell)


@dataclass(frozen=True)
class Genotype:
    """A discrete cell architecture: per cell type, per intermediate node, the kept (op, input).

    Input index 0 is c_{k-2}, 1 is c_{k-1}, 2 + m is intermediate node m. A cell type that the
    searched network did not use is the empty tuple. Immutable and hashable (usable as a dict
    key for de-duplication).
    """

    normal: Cell = ()
    reduce: Cell = ()

    def __post_init__(self) -> None:
        self.validate()

    # -- validation ---------------------------------------------------------------------------
    def validate(self, nodes: int | None = None, cell_types: Sequence[str] | None = None) -> None:
        """Raise ValueError naming the offending field if the genotype is malformed.

        `nodes` checks the number of intermediate nodes; `cell_types` that these cells exist.
        """
        if not self.normal and not self.reduce:
            raise ValueError("genotype: both 'normal' and 'reduce' are empty")
        for ct in CELL_TYPES:
            cell = getattr(self, ct)
            if not cell:
                continue
            if nodes is not None and len(cell) != nodes:
                raise ValueError(f"{ct}: expected {nodes} nodes, got {len(cell)}")
            for i, node in enumerate(cell):
                seen = set()
                for op, inp in node:
                    if op not in OP_INDEX:
                        raise ValueError(
                            f"{ct}[node {i}]: unknown op {op!r}; expected one of {', '.join(OPS)}"
                        )
                    if not 0 <= inp < 2 + i:
                        raise ValueError(
                            f"{ct}[node {i}]: input index {inp} out of range; node {i} can take "
                            f"inputs 0..{1 + i}"
                        )
                    if inp in seen:
                        raise ValueError(f"{ct}[node {i}]: input {inp} is used twice")
                    seen.add(inp)
        for ct in cell_types or ():
            if ct not in CELL_TYPES:
                raise ValueError(f"cell type {ct!r} unknown; expected one of {CELL_TYPES}")
            if not getattr(self, ct):
                raise ValueError(f"{ct}: the genotype has no {ct} cell, but the network needs one")

    # -- views --------------------------------------------------------------------------------
    @property
    def cell_types(self) -> tuple[str, ...]:
        return tuple(ct for ct in CELL_TYPES if getattr(self, ct))

    @property
    def nodes(self) -> int:
        return len(getattr(self, self.cell_types[0]))

    def cell(self, cell_type: str) -> Cell:
        return getattr(self, cell_type)

    def edges(self) -> list[tuple[str, int, int, str]]:
        """All kept edges as (cell_type, node, input, op)."""
        return [
            (ct, i, inp, op)
            for ct in self.cell_types
            for i, node in enumerate(getattr(self, ct))
            for op, inp in node
        ]

    def num_kept_edges(self) -> int:
        """Λ: the edges this genotype keeps (not `ArchLayout.num_edges`, the candidate edges E)."""
        return len(self.edges())

    def matched_edges(self, other: "Genotype") -> int:
        """Number of (cell type, node, input, op) the two genotypes have in common."""
        return len(set(self.edges()) & set(other.edges()))

    # -- serialization ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            ct: [[[op, inp] for op, inp in node] for node in getattr(self, ct)]
            for ct in CELL_TYPES
            if getattr(self, ct)
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, obj: Any) -> "Genotype":
        if not isinstance(obj, Mapping):
            raise ValueError(f"genotype: expected a JSON object, got {type(obj).__name__}")
        unknown = set(obj) - set(CELL_TYPES)
        if unknown:
            raise ValueError(
                f"genotype: unknown field(s) {sorted(unknown)}; expected 'normal' and/or 'reduce'"
            )
        return cls(
            normal=_cell_from_obj(obj.get("normal"), "normal"),
            reduce=_cell_from_obj(obj.get("reduce"), "reduce"),
        )

    @classmethod
    def from_json(cls, text: str) -> "Genotype":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"genotype: not valid JSON ({e})") from None
        except RecursionError:
            raise ValueError("genotype: JSON nested too deeply") from None
        return cls.from_dict(obj)

    def compact(self) -> str:
        """One-line human form, e.g. `reduce: sep3(1) | dil5(0) | skip(2) | max(1)`."""
        short = {
            "max_pool_3x3": "max",
            "avg_pool_3x3": "avg",
            "skip_connect": "skip",
            "sep_conv_3x3": "sep3",
            "sep_conv_5x5": "sep5",
            "dil_conv_3x3": "dil3",
            "dil_conv_5x5": "dil5",
        }
        parts = []
        for ct in self.cell_types:
            nodes = " | ".join(
                "+".join(f"{short[op]}({inp})" for op, inp in node) for node in getattr(self, ct)
            )
            parts.append(f"{ct}: {nodes}")
        return " ; ".join(parts)


# --------------------------------------------------------------------------------------------
# Architecture-parameter layout
# --------------------------------------------------------------------------------------------
ArchWeights = dict[str, tuple[torch.Tensor, torch.Tensor]]
"""Per cell type: (op weights [E, 7], input weights [E]) — what the supernet's forward takes.

For the usual softmax relaxation op weights are softmax(α_e) and input weights the entries of
softmax(β_i) of each edge's node; Gumbel samples or one-hot vectors fit the same slots."""


@dataclass(frozen=True)
class ArchLayout:
    """Where each α_e and β_i lives in the flat architecture vector θ.

    Per cell type (in CELL_TYPES order, only those used): α as E×7 (edge-major), then β_0 .. β_{n-1}.
    """

    nodes: int = 4
    cell_types: tuple[str, ...] = ("reduce",)
    inputs_per_node: int = 1  # k kept inputs per node when discretizing

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {self.nodes}")
        if not 1 <= self.inputs_per_node <= 2:
            raise ValueError(f"inputs_per_node must be 1 or 2, got {self.inputs_per_node}")
        if not self.cell_types or any(ct not in CELL_TYPES for ct in self.cell_types):
            raise ValueError(f"cell_types must be a non-empty subset of {CELL_TYPES}")

    @property
    def num_edges(self) -> int:
        """E: the candidate edges of one cell (not `Genotype.num_kept_edges`, the Λ edges kept)."""
        return num_edges(self.nodes)

    @property
    def cell_size(self) -> int:
        return self.num_edges * len(OPS) + self.num_edges  # α entries + β entries (Σ(2+i) = E)

    @property
    def size(self) -> int:
        return self.cell_size * len(self.cell_types)

    @property
    def num_distributions(self) -> int:
        """Number of categorical distributions (edge ops + node inputs) over all cell types."""
        return (self.num_edges + self.nodes) * len(self.cell_types)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "cell_types": list(self.cell_types),
            "inputs_per_node": self.inputs_per_node,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArchLayout":
        return cls(
            nodes=int(d["nodes"]),
            cell_types=tuple(d["cell_types"]),
            inputs_per_node=int(d.get("inputs_per_node", 1)),
        )

    # -- θ <-> (α, β) ---------------------------------------------------------------------------
    def split(self, theta: torch.Tensor) -> dict[str, tuple[torch.Tensor, list[torch.Tensor]]]:
        """θ [..., size] → per cell type (α [..., E, 7], [β_i [..., 2+i]]). Views, differentiable."""
        if theta.shape[-1] != self.size:
            raise ValueError(
                f"architecture vector has {theta.shape[-1]} entries, layout {self.to_dict()} "
                f"needs {self.size}"
            )
        out = {}
        E, n_ops = self.num_edges, len(OPS)
        for c, ct in enumerate(self.cell_types):
            base = c * self.cell_size
            alpha = theta[..., base : base + E * n_ops].reshape(*theta.shape[:-1], E, n_ops)
            betas, off = [], base + E * n_ops
            for i in range(self.nodes):
                betas.append(theta[..., off : off + 2 + i])
                off += 2 + i
            out[ct] = (alpha, betas)
        return out

    def join(self, parts: Mapping[str, tuple[torch.Tensor, Sequence[torch.Tensor]]]) -> torch.Tensor:
        """Inverse of `split`."""
        chunks = []
        for ct in self.cell_types:
            alpha, betas = parts[ct]
            chunks.append(alpha.reshape(*alpha.shape[:-2], -1))
            chunks.extend(betas)
        return torch.cat(chunks, dim=-1)

    def init_theta(self, scale: float = 1e-3, generator: torch.Generator | None = None) -> torch.Tensor:
        """DARTS initialization: small random logits."""
        return scale * torch.randn(self.size, generator=generator)

    def distributions(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """All categorical distributions of θ: softmax of every α_e [7] and every β_i [2+i]."""
        dists = []
        for ct, (alpha, betas) in self.split(theta).items():
            dists.extend(torch.softmax(alpha, dim=-1).unbind(-2))
            dists.extend(torch.softmax(b, dim=-1) for b in betas)
        return dists

    def weights(self, theta: torch.Tensor) -> ArchWeights:
        """The supernet's mixing weights: (softmax(α) [E, 7], softmax(β) per edge [E])."""
        out = {}
        for ct, (alpha, betas) in self.split(theta).items():
            inp = torch.cat([torch.softmax(b, dim=-1) for b in betas], dim=-1)
            out[ct] = (torch.softmax(alpha, dim=-1), inp)
        return out

    def discretize(self, theta: torch.Tensor, inputs_per_node: int | None = None) -> Genotype:
        """Keep the top-k inputs of every node by β and the argmax op on each kept edge."""
        k = inputs_per_node or self.inputs_per_node
        cells = {}
        for ct, (alpha, betas) in self.split(theta.detach().float().cpu()).items():
            cell = []
            for i, b in enumerate(betas):
                kk = min(k, 2 + i)
                chosen = sorted(torch.topk(b, kk).indices.tolist())
                cell.append(
                    tuple((OPS[int(alpha[edge_index(i, j)].argmax())], j) for j in chosen)
                )
            cells[ct] = tuple(cell)
        return Genotype(**cells)

    def genotype_logits(self, g: Genotype, scale: float = 1.0) -> torch.Tensor:
        """θ whose softmaxes put mass on `g`: +scale on the chosen op / input logits, 0 elsewhere.

        For an edge that the genotype does not keep, the op logits are left at 0 (uniform).
        """
        self.check_genotype(g)
        theta = torch.zeros(self.size)
        parts = self.split(theta)
        for ct in self.cell_types:
            alpha, betas = parts[ct]
            for i, node in enumerate(g.cell(ct)):
                for op, inp in node:
                    alpha[edge_index(i, inp), OP_INDEX[op]] = scale
                    betas[i][inp] = scale
        return theta

    def smoothed(self, g: Genotype, tau: float = 0.99) -> dict[str, tuple[torch.Tensor, list[torch.Tensor]]]:
        """Smoothed distributions of a genotype: p* = τ·onehot + (1−τ)/n.

        Per cell type: op distributions [E, 7] (uniform on edges the genotype does not keep) and,
        per node, an input distribution [2+i] spread evenly over its kept inputs before smoothing.
        """
        self.check_genotype(g)
        out = {}
        n_ops = len(OPS)
        for ct in self.cell_types:
            ops = torch.full((self.num_edges, n_ops), 1.0 / n_ops)
            betas = []
            for i, node in enumerate(g.cell(ct)):
                onehot = torch.zeros(2 + i)
                for op, inp in node:
                    e = edge_index(i, inp)
                    ops[e] = (1 - tau) / n_ops
                    ops[e, OP_INDEX[op]] += tau
                    onehot[inp] = 1.0 / len(node)
                betas.append(tau * onehot + (1 - tau) / (2 + i))
            out[ct] = (ops, betas)
        return out

    def smoothed_distributions(self, g: Genotype, tau: float = 0.99) -> list[torch.Tensor]:
        """`smoothed` flattened in the same order as `distributions`."""
        dists = []
        for ct, (ops, betas) in self.smoothed(g, tau).items():
            dists.extend(ops.unbind(0))
            dists.extend(betas)
        return dists

    def check_genotype(self, g: Genotype) -> None:
        """ValueError if `g` does not fit this layout (cell types, node count)."""
        for ct in self.cell_types:
            if not g.cell(ct):
                raise ValueError(f"genotype has no {ct} cell, but the search space has one")
            if len(g.cell(ct)) != self.nodes:
                raise ValueError(
                    f"{ct}: genotype has {len(g.cell(ct))} nodes, the search space has {self.nodes}"
                )


