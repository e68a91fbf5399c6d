"""Structural flaws of a genotype: what makes it a poor ensemble member whatever its estimate.

A cell whose output never reaches the classifier (`unused_cells`) and a cell type without a
convolution (`conv_free_cells`) are named by `structural_flaws`, the one place every member pick
(`diversity.pick_members`, `levers.choose_untrained`) and listing asks.
"""
from __future__ import annotations

from .space import CONV_OPS, Genotype, cell_types_for, reduction_positions


def unused_cells(genotype: Genotype, layers: int) -> tuple[int, ...]:
    """Cells (1-based) of a stack of `layers` cells whose output never reaches the classifier.

    Cell k reads c_{k-1} (the previous cell) only if some node of its type takes input 1, and
    c_{k-2} only if some node takes input 0. A cell type that reads input 0 alone skips the cell
    before it: with 2 cells, cell 1 is then computed and trained for nothing, and the network is
    effectively one cell deep (the stem feeds both inputs of cell 1, so the stem is always used)."""
    red = reduction_positions(layers)
    reads = {ct: {inp for node in genotype.cell(ct) for _, inp in node} for ct in genotype.cell_types}
    live = {layers - 1}  # 0-based; the classifier reads the last cell
    for k in range(layers - 1, -1, -1):
        if k in live:
            used = reads.get("reduce" if k in red else "normal", set())
            live |= {k - 1 - j for j in (0, 1) if (1 - j) in used and k - 1 - j >= 0}
    return tuple(k + 1 for k in range(layers) if k not in live)


def unused_cells_note(genotype: Genotype, layers: int) -> str | None:
    """A plain-language warning when `unused_cells` is not empty (None otherwise)."""
    dead = unused_cells(genotype, layers)
    if not dead:
        return None
    which = ", ".join(str(k) for k in dead)
    return (f"this genotype never reads its previous cell (no node takes input 1, c_{{k-1}}): retrained with "
            f"{layers} cells, the output of cell {which} is never used, so the member is shallower than "
            f"it looks and usually less accurate")


def conv_free_cells(genotype: Genotype, layers: int) -> tuple[str, ...]:
    """Cell types of a stack of `layers` cells whose kept ops hold no convolution: pools and skips
    alone (a stride-2 skip is a pair of 1×1 convolutions, nothing spatial). Such a cell learns no
    spatial filter, and the one-shot estimate is least trustworthy there: shared weights favour
    parameter-free ops (the DARTS collapse; Zela et al. 2020, P-DARTS, DARTS-), and genotypes made
    of them retrain weaker than their estimates say."""
    used = [ct for ct in cell_types_for(layers) if ct in genotype.cell_types]
    return tuple(ct for ct in used if not any(op in CONV_OPS for node in genotype.cell(ct) for op, _ in node))


def structural_flaws(genotype: Genotype, layers: int) -> list[str]:
    """Why a genotype is a poor ensemble member whatever its estimate, in words ([] when sound): a cell
    that never reaches the classifier (`unused_cells`), a cell type without a convolution
    (`conv_free_cells`). Member picks take a flawed genotype only when no sound one is left."""
    flaws = [f"cell {k} unused" for k in unused_cells(genotype, layers)]
    return flaws + [f"no convolution in the {ct} cell" for ct in conv_free_cells(genotype, layers)]


def structural_flaws_mark(genotype: Genotype, layers: int) -> str:
    """" (cell 1 unused)" after a genotype's name in a listing; "" for a sound genotype."""
    flaws = structural_flaws(genotype, layers)
    return f" ({', '.join(flaws)})" if flaws else ""


def structural_flaws_note(genotype: Genotype, layers: int) -> str | None:
    """A plain-language warning naming each structural flaw (None for a sound genotype)."""
    notes = [unused_cells_note(genotype, layers)]
    bare = conv_free_cells(genotype, layers)
    if bare:
        notes.append(f"the {' and '.join(bare)} cell holds only pools and skips, so it learns no spatial filter; "
                     f"such genotypes usually retrain weaker than their one-shot estimates say")
    return "; ".join(n for n in notes if n) or None
