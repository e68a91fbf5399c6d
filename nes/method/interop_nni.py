"""EdgeNES / NNI `arc.json` interop: import and export architectures in the original code's format.

Keys `{cell}_n{i}_p{j}` → NNI op name (for every candidate input j of node i, i = 2..),
`{cell}_n{i}_switch` → list of chosen input indices. Inputs 0, 1 are c_{k-2}, c_{k-1}.
`load_genotype` reads either format (ours or NNI's) from a file.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..artifacts import read_json, reading
from .space import CELL_TYPES, Cell, Genotype

# Op names used by the original EdgeNES / NNI `arc.json` files.
NNI_OP_NAMES = {
    "maxpool": "max_pool_3x3",
    "avgpool": "avg_pool_3x3",
    "skipconnect": "skip_connect",
    "sepconv3x3": "sep_conv_3x3",
    "sepconv5x5": "sep_conv_5x5",
    "dilconv3x3": "dil_conv_3x3",
    "dilconv5x5": "dil_conv_5x5",
}

OP_TO_NNI = {v: k for k, v in NNI_OP_NAMES.items()}


def load_genotype(path: str) -> Genotype:
    """Read a genotype from a file: our JSON, or an EdgeNES/NNI `arc.json` (auto-detected)."""
    obj = read_json(path, dict, "a genotype or an NNI arc.json")
    with reading(path, "a genotype or an NNI arc.json"):
        if isinstance(obj.get("genotype"), Mapping):
            obj = obj["genotype"]  # a wrapper such as our run's genotype.json
        if any(str(k).startswith(("reduce_n", "normal_n")) for k in obj):
            return genotype_from_nni(obj)
        return Genotype.from_dict(obj)

def genotype_from_nni(obj: Mapping[str, Any]) -> Genotype:
    """Import an architecture saved by the original EdgeNES/NNI code.

    Keys `{cell}_n{i}_p{j}` → NNI op name (for every candidate input j of node i, i = 2..),
    `{cell}_n{i}_switch` → list of chosen input indices. Inputs 0, 1 are c_{k-2}, c_{k-1}.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"NNI architecture: expected a JSON object, got {type(obj).__name__}")
    cells: dict[str, Cell] = {}
    for ct in CELL_TYPES:
        node_ids = sorted(
            {
                int(k[len(ct) + 2 :].split("_")[0])
                for k in obj
                if k.startswith(f"{ct}_n") and k[len(ct) + 2 :].split("_")[0].isdigit()
            }
        )
        if not node_ids:
            continue
        if node_ids != list(range(2, 2 + len(node_ids))):
            raise ValueError(f"{ct}: node numbers {node_ids} are not consecutive from 2")
        cell = []
        for n in node_ids:
            key = f"{ct}_n{n}_switch"
            if key not in obj:
                raise ValueError(f"{key}: missing (the list of chosen inputs of node {n})")
            switch = obj[key]
            if isinstance(switch, int) and not isinstance(switch, bool):
                switch = [switch]
            if not isinstance(switch, list) or not switch:
                raise ValueError(f"{key}: expected a non-empty list of input indices, got {switch!r}")
            edges = []
            for j in switch:
                if isinstance(j, bool) or not isinstance(j, int):
                    raise ValueError(f"{key}: input index must be an integer, got {j!r}")
                if not 0 <= j < n:
                    raise ValueError(f"{key}: input index {j} out of range 0..{n - 1}")
                pkey = f"{ct}_n{n}_p{j}"
                if pkey not in obj:
                    raise ValueError(f"{pkey}: missing (the op on chosen input {j} of node {n})")
                op = obj[pkey]
                if isinstance(op, list) and len(op) == 1:
                    op = op[0]
                if not isinstance(op, str) or op not in NNI_OP_NAMES:
                    raise ValueError(
                        f"{pkey}: unknown op {op!r}; expected one of {', '.join(NNI_OP_NAMES)}"
                    )
                edges.append((NNI_OP_NAMES[op], j))
            cell.append(tuple(edges))
        cells[ct] = tuple(cell)
    if not cells:
        raise ValueError(
            "NNI architecture: no keys like 'reduce_n2_p0' / 'reduce_n2_switch' or 'normal_n2_...' found"
        )
    return Genotype(**cells)

def genotype_to_nni(g: Genotype) -> dict[str, Any]:
    """Inverse of `genotype_from_nni` (ops listed for the chosen inputs only)."""
    out: dict[str, Any] = {}
    for ct in g.cell_types:
        for i, node in enumerate(g.cell(ct)):
            n = i + 2
            for op, inp in node:
                out[f"{ct}_n{n}_p{inp}"] = OP_TO_NNI[op]
            out[f"{ct}_n{n}_switch"] = [inp for _, inp in node]
    return out
