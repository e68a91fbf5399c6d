"""NES Explorer: differentiable neural ensemble search with diversity control (EdgeNES).

Public API (everything else is internal and may change):
    Genotype, ArchLayout, OPS            — the search space (nes.space)
    SearchConfig, HypernetConfig, TrainConfig, from_preset — configurations (nes.config)
    load_ensemble, EnsembleModel         — an exported ensemble bundle (nes.export)
Modules: nes.data (load_dataset, DeviceLoader), nes.supernet / nes.network, nes.search (search),
nes.hypernet (train_hypernet, load_hypernet), nes.diversity (sampling), nes.train (retrain),
nes.ensemble (metrics, greedy selection), nes.store / nes.jobs (run store, background jobs).
"""
__version__ = "0.1.0"

from .space import OPS, ArchLayout, Genotype  # noqa: E402
from .config import HypernetConfig, SearchConfig, TrainConfig, from_preset  # noqa: E402
from .export import EnsembleModel, load_ensemble  # noqa: E402

__all__ = ["OPS", "ArchLayout", "EnsembleModel", "Genotype", "HypernetConfig", "SearchConfig", "TrainConfig",
           "from_preset", "load_ensemble", "__version__"]
