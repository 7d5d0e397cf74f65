"""Sources: what to index. A source lists items (``ItemRef``) and opens their bytes."""
