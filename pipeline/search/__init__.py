"""Search: queries (text, image, like), fusion, MMR, the RAG retriever, zero-shot labels and the HTML gallery."""
