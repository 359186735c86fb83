"""The run engine: a run staged as benchmark → learner → task loop with hooks → result, and the
operations on a run directory (resume, rollback, inspect); docs/architecture.md draws it."""
