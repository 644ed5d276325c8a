"""Flask: a ``Cachekit`` extension configured from ``app.config``, and a view cache decorator.

::

    app.config["CACHEKIT_URL"] = "redis://127.0.0.1:6379/0"
    cachekit = Cachekit(app)                       # or Cachekit() + cachekit.init_app(app)
    cache = cachekit.cache_for(app)                # the app's ck.Cache

    @app.get("/items/<int:item_id>")
    @cache_view(key="item:{item_id}", ttl=60)     # GET responses, per query string
    def read_item(item_id): ...

    @app.put("/items/<int:item_id>")
    @cache.evicts(key="item:{item_id}")           # drops every cached response of it
    def update_item(item_id): ...

Needs Flask: ``pip install 'cachekit-py[flask]'``.
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..cache import Cache
from ..errors import ConfigurationError, SerializationError, ValueTooLargeError
from ..policies import TTLLike
from . import _http

try:
    from flask import Flask, current_app, request
    from flask.globals import request_ctx
    from flask.wrappers import Response
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ConfigurationError(
        "cachekit.contrib.flask needs Flask; install it with: pip install 'cachekit-py[flask]'"
    ) from exc

__all__ = ["Cachekit", "cache_view", "get_cache"]

log = logging.getLogger("cachekit.contrib.flask")

F = TypeVar("F", bound=Callable[..., Any])

_EXTENSION = "cachekit"


class Cachekit:
    """The Flask extension: one ``Cache`` per app, built from ``app.config``.

    Config keys: ``CACHEKIT_URL`` (default ``memory://``), ``CACHEKIT_NAMESPACE``
    (default the app's import name), ``CACHEKIT_TTL`` (seconds; default the
    policy's), ``CACHEKIT_OPTIONS`` (a dict of further ``Cache.from_url``
    keywords). Or pass a ready ``cache=``. The cache is closed by ``close(app)``,
    or when the app is garbage collected or the process exits.
    """

    def __init__(self, app: Flask | None = None, *, cache: Cache | None = None) -> None:
        self._cache = cache
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, cache: Cache | None = None) -> Cache:
        """Build (or take) the app's cache and register it on ``app.extensions``."""
        if _EXTENSION in app.extensions:
            raise ConfigurationError(f"cachekit is already set up on app {app.import_name!r}")
        cache = cache or self._cache or _from_config(app)
        app.extensions[_EXTENSION] = cache
        # no app shutdown hook in Flask: close when the app goes away or at exit
        weakref.finalize(app, cache.close)
        return cache

    @staticmethod
    def cache_for(app: Flask | None = None) -> Cache:
        """The cache of ``app`` (default: the current app)."""
        return get_cache(app)

    @staticmethod
    def close(app: Flask | None = None) -> None:
        """Close the cache of ``app`` (default: the current app)."""
        get_cache(app).close()


def _from_config(app: Flask) -> Cache:
    config = app.config
    options = dict(config.get("CACHEKIT_OPTIONS") or {})
    return Cache.from_url(
        config.get("CACHEKIT_URL", "memory://"),
        namespace=config.get("CACHEKIT_NAMESPACE", app.import_name),
        ttl=config.get("CACHEKIT_TTL"),
        **options,
    )


def get_cache(app: Flask | None = None) -> Cache:
    """The ``Cache`` of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    cache = target.extensions.get(_EXTENSION)
    if not isinstance(cache, Cache):
        raise ConfigurationError(
            "no cachekit cache on this app: call Cachekit(app) or Cachekit().init_app(app)"
        )
    return cache


def cache_view(
    cache: Cache | None = None,
    *,
    key: str | None = None,
    ttl: TTLLike = None,
    vary: Sequence[str] = (),
    query: bool = True,
    timer: Callable[[], float] = time.time,
) -> Callable[[F], F]:
    """Cache a view's GET and HEAD responses.

    The response is keyed by ``key`` (a template over the view's URL variables,
    such as ``"item:{item_id}"``; default ``"http:<path>"``), the query string
    (unless ``query=False``) and the request headers named in ``vary``. Deleting
    or overwriting the entry ``key`` names (``@cache.evicts``, ``@cache.writes``,
    ``cache.delete``) retires every cached response of it. ``cache`` defaults to
    the app's (``get_cache``).

    Honoured: request ``Cache-Control: no-store`` / ``no-cache`` / ``max-age``;
    response ``no-store`` / ``no-cache`` / ``private`` (not stored) and
    ``max-age`` / ``s-maxage`` (the TTL). Responses get an ``ETag``; a matching
    ``If-None-Match`` is answered ``304``. Only ``200`` responses that set no
    cookie and did not touch the session are stored (unless ``vary`` names
    ``Cookie``); requests with ``Authorization`` bypass the cache unless ``vary``
    names it. ``timer`` is the wall clock stored with each entry.
    """
    vary = tuple(h.lower() for h in vary)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if request.method not in _http.CACHEABLE_METHODS or (
                "authorization" in request.headers and "authorization" not in vary
            ):
                return view(*args, **kwargs)
            if key is None:
                resource = "http:" + request.path
            else:
                try:
                    resource = key.format_map(kwargs)
                except (KeyError, IndexError) as exc:
                    raise ConfigurationError(
                        f"key template {key!r} names {exc}, which is not a URL variable of "
                        f"this view (variables: {', '.join(kwargs) or 'none'})"
                    ) from None
            return _serve(
                cache if cache is not None else get_cache(),
                resource,
                functools.partial(view, *args, **kwargs),
                ttl,
                vary,
                query,
                timer,
            )

        return wrapper  # type: ignore[return-value]

    return decorate


def _generation(cache: Cache, resource: str) -> str | None:
    """The resource's current generation, created (set-if-absent) if it has none."""
    gen = _http.generation_id(cache.get(resource))
    if gen is not None:
        return gen
    token = _http.new_generation()
    if cache.add(resource, token):
        return _http.generation_id(token)
    return _http.generation_id(cache.get(resource))


def _serve(
    cache: Cache,
    resource: str,
    view: Callable[[], Any],
    ttl: TTLLike,
    vary: tuple[str, ...],
    query: bool,
    timer: Callable[[], float],
) -> Any:
    asked = _http.request_directives(
        request.headers.get("Cache-Control"), request.headers.get("Pragma")
    )
    gen = _generation(cache, resource)  # before rendering: see _http
    if gen is None:  # the backend is down: render, cache nothing
        return view()
    variant = _http.variant_digest(
        request.query_string.decode("latin-1") if query else "",
        [(h, request.headers.getlist(h)) for h in vary],
    )
    rkey = _http.response_key(resource, gen, variant)
    if_none_match = request.headers.get("If-None-Match")
    if not (asked.no_store or asked.no_cache):
        entry = _http.read_entry(cache.get(rkey))
        if (
            entry is not None
            and entry.body is not None
            and (asked.max_age is None or entry.age(timer()) <= asked.max_age)
        ):
            if _http.etag_matches(if_none_match, entry.etag):
                return _not_modified(entry.etag, entry.headers)
            response = current_app.response_class(
                entry.body, status=entry.status, headers=entry.headers
            )
            response.headers["ETag"] = entry.etag
            return response
    response = current_app.make_response(view())
    if response.status_code != 200 or response.is_streamed or response.direct_passthrough:
        return response
    body = response.get_data()
    headers = [(k, v) for k, v in response.headers.items() if k.lower() != "etag"]
    etag = _http.etag_for(body)
    response.headers["ETag"] = etag
    storable, seconds = _http.response_ttl(response.headers.get("Cache-Control"), None)
    personal = "cookie" not in vary and _session_accessed()
    if not asked.no_store and storable and not personal and _http.replayable(headers, vary):
        entry_data = _http.make_entry(stored_at=timer(), etag=etag, headers=headers, body=body)
        try:
            cache.set(rkey, entry_data, ttl if seconds is None else seconds)
        except (SerializationError, ValueTooLargeError) as exc:
            log.warning("cachekit: response for %r not cached: %s", rkey, exc)
    if _http.etag_matches(if_none_match, etag):
        return _not_modified(etag, headers)
    return response


def _session_accessed() -> bool:
    """Whether this request has used the session (Flask adds ``Vary: Cookie`` after us then).

    Read from the request context directly: the ``session`` proxy itself marks
    the session as accessed.
    """
    opened = getattr(request_ctx, "_session", None)
    return opened is not None and bool(getattr(opened, "accessed", True))


def _not_modified(etag: str, headers: list[tuple[str, str]]) -> Response:
    kept = {"cache-control", "content-location", "expires", "vary"}
    response: Response = current_app.response_class(status=304)
    response.headers["ETag"] = etag
    for name, value in headers:
        if name.lower() in kept:
            response.headers.add(name, value)
    return response
