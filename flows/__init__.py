"""Prefect flows: thin wrappers over mmindex.pipeline (see DESIGN §5)."""
