"""NES Explorer: differentiable neural ensemble search with diversity control (EdgeNES).

Public API (everything else is internal and may change):
    Genotype, ArchLayout, OPS            — the search space (nes.method.space)
    SearchConfig, HypernetConfig, TrainConfig, from_preset — configurations (nes.config)
    load_ensemble, EnsembleModel         — an exported ensemble bundle (nes.export)

Layers, each importing only the ones before it (tests/test_layers.py checks this):
    nes (core)    config, runtime, data, artifacts, layout (RunDir: every path of a run folder)
    nes.method    the science: space, ops, supernet, network, bilevel, darts, hypernet,
                  regularizers, diversity, train, scoring, ensemble, baselines
    nes.runs      how work runs: store, jobs, worker, tasks, pipeline, ray_executor
    nes.export    bundles: model, bundle, write, card, onnx, images
    nes.explorer  what the app's pages read and draw: runview, viz, demo, actions
    nes.cli       `python -m nes`
The names above are imported lazily, so `import nes` stays cheap (no torch until one is used).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from ._version import __version__

_PUBLIC = {
    "OPS": "nes.method.space", "ArchLayout": "nes.method.space", "Genotype": "nes.method.space",
    "HypernetConfig": "nes.config", "SearchConfig": "nes.config", "TrainConfig": "nes.config",
    "from_preset": "nes.config",
    "EnsembleModel": "nes.export.model", "load_ensemble": "nes.export.bundle",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
