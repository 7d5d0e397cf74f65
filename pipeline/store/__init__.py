"""The Qdrant store: one ``VectorStore`` protocol, the embedded (qdrant-edge) and client backends, filters."""
