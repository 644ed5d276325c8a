"""Flask with cachekit: the extension, cached GET views, a write that evicts.

Run it (Redis on 127.0.0.1:6379, database 15; any cachekit URL works)::

    CACHEKIT_URL=redis://127.0.0.1:6379/15 flask --app examples.flask_app:create_app run

    curl -i localhost:5000/items/1          # rendered, then served from the cache (ETag)
    curl -i -X PUT localhost:5000/items/1 -H 'content-type: application/json' \\
         -d '{"name": "pear", "price": 2.0}'  # the cached page of item 1 is dropped
    curl localhost:5000/cache/stats
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from flask import Flask, abort, request

from cachekit.contrib.flask import Cachekit, cache_view


def create_app(url: str | None = None, namespace: str = "example-flask") -> Flask:
    """Build the app over the cache at ``url`` (default ``$CACHEKIT_URL`` or Redis db 15)."""
    app = Flask(__name__)
    app.config["CACHEKIT_URL"] = url or os.environ.get("CACHEKIT_URL", "redis://127.0.0.1:6379/15")
    app.config["CACHEKIT_NAMESPACE"] = namespace
    app.config["CACHEKIT_TTL"] = 300
    cache = Cachekit(app).cache_for(app)
    # the "database": a dict, and a count of the reads that reached it
    db: dict[int, dict[str, Any]] = {1: {"id": 1, "name": "apple", "price": 1.5}}
    app.config["DB"] = db
    app.config["DB_READS"] = 0

    @app.get("/items/<int:item_id>")
    @cache_view(key="item:{item_id}", ttl=60, vary=["Accept-Language"])
    def read_item(item_id: int) -> dict[str, Any]:
        app.config["DB_READS"] += 1
        if item_id not in db:
            abort(404)  # never cached
        return db[item_id]

    @app.put("/items/<int:item_id>")
    @cache.evicts(key="item:{item_id}")  # after the write: every cached page of the item goes
    def update_item(item_id: int) -> dict[str, Any]:
        body = request.get_json()
        db[item_id] = {"id": item_id, "name": body["name"], "price": float(body["price"])}
        return db[item_id]

    @app.get("/cache/stats")
    def cache_stats() -> dict[str, Any]:
        return dataclasses.asdict(cache.stats())

    return app
