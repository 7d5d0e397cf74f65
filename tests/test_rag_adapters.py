"""The LangChain and LlamaIndex adapters against the frameworks' own contracts, over a real
collection (tiny open_clip model + the shipped all-MiniLM-L6-v2) on both store backends:

* LangChain's standard retriever suite (``langchain-tests`` ``RetrieversIntegrationTests``), then
  per-call ``k``/``where``/``mode``/``include_images`` and ``ainvoke`` off the event loop;
* LlamaIndex (which ships no standard retriever suite): ``retrieve``/``aretrieve`` with its own
  ``QueryBundle`` and ``NodeWithScore``, ``similarity_top_k``, ``MetadataFilters``, and the
  adapter inside a ``RetrieverQueryEngine`` answering through llama-index-core's ``MockLLM``.

Every expectation is the mmindex ``Retriever``'s own answer to the same request.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import RetrieversIntegrationTests
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters
from PIL import Image
from pydantic import ValidationError

from mmindex.api import Index
from mmindex.integrations.langchain import MmindexRetriever as LangChainRetriever
from mmindex.integrations.llama_index import MmindexRetriever as LlamaRetriever
from mmindex.integrations.llama_index import where_of
from mmindex.pipeline.errors import ConfigError, FilterSyntaxError
from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.pipeline.search.retriever import Retriever
from mmindex.schemas.config import Settings

DOCUMENTS = {
    "guide.md": """# Widget guide

## Installation

Install the widget with the package manager: pip install widget-XK42, then restart the shell.

## Rotating credentials

To rotate the API key, open the settings page, choose Security and press Rotate. The old key
stops working after one hour.

## Backups

Nightly backups are kept for thirty days in the cold storage bucket.
""",
    "billing.md": """# Billing

Invoices are emailed on the first day of each month.

## Refunds

A refund reaches your card within five business days.
""",
    "notes.txt": "Lunch on Fridays is pizza. The office closes at six.",
    "security.txt": "Security keys must be rotated every ninety days; the API key is shown only once.",
}
QUESTION = "How do I rotate the API key?"
BACKENDS = ("edge", "qdrant-client")


@pytest.fixture(scope="module", params=BACKENDS)
def docs_index(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_embedder, minilm) -> Iterator[Index]:
    """A document collection (four texts and a photo) per store backend, open for the module."""
    tmp = tmp_path_factory.mktemp(request.param)
    corpus = tmp / "corpus"
    corpus.mkdir()
    for name, text in DOCUMENTS.items():
        (corpus / name).write_text(text, encoding="utf-8")
    from skimage import data

    Image.fromarray(data.chelsea()).save(corpus / "cat.jpg")
    url = None if request.param == "edge" else f"local:{tmp / 'qdrant-client'}"
    settings = Settings(root=tmp / "root", workers=0, batch_size=8, shard_size=4, device="cpu", qdrant_url=url,
                        text_model="all-MiniLM-L6-v2")
    index_source(IndexRequest(corpus, "docs"), settings, embedder=tiny_embedder)
    with Index("docs", settings=settings, embedder=tiny_embedder) as index:
        yield index


@pytest.fixture(scope="module")
def docs_retriever(docs_index: Index) -> Retriever:
    return docs_index.retriever(k=4)


def ids(passages: list[Any]) -> list[str]:
    return [p.point_id for p in passages]


def sources(documents: list[Document]) -> list[str]:
    return [d.metadata["source"] for d in documents]


class RetrievalThreads:
    """Wraps a ``Retriever`` instance's ``retrieve`` to record the thread of every call."""

    def __init__(self, retriever: Retriever, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[threading.Thread] = []
        inner = retriever.retrieve

        def recording(*args: Any, **kwargs: Any) -> Any:
            self.threads.append(threading.current_thread())
            return inner(*args, **kwargs)

        monkeypatch.setattr(retriever, "retrieve", recording)


# -- LangChain -------------------------------------------------------------------------------


# pytest-asyncio runs in strict mode (pyproject.toml): the suite's one async test is inherited,
# so the mark goes on the class; its sync tests ignore it (the warning saying so is filtered).
@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:The test .* is marked with '@pytest.mark.asyncio' but it is not an async function")
class TestLangChainStandardRetrieverSuite(RetrieversIntegrationTests):
    """LangChain's own retriever conformance tests, unchanged."""

    @pytest.fixture(autouse=True)
    def _collection(self, docs_retriever: Retriever) -> None:
        self._retriever = docs_retriever

    @property
    def retriever_constructor(self) -> type[LangChainRetriever]:
        return LangChainRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"retriever": self._retriever}

    @property
    def retriever_query_example(self) -> str:
        return QUESTION


