"""Embedding: decode and preprocess, open_clip image/text encoders, the RAG text model, extraction, chunking, BM25."""
