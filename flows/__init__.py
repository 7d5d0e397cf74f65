"""Prefect flows: thin wrappers over mmindex.pipeline (docs/ARCHITECTURE.md §5)."""
