"""FastAPI / Starlette helpers: dependency, lifespan, response cache (real Redis, httpx)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from examples.fastapi_app import create_app
from fastapi import FastAPI, Response
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import cachekit as ck
from cachekit.contrib.fastapi import CacheDependency, cache_lifespan, cache_response, get_cache
from tests.conftest import FakeClock


def run(app: Any, body: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    """Run ``body`` with a client on ``app``, inside the app's lifespan."""

    async def main() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                await body(client)

    asyncio.run(main())


class Counting:
    """A tiny app around one cached endpoint that counts its renders."""

    def __init__(self, acache: ck.AsyncCache, **options: Any) -> None:
        self.renders = 0
        self.headers: dict[str, str] = {}
        self.value: dict[str, Any] = {"n": 1}
        self.app = FastAPI(lifespan=cache_lifespan(acache))

        @self.app.get("/things/{thing_id}")
        @cache_response(key="thing:{thing_id}", **options)
        async def thing(thing_id: int, response: Response, q: str = "") -> dict[str, Any]:
            self.renders += 1
            for k, v in self.headers.items():
                response.headers[k] = v
            return {"id": thing_id, "q": q, **self.value}


def test_example_app_caches_reads_and_a_write_evicts_them(redis_url: str, namespace: str) -> None:
    app = create_app(redis_url, namespace=namespace)

    async def body(client: httpx.AsyncClient) -> None:
        first = await client.get("/items/1")
        assert first.status_code == 200
        assert first.json() == {"id": 1, "name": "apple", "price": 1.5}
        again = await client.get("/items/1")
        assert again.json() == first.json()
        assert app.state.db_reads == 1
        assert again.headers["etag"] == first.headers["etag"]
        # another language is another variant; the query string too
        await client.get("/items/1", headers={"accept-language": "fr"})
        await client.get("/items/1?x=1")
        assert app.state.db_reads == 3
        put = await client.put("/items/1", json={"name": "pear", "price": 2.0})
        assert put.status_code == 200
        after = await client.get("/items/1")
        assert after.json() == {"id": 1, "name": "pear", "price": 2.0}
        assert after.headers["etag"] != first.headers["etag"]
        fr = await client.get("/items/1", headers={"accept-language": "fr"})
        assert fr.json()["name"] == "pear"  # every variant of the item was retired
        assert app.state.db_reads == 5
        missing = await client.get("/items/2")
        assert missing.status_code == 404
        await client.get("/items/2")
        assert app.state.db_reads == 7  # errors are never cached
        stats = (await client.get("/cache/stats")).json()
        assert stats["namespace"] == namespace
        assert stats["hits"] >= 1

    run(app, body)


def test_if_none_match_gets_304_without_a_body(redis_url: str, namespace: str) -> None:
    t = Counting(ck.AsyncCache.from_url(redis_url, namespace=namespace))

    async def body(client: httpx.AsyncClient) -> None:
        etag = (await client.get("/things/1")).headers["etag"]
        hit = await client.get("/things/1", headers={"if-none-match": etag})
        assert hit.status_code == 304
        assert hit.content == b""
        assert hit.headers["etag"] == etag
        other = await client.get("/things/1", headers={"if-none-match": '"nope"'})
        assert other.status_code == 200
        assert t.renders == 1
        # a fresh render answers 304 too when the client already has it
        fresh = await client.get("/things/2", headers={"if-none-match": "*"})
        assert fresh.status_code == 304
        assert t.renders == 2

    run(t.app, body)


