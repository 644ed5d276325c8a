"""Flask helpers: the extension, its config and close, the view cache (real Redis, test client)."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from examples.flask_app import create_app
from flask import Flask, make_response, session

import cachekit as ck
from cachekit.contrib.flask import Cachekit, cache_view, get_cache
from tests.conftest import FakeClock


class Counting:
    """A tiny Flask app around one cached view that counts its renders."""

    def __init__(self, cache: ck.Cache, **options: Any) -> None:
        self.renders = 0
        self.headers: dict[str, str] = {}
        self.value: dict[str, Any] = {"n": 1}
        self.app = Flask(__name__)
        self.app.secret_key = "test"
        self.touch_session = False
        Cachekit(self.app, cache=cache)

        @self.app.get("/things/<int:thing_id>")
        @cache_view(key="thing:{thing_id}", **options)
        def thing(thing_id: int) -> Any:
            self.renders += 1
            if self.touch_session:
                session["seen"] = True
            response = make_response({"id": thing_id, **self.value})
            for k, v in self.headers.items():
                response.headers[k] = v
            return response


def test_example_app_caches_reads_and_a_write_evicts_them(redis_url: str, namespace: str) -> None:
    app = create_app(redis_url, namespace=namespace)
    client = app.test_client()
    first = client.get("/items/1")
    assert first.status_code == 200
    assert first.get_json() == {"id": 1, "name": "apple", "price": 1.5}
    again = client.get("/items/1")
    assert again.get_json() == first.get_json()
    assert again.headers["ETag"] == first.headers["ETag"]
    assert app.config["DB_READS"] == 1
    client.get("/items/1", headers={"Accept-Language": "fr"})
    client.get("/items/1?x=1")
    assert app.config["DB_READS"] == 3
    assert client.put("/items/1", json={"name": "pear", "price": 2.0}).status_code == 200
    after = client.get("/items/1")
    assert after.get_json() == {"id": 1, "name": "pear", "price": 2.0}
    assert after.headers["ETag"] != first.headers["ETag"]
    assert client.get("/items/1", headers={"Accept-Language": "fr"}).get_json()["name"] == "pear"
    assert app.config["DB_READS"] == 5
    assert client.get("/items/2").status_code == 404
    client.get("/items/2")
    assert app.config["DB_READS"] == 7  # errors are never cached
    stats = client.get("/cache/stats").get_json()
    assert stats["namespace"] == namespace
    assert stats["hits"] >= 1
    Cachekit.close(app)


def test_config_builds_the_cache(redis_url: str, namespace: str) -> None:
    app = Flask(__name__)
    app.config.update(
        CACHEKIT_URL=redis_url,
        CACHEKIT_NAMESPACE=namespace,
        CACHEKIT_TTL=42,
        CACHEKIT_OPTIONS={"fail_open": False},
    )
    ext = Cachekit()
    cache = ext.init_app(app)
    assert get_cache(app) is cache
    with app.app_context():
        assert get_cache() is cache
    assert cache.namespace == namespace
    assert cache.policy.ttl.seconds == 42
    assert cache.fail_open is False
    cache.set("k", 1)
    assert cache.get("k") == 1
    with pytest.raises(ck.ConfigurationError, match="already"):
        ext.init_app(app)
    Cachekit.close(app)

    bare = Flask("bare")
    cache = Cachekit(bare).cache_for(bare)
    assert cache.namespace == "bare"
    assert type(cache.backend).__name__ == "MemoryBackend"
    with pytest.raises(ck.ConfigurationError, match="Cachekit"):
        get_cache(Flask("none"))


def test_the_cache_is_closed_with_the_app(namespace: str) -> None:
    closed: list[bool] = []

    class Tracked(ck.Cache):
        def close(self) -> None:
            closed.append(True)
            super().close()

    app = Flask(__name__)
    Cachekit(app, cache=Tracked.from_url("memory://", namespace=namespace))
    del app
    gc.collect()
    assert closed == [True]


def test_if_none_match_gets_304(redis_url: str, namespace: str) -> None:
    t = Counting(ck.Cache.from_url(redis_url, namespace=namespace))
    client = t.app.test_client()
    etag = client.get("/things/1").headers["ETag"]
    hit = client.get("/things/1", headers={"If-None-Match": etag})
    assert hit.status_code == 304
    assert hit.data == b""
    assert hit.headers["ETag"] == etag
    assert client.get("/things/1", headers={"If-None-Match": '"x"'}).status_code == 200
    assert t.renders == 1
    assert client.get("/things/2", headers={"If-None-Match": "*"}).status_code == 304
    assert t.renders == 2


def test_request_cache_control(redis_url: str, namespace: str) -> None:
    clock = FakeClock()
    t = Counting(ck.Cache.from_url(redis_url, namespace=namespace), timer=clock)
    client = t.app.test_client()
    client.get("/things/1")
    t.value = {"n": 2}
    assert client.get("/things/1", headers={"Cache-Control": "no-store"}).get_json()["n"] == 2
    assert client.get("/things/1").get_json()["n"] == 1
    clock.advance(10)
    assert client.get("/things/1", headers={"Cache-Control": "max-age=20"}).get_json()["n"] == 1
    assert client.get("/things/1", headers={"Cache-Control": "max-age=5"}).get_json()["n"] == 2
    t.value = {"n": 3}
    assert client.get("/things/1", headers={"Cache-Control": "no-cache"}).get_json()["n"] == 3
    assert client.get("/things/1").get_json()["n"] == 3
    assert t.renders == 4


def test_response_cache_control_cookies_and_session(clock: FakeClock, namespace: str) -> None:
    cache = ck.Cache.from_url("memory://", namespace=namespace, timer=clock)
    t = Counting(cache, ttl=100)
    client = t.app.test_client()
    for header in ("no-store", "private, max-age=60", "no-cache", "max-age=0"):
        t.headers = {"Cache-Control": header}
        client.get("/things/1")
        client.get("/things/1")
    assert t.renders == 8
    t.headers = {"Set-Cookie": "a=b"}
    client.get("/things/2")
    client.get("/things/2")
    assert t.renders == 10
    t.headers = {}
    t.touch_session = True  # a page that reads or writes the session is personal
    client.get("/things/3")
    client.get("/things/3")
    assert t.renders == 12
    t.touch_session = False
    t.headers = {"Cache-Control": "max-age=5"}
    client.get("/things/4")
    assert client.get("/things/4").headers["Cache-Control"] == "max-age=5"
    assert t.renders == 13
    clock.advance(6)
    client.get("/things/4")
    assert t.renders == 14
    t.headers = {}
    client.get("/things/5")
    clock.advance(99)
    client.get("/things/5")
    assert t.renders == 15
    clock.advance(2)
    client.get("/things/5")
    assert t.renders == 16


def test_authorization_bypasses_unless_varied(redis_url: str, namespace: str) -> None:
    plain = Counting(ck.Cache.from_url(redis_url, namespace=namespace))
    varied = Counting(
        ck.Cache.from_url(redis_url, namespace=namespace + "v"), vary=["Authorization"]
    )
    for t in (plain, varied):
        for _ in range(2):
            t.app.test_client().get("/things/1", headers={"Authorization": "Bearer a"})
    assert (plain.renders, varied.renders) == (2, 1)
    varied.app.test_client().get("/things/1", headers={"Authorization": "Bearer b"})
    assert varied.renders == 2


def test_write_through_writer_retires_cached_pages(redis_url: str, namespace: str) -> None:
    cache = ck.Cache.from_url(redis_url, namespace=namespace, policy=ck.WriteThrough())
    t = Counting(cache)

    @t.app.put("/things/<int:thing_id>")
    @cache.writes(key="thing:{thing_id}")
    def put(thing_id: int) -> dict[str, Any]:
        from flask import request

        t.value = {"n": int(request.args["n"])}
        return {"id": thing_id, **t.value}

    client = t.app.test_client()
    assert client.get("/things/1").get_json()["n"] == 1
    client.put("/things/1?n=7")
    assert client.get("/things/1").get_json()["n"] == 7
    assert client.get("/things/1").get_json()["n"] == 7
    client.put("/things/1?n=8")
    assert client.get("/things/1").get_json()["n"] == 8
    assert t.renders == 3


def test_a_write_during_a_render_is_not_hidden_by_it(redis_url: str, namespace: str) -> None:
    """A response rendered from data older than a write is never served after that write."""
    cache = ck.Cache.from_url(redis_url, namespace=namespace)
    app = Flask(__name__)
    Cachekit(app, cache=cache)
    db = {"n": 1}
    race = [True]

    @app.get("/race")
    @cache_view(key="race")
    def read() -> dict[str, int]:
        n = db["n"]  # the render has read the old data ...
        if race:
            race.clear()
            db["n"] = 2  # ... when a writer commits and evicts, before the response is stored
            cache.delete("race")
        return {"n": n}

    client = app.test_client()
    assert client.get("/race").get_json() == {"n": 1}
    assert client.get("/race").get_json() == {"n": 2}
    assert client.get("/race").get_json() == {"n": 2}


def test_default_key_methods_and_bad_templates(redis_url: str, namespace: str) -> None:
    cache = ck.Cache.from_url(redis_url, namespace=namespace)
    app = Flask(__name__)
    Cachekit(app, cache=cache)
    calls: list[str] = []

    @app.route("/x", methods=["GET", "POST"])
    @cache_view()
    def x() -> str:
        from flask import request

        calls.append(request.method)
        return request.method

    @app.get("/bad/<name>")
    @cache_view(key="bad:{nope}")
    def bad(name: str) -> str:
        return name

    client = app.test_client()
    for _ in range(2):
        assert client.post("/x").data == b"POST"
        assert client.get("/x").data == b"GET"
    assert calls == ["POST", "GET", "POST"]
    cache.delete("http:/x")  # the default resource key
    client.get("/x")
    assert calls == ["POST", "GET", "POST", "GET"]
    app.testing = True
    with pytest.raises(ck.ConfigurationError, match="nope"):
        client.get("/bad/a")


def test_backend_down_falls_through_to_the_view(namespace: str) -> None:
    t = Counting(ck.Cache.from_url("redis://127.0.0.1:1/0", namespace=namespace))
    client = t.app.test_client()
    for _ in range(3):
        assert client.get("/things/1").status_code == 200
    assert t.renders == 3


def test_each_request_counts_the_generation_and_the_response_lookups(namespace: str) -> None:
    cache = ck.Cache.from_url("memory://", namespace=namespace)
    client = Counting(cache).app.test_client()
    client.get("/things/1")
    st = cache.stats()
    assert (st.hits, st.misses, st.loads) == (0, 2, 0)  # no generation yet, no response
    client.get("/things/1")
    st = cache.stats()
    assert (st.hits, st.misses) == (2, 2)