def test_langchain_invoke_overrides_k_where_mode_and_images_per_call(docs_retriever: Retriever) -> None:
    adapter = LangChainRetriever(retriever=docs_retriever, k=3)
    assert len(adapter.invoke(QUESTION)) == 3
    one = adapter.invoke(QUESTION, k=1)
    assert [d.id for d in one] == ids(docs_retriever.retrieve(QUESTION, 1))

    sparse = adapter.invoke(QUESTION, k=2, mode="sparse", where="ext=txt")
    expected = docs_retriever.retrieve(QUESTION, 2, mode="sparse", where="ext=txt")
    assert [(d.id, d.metadata["score"]) for d in sparse] == [(p.point_id, p.score) for p in expected]
    assert sources(sparse) == ["security.txt"]  # BM25: only one .txt mentions the key
    assert sparse[0].metadata["score"] != adapter.invoke(QUESTION, k=1, where="ext=txt")[0].metadata["score"]

    # a call's filters add to the adapter's standing ones
    md_only = LangChainRetriever(retriever=docs_retriever, where=["ext=md"])
    narrowed = md_only.invoke(QUESTION, where=["path=billing.md"])
    assert narrowed and set(sources(narrowed)) == {"billing.md"}
    assert md_only.invoke(QUESTION, where=["ext=txt"]) == []

    with_images = adapter.invoke(QUESTION, k=1, include_images=1)
    assert [d.metadata["modality"] for d in with_images] == ["text", "image"]
    assert with_images[-1].metadata["source"] == "cat.jpg"
    assert len(adapter.invoke(QUESTION, verbose=True)) == 3  # LangChain's own keyword is not an override
    assert [len(docs) for docs in adapter.batch([QUESTION, "When do refunds arrive?"], k=1)] == [1, 1]


def test_langchain_rejects_bad_arguments(docs_retriever: Retriever) -> None:
    adapter = LangChainRetriever(retriever=docs_retriever)
    with pytest.raises(ConfigError, match="unknown retriever argument.*top_k"):
        adapter.invoke(QUESTION, top_k=2)
    with pytest.raises(ConfigError, match="unknown retrieval mode"):
        adapter.invoke(QUESTION, mode="fuzzy")
    for bad in (0, "3", 2.5, True):
        with pytest.raises(ConfigError, match="k must be a whole number of at least 1"):
            adapter.invoke(QUESTION, k=bad)
    assert len(LangChainRetriever(retriever=docs_retriever, k=2).invoke(QUESTION, k=None, mode=None)) == 2
    with pytest.raises(FilterSyntaxError):
        adapter.invoke(QUESTION, where="ext")
    with pytest.raises(ValidationError):
        LangChainRetriever(retriever=docs_retriever, mode="fuzzy")
    with pytest.raises(ValidationError):
        LangChainRetriever(retriever=docs_retriever, k=0)


