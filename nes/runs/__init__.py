"""How work runs: the run store (SQLite), background jobs and their workers, the pipeline steps
as tasks, and the Ray executor. Imports the core and `nes.method`."""
