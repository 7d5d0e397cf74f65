"""The durable store: the index root (local or fsspec), Parquet shard logs, the catalog, state.json."""
