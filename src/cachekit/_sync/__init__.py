"""The sync cache, generated from ``_async`` by ``scripts/unasync.py`` (but ``primitives.py``)."""
