"""Generated inputs of the integration tests (modules, not tests: run.sh runs
only test/integration/*.py)."""
