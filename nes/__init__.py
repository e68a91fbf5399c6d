"""NES Explorer: differentiable neural ensemble search with diversity control (EdgeNES).

Public API (everything else is internal and may change):
    Genotype, ArchLayout, OPS            — the search space (nes.space)
    SearchConfig, TrainConfig, from_preset — configurations (nes.config)
    load_dataset                          — datasets held on the device (nes.data)
    Supernet, Network                     — the two networks
    search, retrain                       — DARTS search and member retraining
    ensemble_metrics                      — metrics from saved probabilities (nes.ensemble)
"""
__version__ = "0.1.0"

from .space import OPS, ArchLayout, Genotype  # noqa: E402,F401
from .config import SearchConfig, TrainConfig, from_preset  # noqa: E402,F401
