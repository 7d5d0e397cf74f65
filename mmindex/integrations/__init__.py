"""Adapters of ``mmindex.Retriever`` to RAG frameworks (optional extras, imported on demand).

* ``mmindex.integrations.langchain.MmindexRetriever`` — LangChain ``BaseRetriever``
  (``pip install 'mmindex[langchain]'``);
* ``mmindex.integrations.llama_index.MmindexRetriever`` — LlamaIndex ``BaseRetriever``
  (``pip install 'mmindex[llamaindex]'``).
"""
