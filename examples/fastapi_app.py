"""FastAPI with cachekit: the cache as a dependency, cached GET responses, a write that evicts.

Run it (Redis on 127.0.0.1:6379, database 15; any cachekit URL works)::

    CACHEKIT_URL=redis://127.0.0.1:6379/15 uvicorn --factory examples.fastapi_app:create_app

    curl -i localhost:8000/items/1          # rendered, then served from the cache (ETag)
    curl -i -X PUT localhost:8000/items/1 -H 'content-type: application/json' \\
         -d '{"name": "pear", "price": 2.0}'  # the cached page of item 1 is dropped
    curl localhost:8000/cache/stats
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import cachekit as ck
from cachekit.contrib.fastapi import CacheDependency, cache_lifespan, cache_response


class ItemIn(BaseModel):
    """The body of a write."""

    name: str
    price: float


class Item(ItemIn):
    """An item as the API returns it."""

    id: int


def create_app(url: str | None = None, namespace: str = "example-fastapi") -> FastAPI:
    """Build the app over the cache at ``url`` (default ``$CACHEKIT_URL`` or Redis db 15)."""
    url = url or os.environ.get("CACHEKIT_URL", "redis://127.0.0.1:6379/15")
    acache = ck.AsyncCache.from_url(url, namespace=namespace, ttl=300)
    # the "database": a dict, and a count of the reads that reached it
    db: dict[int, dict[str, Any]] = {1: {"id": 1, "name": "apple", "price": 1.5}}
    app = FastAPI(lifespan=cache_lifespan(acache))
    app.state.db = db
    app.state.db_reads = 0

    @app.get("/items/{item_id}", response_model=Item)
    @cache_response(acache, key="item:{item_id}", ttl=60, vary=["accept-language"])
    async def read_item(item_id: int) -> dict[str, Any]:
        app.state.db_reads += 1
        if item_id not in db:
            raise HTTPException(status_code=404, detail="no such item")  # never cached
        return db[item_id]

    @app.put("/items/{item_id}", response_model=Item)
    @acache.evicts(key="item:{item_id}")  # after the write: every cached page of the item goes
    async def update_item(item_id: int, item: ItemIn) -> dict[str, Any]:
        db[item_id] = {"id": item_id, **item.model_dump()}
        return db[item_id]

    @app.get("/cache/stats")
    async def cache_stats(cache: CacheDependency) -> dict[str, Any]:
        return dataclasses.asdict(cache.stats())

    return app
