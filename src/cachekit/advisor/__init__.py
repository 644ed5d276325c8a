"""The tools built on the library: the ``cachekit`` command, the advisor (``bench``), the demo.

Nothing here is part of the caching core: it uses ``cachekit``'s public API
like any application would.
"""
