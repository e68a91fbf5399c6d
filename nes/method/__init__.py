"""The science: the search space, the networks, the bi-level loop (DARTS, hypernetwork α(λ),
per-λ search), the regularizers, diversity, member training and scoring, ensembles, baselines.

Imports only the core (`nes.config`, `nes.runtime`, `nes.data`, `nes.artifacts`, `nes.layout`)."""