def test_request_cache_control(redis_url: str, namespace: str) -> None:
    clock = FakeClock()
    t = Counting(ck.AsyncCache.from_url(redis_url, namespace=namespace), timer=clock)

    async def body(client: httpx.AsyncClient) -> None:
        await client.get("/things/1")
        t.value = {"n": 2}
        # no-store: rendered, and the cached entry stays as it was
        r = await client.get("/things/1", headers={"cache-control": "no-store"})
        assert r.json()["n"] == 2
        assert (await client.get("/things/1")).json()["n"] == 1
        assert t.renders == 2
        # max-age: an entry older than asked for is rendered again (and replaces it)
        clock.advance(10)
        assert (await client.get("/things/1", headers={"cache-control": "max-age=20"})).json()[
            "n"
        ] == 1
        assert (await client.get("/things/1", headers={"cache-control": "max-age=5"})).json()[
            "n"
        ] == 2
        assert t.renders == 3
        # no-cache: rendered now, and stored for the next reader
        t.value = {"n": 3}
        assert (await client.get("/things/1", headers={"pragma": "no-cache"})).json()["n"] == 3
        assert (await client.get("/things/1")).json()["n"] == 3
        assert t.renders == 4

    run(t.app, body)


def test_response_cache_control_and_cookies(clock: FakeClock, namespace: str) -> None:
    acache = ck.AsyncCache.from_url("memory://", namespace=namespace, timer=clock)
    t = Counting(acache, ttl=100)

    async def body(client: httpx.AsyncClient) -> None:
        for header in ("no-store", "private, max-age=60", "no-cache", "max-age=0"):
            t.headers = {"cache-control": header}
            await client.get("/things/1")
            await client.get("/things/1")
        assert t.renders == 8  # none of them stored
        t.headers = {"set-cookie": "session=abc"}
        await client.get("/things/2")
        await client.get("/things/2")
        assert t.renders == 10
        t.headers = {"vary": "cookie"}  # varies on a header the key does not carry
        await client.get("/things/3")
        await client.get("/things/3")
        assert t.renders == 12
        # max-age sets the TTL (memory backend on the fake clock), and is replayed on hits
        t.headers = {"cache-control": "max-age=5"}
        await client.get("/things/4")
        hit = await client.get("/things/4")
        assert hit.headers["cache-control"] == "max-age=5"
        assert t.renders == 13
        clock.advance(6)
        await client.get("/things/4")
        assert t.renders == 14
        # without one, the decorator's ttl
        t.headers = {}
        await client.get("/things/5")
        clock.advance(99)
        await client.get("/things/5")
        assert t.renders == 15
        clock.advance(2)
        await client.get("/things/5")
        assert t.renders == 16

    run(t.app, body)


def test_authorization_bypasses_unless_varied(redis_url: str, namespace: str) -> None:
    plain = Counting(ck.AsyncCache.from_url(redis_url, namespace=namespace))
    varied = Counting(
        ck.AsyncCache.from_url(redis_url, namespace=namespace + "v"), vary=["Authorization"]
    )

    async def body(client: httpx.AsyncClient) -> None:
        for _ in range(2):
            await client.get("/things/1", headers={"authorization": "Bearer a"})

    run(plain.app, body)
    run(varied.app, body)
    assert plain.renders == 2
    assert varied.renders == 1

    async def other_user(client: httpx.AsyncClient) -> None:
        await client.get("/things/1", headers={"authorization": "Bearer b"})

    run(varied.app, other_user)
    assert varied.renders == 2


def test_write_through_writer_retires_cached_pages(redis_url: str, namespace: str) -> None:
    acache = ck.AsyncCache.from_url(redis_url, namespace=namespace, policy=ck.WriteThrough())
    t = Counting(acache)

    @t.app.put("/things/{thing_id}")
    @acache.writes(key="thing:{thing_id}")
    async def put(thing_id: int, n: int) -> dict[str, Any]:
        t.value = {"n": n}
        return {"id": thing_id, "n": n}

    async def body(client: httpx.AsyncClient) -> None:
        assert (await client.get("/things/1")).json()["n"] == 1
        await client.put("/things/1?n=7")
        assert (await client.get("/things/1")).json()["n"] == 7
        assert (await client.get("/things/1")).json()["n"] == 7
        await client.put("/things/1?n=8")
        assert (await client.get("/things/1")).json()["n"] == 8
        assert t.renders == 3

    run(t.app, body)


