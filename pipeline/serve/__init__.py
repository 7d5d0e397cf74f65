"""``mmindex serve``: an HTTP search API and a search page over the pipeline's search functions.

``requests``: the request bodies (pydantic); ``service``: what the endpoints do, on warm models
and one open store; ``held_store``: the embedded store kept open between queries and handed to a
waiting ingest; ``app``: the FastAPI app (routes, errors, the key, limits); ``static/``: the page.
"""
