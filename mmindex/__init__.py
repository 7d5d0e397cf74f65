"""mmindex: multimodal vector-database indexing pipeline.

The library lives in ``mmindex.pipeline``; Arrow/payload/config schemas in ``mmindex.schemas``;
Prefect flows in ``mmindex.flows``.
"""

__version__ = "0.1.0"