def test_a_write_during_a_render_is_not_hidden_by_it(redis_url: str, namespace: str) -> None:
    """A response rendered from data older than a write is never served after that write."""
    acache = ck.AsyncCache.from_url(redis_url, namespace=namespace)
    app = FastAPI(lifespan=cache_lifespan(acache))
    db = {"n": 1}
    race = [True]

    @app.get("/race")
    @cache_response(key="race")
    async def read() -> dict[str, int]:
        n = db["n"]  # the render has read the old data ...
        if race:
            race.clear()
            db["n"] = 2  # ... when a writer commits and evicts, before the response is stored
            await acache.delete("race")
        return {"n": n}

    async def body(client: httpx.AsyncClient) -> None:
        assert (await client.get("/race")).json() == {"n": 1}
        assert (await client.get("/race")).json() == {"n": 2}
        assert (await client.get("/race")).json() == {"n": 2}

    run(app, body)


def test_starlette_endpoint_responses_are_cached(redis_url: str, namespace: str) -> None:
    acache = ck.AsyncCache.from_url(redis_url, namespace=namespace)
    renders: list[str] = []

    @cache_response(key="page:{name}")
    async def page(request: Request) -> PlainTextResponse:
        renders.append(request.path_params["name"])
        return PlainTextResponse(f"hello {request.path_params['name']}", headers={"x-a": "1"})

    @cache_response()
    async def cookie(request: Request) -> PlainTextResponse:
        renders.append("cookie")
        response = PlainTextResponse("c")
        response.set_cookie("s", "1")
        return response

    app = Starlette(
        routes=[Route("/pages/{name}", page), Route("/cookie", cookie)],
        lifespan=cache_lifespan(acache),
    )

    async def body(client: httpx.AsyncClient) -> None:
        a = await client.get("/pages/ann")
        b = await client.get("/pages/ann")
        assert (a.text, b.text) == ("hello ann", "hello ann")
        assert b.headers["x-a"] == "1"
        assert b.headers["content-type"].startswith("text/plain")
        assert a.headers["etag"] == b.headers["etag"]
        assert (
            await client.get("/pages/ann", headers={"if-none-match": a.headers["etag"]})
        ).status_code == 304
        await acache.delete("page:ann")
        await client.get("/pages/ann")
        await client.get("/cookie")
        await client.get("/cookie")
        assert renders == ["ann", "ann", "cookie", "cookie"]

    run(app, body)


def test_only_get_and_head_are_cached_and_sync_endpoints_work(
    redis_url: str, namespace: str
) -> None:
    acache = ck.AsyncCache.from_url(redis_url, namespace=namespace)
    app = FastAPI(lifespan=cache_lifespan(acache))
    calls: list[str] = []

    @app.api_route("/x", methods=["GET", "POST"])
    @cache_response()
    def x(request: Request) -> dict[str, str]:  # a plain def: run in the thread pool
        calls.append(request.method)
        return {"m": request.method}

    async def body(client: httpx.AsyncClient) -> None:
        for _ in range(2):
            assert (await client.post("/x")).json() == {"m": "POST"}
            assert (await client.get("/x")).json() == {"m": "GET"}

    run(app, body)
    assert calls == ["POST", "GET", "POST"]


def test_dependency_and_lifespan(namespace: str) -> None:
    closed: list[bool] = []

    class Tracked(ck.AsyncCache):
        async def aclose(self) -> None:
            closed.append(True)
            await super().aclose()

    acache = Tracked.from_url("memory://", namespace=namespace)
    app = FastAPI(lifespan=cache_lifespan(acache))

    @app.get("/ns")
    async def ns(cache: CacheDependency) -> str:
        return cache.namespace

    async def body(client: httpx.AsyncClient) -> None:
        assert (await client.get("/ns")).json() == namespace
        assert not closed

    run(app, body)
    assert closed == [True]

    bare = FastAPI()

    @bare.get("/")
    async def root(request: Request) -> str:
        return get_cache(request).namespace

    async def missing(client: httpx.AsyncClient) -> None:
        with pytest.raises(ck.ConfigurationError, match="cache_lifespan"):
            await client.get("/")

    run(bare, missing)