@pytest.mark.asyncio
async def test_langchain_ainvoke_searches_off_the_event_loop_with_call_overrides(
    docs_retriever: Retriever, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = LangChainRetriever(retriever=docs_retriever)
    questions = [QUESTION, "When do refunds arrive?", "What is for lunch on Friday?"]
    expected = [d.id for d in adapter.invoke(QUESTION, k=2, where="ext=md", mode="dense")]
    expected_each = [ids(docs_retriever.retrieve(q, 1)) for q in questions]
    threads = RetrievalThreads(docs_retriever, monkeypatch)

    documents = await adapter.ainvoke(QUESTION, k=2, where="ext=md", mode="dense")
    assert [d.id for d in documents] == expected
    assert len(threads.threads) == 1 and threads.threads[0] is not threading.current_thread()

    together = await asyncio.gather(*(adapter.ainvoke(q, k=1) for q in questions))
    assert [[d.id for d in docs] for docs in together] == expected_each
    assert [sources(docs) for docs in together] == [["guide.md"], ["billing.md"], ["notes.txt"]]
    assert len(threads.threads) == 4 and threading.current_thread() not in threads.threads


# -- LlamaIndex ------------------------------------------------------------------------------


def test_llama_index_retrieve_takes_query_bundles_and_similarity_top_k(docs_retriever: Retriever) -> None:
    adapter = LlamaRetriever(docs_retriever, similarity_top_k=3)
    nodes = adapter.retrieve(QueryBundle(QUESTION))
    assert all(isinstance(n, NodeWithScore) and isinstance(n.node, TextNode) for n in nodes)
    expected = docs_retriever.retrieve(QUESTION, 3)
    assert [(n.node.node_id, n.score) for n in nodes] == [(p.point_id, p.score) for p in expected]
    assert nodes[0].node.get_content() == expected[0].text
    assert nodes[0].node.metadata["heading_path"][-1] == "Rotating credentials"
    assert [n.node.node_id for n in adapter.retrieve(QUESTION)] == ids(expected)  # a plain string too

    adapter.similarity_top_k = 1
    assert [n.node.node_id for n in adapter.retrieve(QUESTION)] == ids(expected[:1])
    assert len(LlamaRetriever(docs_retriever).retrieve(QUESTION)) == docs_retriever.k
    assert len(LlamaRetriever(docs_retriever, k=2).retrieve(QUESTION)) == 2
    with pytest.raises(ConfigError, match="disagree"):
        LlamaRetriever(docs_retriever, similarity_top_k=2, k=3)
    with pytest.raises(ConfigError, match="similarity_top_k must be a whole number of at least 1"):
        adapter.similarity_top_k = 0


def test_llama_index_metadata_filters_become_where_expressions(docs_retriever: Retriever) -> None:
    md = MetadataFilters(filters=[MetadataFilter(key="ext", value="md")])
    nodes = LlamaRetriever(docs_retriever, filters=md, mode="sparse").retrieve(QUESTION)
    assert [n.node.node_id for n in nodes] == ids(docs_retriever.retrieve(QUESTION, where="ext=md", mode="sparse"))
    assert nodes and {n.node.metadata["source"] for n in nodes} == {"guide.md"}

    nested = MetadataFilters(filters=[
        MetadataFilter(key="ext", value=["md", "txt"], operator=FilterOperator.IN),
        MetadataFilters(filters=[MetadataFilter(key="path", value=["guide.md"], operator=FilterOperator.NIN),
                                 MetadataFilter(key="chunk_index", value=0, operator=FilterOperator.GTE)]),
    ])
    assert where_of(nested) == ("ext=md,txt", "path!=guide.md", "chunk_index>=0")
    found = LlamaRetriever(docs_retriever, filters=nested, where=["modality=text"], k=10).retrieve(QUESTION)
    assert {n.node.metadata["source"] for n in found} == {"billing.md", "notes.txt", "security.txt"}

    either = MetadataFilters(filters=[MetadataFilter(key="ext", value="md")], condition=FilterCondition.OR)
    with pytest.raises(ConfigError, match="condition 'or'"):
        LlamaRetriever(docs_retriever, filters=either)
    with pytest.raises(ConfigError, match="'text_match' is not supported"):
        where_of(MetadataFilters(filters=[MetadataFilter(key="path", value="g", operator=FilterOperator.TEXT_MATCH)]))
    with pytest.raises(ConfigError, match="takes a non-empty list"):
        where_of(MetadataFilters(filters=[MetadataFilter(key="ext", value="md", operator=FilterOperator.IN)]))
    with pytest.raises(ConfigError, match="takes one value"):
        where_of(MetadataFilters(filters=[MetadataFilter(key="ext", value=["md"])]))
    with pytest.raises(ConfigError, match="','"):
        where_of(MetadataFilters(filters=[MetadataFilter(key="path", value="a,b.md")]))
    with pytest.raises(FilterSyntaxError):
        LlamaRetriever(docs_retriever, filters=MetadataFilters(filters=[MetadataFilter(key="chunk_index", value="x")]))


@pytest.mark.asyncio
async def test_llama_index_aretrieve_searches_off_the_event_loop(
    docs_retriever: Retriever, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = LlamaRetriever(docs_retriever, similarity_top_k=2)
    expected = [(n.node.node_id, n.score) for n in adapter.retrieve(QueryBundle(QUESTION))]
    threads = RetrievalThreads(docs_retriever, monkeypatch)
    nodes = await adapter.aretrieve(QueryBundle(QUESTION))
    assert [(n.node.node_id, n.score) for n in nodes] == expected
    assert len(threads.threads) == 1 and threads.threads[0] is not threading.current_thread()


@pytest.mark.asyncio
async def test_llama_index_query_engine_answers_from_the_retrieved_passages(docs_retriever: Retriever) -> None:
    adapter = LlamaRetriever(docs_retriever, similarity_top_k=2, filters=MetadataFilters(
        filters=[MetadataFilter(key="ext", value="md")]))
    engine = RetrieverQueryEngine.from_args(adapter, llm=MockLLM())
    expected = docs_retriever.retrieve(QUESTION, 2, where="ext=md")

    response = engine.query(QUESTION)
    assert [n.node.node_id for n in response.source_nodes] == ids(expected)
    # MockLLM answers with its prompt: the question and the retrieved passages as the context
    assert QUESTION in str(response) and "press Rotate" in str(response)
    assert expected[0].text in str(response)

    answer = await engine.aquery(QUESTION)
    assert [n.node.node_id for n in answer.source_nodes] == ids(expected)
    assert str(answer) == str(response)

