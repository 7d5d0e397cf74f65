"""Ingest: plan a source against the catalog, cut the plan into work units, embed a unit into rows, commit its shard, finalize the run."""