def test_backend_down_falls_through_to_the_endpoint(namespace: str) -> None:
    # nothing listens on port 1: every request renders, none fails
    acache = ck.AsyncCache.from_url("redis://127.0.0.1:1/0", namespace=namespace)
    t = Counting(acache)

    async def body(client: httpx.AsyncClient) -> None:
        for _ in range(3):
            assert (await client.get("/things/1")).status_code == 200

    run(t.app, body)
    assert t.renders == 3


def test_each_request_counts_the_generation_and_the_response_lookups(namespace: str) -> None:
    acache = ck.AsyncCache.from_url("memory://", namespace=namespace)
    t = Counting(acache)

    async def body(client: httpx.AsyncClient) -> None:
        await client.get("/things/1")
        st = acache.stats()
        assert (st.hits, st.misses, st.loads) == (0, 2, 0)  # no generation yet, no response
        await client.get("/things/1")
        st = acache.stats()
        assert (st.hits, st.misses) == (2, 2)

    run(t.app, body)


# ---------------------------------------------------------------- the shared HTTP rules


def test_http_rules() -> None:
    from cachekit.contrib import _http

    d = _http.request_directives('max-age="7", No-Cache', None)
    assert (d.max_age, d.no_cache, d.no_store) == (7, True, False)
    assert _http.request_directives("max-age=abc", None).max_age == 0  # malformed: stale
    assert _http.request_directives(None, "no-cache").no_cache
    assert not _http.request_directives("max-age=5", "no-cache").no_cache  # Cache-Control wins
    assert _http.response_ttl("public, max-age=60, s-maxage=30", 9) == (True, 30.0)
    assert _http.response_ttl("max-age=60", 9) == (True, 60.0)
    assert _http.response_ttl(None, 9) == (True, 9)
    assert _http.response_ttl("PRIVATE", 9) == (False, None)
    assert _http.etag_matches('W/"a", "b"', '"a"')
    assert _http.etag_matches('"b"', 'W/"b"')
    assert not _http.etag_matches('"a"', '"b"')
    assert not _http.etag_matches(None, '"b"')
    assert _http.variant_digest("a=1&b=2", []) == _http.variant_digest("b=2&a=1", [])
    assert _http.variant_digest("a=1", []) != _http.variant_digest("a=1", [("x", ["1"])])
    assert _http.variant_digest("", [("X", ["1"])]) == _http.variant_digest("", [("x", ["1"])])
    assert not _http.replayable([("Vary", "*")], ())
    assert not _http.replayable([("Vary", "Cookie")], ("accept",))
    assert _http.replayable([("Vary", "Accept, Cookie")], ("accept", "cookie"))
    assert _http.generation_id(None) is None
    token = _http.new_generation()
    assert _http.generation_id(token) != _http.generation_id(_http.new_generation())
    assert _http.generation_id({"b": 1, "a": 2}) == _http.generation_id({"a": 2, "b": 1})
    assert _http.generation_id({"a": 1}) != _http.generation_id({"a": 2})
    assert _http.read_entry({"v": 99}) is None
    assert _http.read_entry({"v": 1, "t": "x"}) is None
    entry = _http.make_entry(stored_at=5.0, etag='"e"', headers=[("a", "b")], body=b"\x00\xff")
    back = _http.read_entry(entry)
    assert back is not None and back.body == b"\x00\xff" and back.headers == [("a", "b")]
    assert back.age(4.0) == 0.0 and back.age(7.5) == 2.5
