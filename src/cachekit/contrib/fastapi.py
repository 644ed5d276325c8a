"""FastAPI and Starlette: the app's ``AsyncCache`` as a dependency, its lifespan, response caching.

::

    acache = ck.AsyncCache.from_url("redis://127.0.0.1:6379/0", namespace="web", ttl=300)
    app = FastAPI(lifespan=cache_lifespan(acache))       # closes the cache on shutdown

    @app.get("/items/{item_id}")
    @cache_response(key="item:{item_id}", ttl=60)         # GET responses, per query string
    async def read_item(item_id: int, cache: CacheDependency) -> dict: ...

    @app.put("/items/{item_id}")
    @acache.evicts(key="item:{item_id}")                  # drops every cached response of it
    async def update_item(item_id: int, body: Item) -> dict: ...

``cache_response`` works on FastAPI endpoints (any return value; the response
model still applies on every hit) and on plain Starlette endpoints
(``async def endpoint(request) -> Response``). Needs ``starlette`` (and
``fastapi`` for ``CacheDependency``): ``pip install 'cachekit-py[fastapi]'``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from ..aio import AsyncCache
from ..errors import ConfigurationError, SerializationError, ValueTooLargeError
from ..policies import TTLLike
from . import _http

try:
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ConfigurationError(
        "cachekit.contrib.fastapi needs starlette (or fastapi); install it with: "
        "pip install 'cachekit-py[fastapi]'"
    ) from exc

__all__ = ["CacheDependency", "cache_lifespan", "cache_response", "get_cache", "install_cache"]

log = logging.getLogger("cachekit.contrib.fastapi")

F = TypeVar("F", bound=Callable[..., Any])
AppT = TypeVar("AppT")

_STATE_ATTR = "cachekit"
# names of the parameters added to an endpoint that does not declare its own
_REQUEST_PARAM = "cachekit_request__"
_RESPONSE_PARAM = "cachekit_response__"


def install_cache(app: Any, acache: AsyncCache) -> None:
    """Make ``acache`` the cache that ``get_cache`` returns for ``app``'s requests."""
    app.state.cachekit = acache


def cache_lifespan(
    acache: AsyncCache,
    lifespan: Callable[[AppT], AbstractAsyncContextManager[Any]] | None = None,
) -> Callable[[AppT], AbstractAsyncContextManager[Any]]:
    """A lifespan that installs ``acache`` on the app and closes it (``aclose``) on shutdown.

    ``lifespan``, if given, is the app's own lifespan: it runs inside, so it
    can use the cache at startup and shutdown; its state is passed through.
    """

    @asynccontextmanager
    async def run(app: AppT) -> AsyncIterator[Any]:
        install_cache(app, acache)
        try:
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state
        finally:
            await acache.aclose()

    return run


def get_cache(request: Request) -> AsyncCache:
    """The app's ``AsyncCache`` (a dependency: ``cache: AsyncCache = Depends(get_cache)``)."""
    acache = getattr(request.app.state, _STATE_ATTR, None)
    if not isinstance(acache, AsyncCache):
        raise ConfigurationError(
            "no cachekit AsyncCache on this app: pass lifespan=cache_lifespan(acache) "
            "to the app, or call install_cache(app, acache)"
        )
    return acache


def __getattr__(name: str) -> Any:
    # CacheDependency needs FastAPI; Starlette-only apps never touch it
    if name == "CacheDependency":
        from fastapi import Depends

        return typing.Annotated[AsyncCache, Depends(get_cache)]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    #: ``cache: CacheDependency`` in an endpoint's parameters: the app's ``AsyncCache``.
    CacheDependency = AsyncCache


# ---------------------------------------------------------------- response cache


def cache_response(
    acache: AsyncCache | None = None,
    *,
    key: str | None = None,
    ttl: TTLLike = None,
    vary: Sequence[str] = (),
    query: bool = True,
    timer: Callable[[], float] = time.time,
) -> Callable[[F], F]:
    """Cache an endpoint's GET and HEAD responses.

    The response is keyed by ``key`` (a template over the endpoint's
    parameters, such as ``"item:{item_id}"``; default ``"http:<path>"``), the
    query string (unless ``query=False``) and the request headers named in
    ``vary``. Deleting or overwriting the entry ``key`` names (``@acache.evicts``,
    ``@acache.writes``, ``acache.delete``) retires every cached response of it.
    ``acache`` defaults to the app's cache (``get_cache``).

    Honoured: request ``Cache-Control: no-store`` (no read, no store), ``no-cache``
    (no read, store the fresh response) and ``max-age`` (older entries are
    rendered again); response ``no-store``/``no-cache``/``private`` (not stored)
    and ``max-age``/``s-maxage`` (the TTL). Responses get an ``ETag``; a matching
    ``If-None-Match`` is answered ``304``. Only ``200`` responses without
    ``Set-Cookie`` are stored; requests with ``Authorization`` bypass the cache
    unless ``vary`` names it. ``timer`` is the wall clock stored with each entry.
    """
    vary = tuple(h.lower() for h in vary)

    def decorate(func: F) -> F:
        hints = _hints(func)
        sig = inspect.signature(func)
        params = list(sig.parameters.values())
        request_name = _param_of(params, hints, Request)
        response_name = _param_of(params, hints, Response)
        # ``endpoint(request)``: Starlette calls it with the request alone (positionally)
        request_only = request_name is not None and len(params) == 1
        extra: list[inspect.Parameter] = []
        if request_name is None:
            request_name = _REQUEST_PARAM
            extra.append(_kw(_REQUEST_PARAM, Request))
        if response_name is None:
            response_name = _RESPONSE_PARAM
            extra.append(_kw(_RESPONSE_PARAM, Response))
        render_key = _resource_key(func, key, request_only)
        call = _caller(func)

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if args:  # Starlette: endpoint(request), a Response expected back
                request, sub_response = args[0], None
            else:
                request, sub_response = kwargs[request_name], kwargs[response_name]
            own = {k: v for k, v in kwargs.items() if k not in (_REQUEST_PARAM, _RESPONSE_PARAM)}
            view = functools.partial(call, *args, **own)
            if request.method not in _http.CACHEABLE_METHODS or (
                "authorization" in request.headers and "authorization" not in vary
            ):
                return await view()
            cache = acache if acache is not None else get_cache(request)
            resource = render_key(request, own)
            return await _serve(
                cache, request, sub_response, resource, view, ttl, vary, query, timer
            )

        wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[*params, *extra]
        )
        return wrapper  # type: ignore[return-value]

    return decorate


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:  # unresolvable annotations: FastAPI reports them itself
        return {}


def _param_of(params: list[inspect.Parameter], hints: dict[str, Any], cls: type) -> str | None:
    for p in params:
        annotation = hints.get(p.name, p.annotation)
        if isinstance(annotation, type) and issubclass(annotation, cls):
            return p.name
    return None


def _kw(name: str, annotation: type) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation)


def _caller(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    if inspect.iscoroutinefunction(inspect.unwrap(func)):
        return func
    return functools.partial(run_in_threadpool, func)


def _resource_key(
    func: Callable[..., Any], key: str | None, request_only: bool
) -> Callable[[Request, dict[str, Any]], str]:
    if key is None:
        return lambda request, kwargs: "http:" + request.url.path
    if request_only:  # the template names path parameters
        return lambda request, kwargs: key.format_map(request.path_params)
    from ..core.calls import key_builder

    build = key_builder(func, key)
    return lambda request, kwargs: build((), kwargs)


async def _generation(cache: AsyncCache, resource: str) -> str | None:
    """The resource's current generation, created (set-if-absent) if it has none."""
    gen = _http.generation_id(await cache.get(resource))
    if gen is not None:
        return gen
    token = _http.new_generation()
    if await cache.add(resource, token):
        return _http.generation_id(token)
    # another request created it first (or the backend is down: then None, not cached)
    return _http.generation_id(await cache.get(resource))


async def _serve(
    cache: AsyncCache,
    request: Request,
    sub_response: Response | None,
    resource: str,
    view: Callable[[], Awaitable[Any]],
    ttl: TTLLike,
    vary: tuple[str, ...],
    query: bool,
    timer: Callable[[], float],
) -> Any:
    asked = _http.request_directives(
        request.headers.get("cache-control"), request.headers.get("pragma")
    )
    gen = await _generation(cache, resource)
    if gen is None:
        return await view()
    variant = _http.variant_digest(
        request.url.query if query else "", [(h, request.headers.getlist(h)) for h in vary]
    )
    rkey = _http.response_key(resource, gen, variant)
    if_none_match = request.headers.get("if-none-match")
    if not (asked.no_store or asked.no_cache):
        entry = _http.read_entry(await cache.get(rkey))
        if entry is not None and (asked.max_age is None or entry.age(timer()) <= asked.max_age):
            return _replay(entry, sub_response, if_none_match)
    result = await view()
    return await _store(
        cache, rkey, result, sub_response, ttl, vary, timer, if_none_match, not asked.no_store
    )


def _replay(entry: _http.Entry, sub_response: Response | None, if_none_match: str | None) -> Any:
    if _http.etag_matches(if_none_match, entry.etag):
        return _not_modified(entry.etag, entry.headers)
    if entry.body is not None:
        response = Response(content=entry.body, status_code=entry.status)
        response.raw_headers = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in entry.headers
        ]
        response.headers["etag"] = entry.etag
        return response
    if sub_response is None:  # a value entry read by a Starlette endpoint
        return JSONResponse(entry.value, headers={"etag": entry.etag})
    for name, value in entry.headers:
        sub_response.headers.append(name, value)
    sub_response.headers["etag"] = entry.etag
    return entry.value


def _not_modified(etag: str, headers: list[tuple[str, str]]) -> Response:
    kept = {"cache-control", "content-location", "expires", "vary"}
    response = Response(status_code=304, headers={"etag": etag})
    for name, value in headers:
        if name.lower() in kept:
            response.headers.append(name, value)
    return response


async def _store(
    cache: AsyncCache,
    rkey: str,
    result: Any,
    sub_response: Response | None,
    ttl: TTLLike,
    vary: tuple[str, ...],
    timer: Callable[[], float],
    if_none_match: str | None,
    may_store: bool,
) -> Any:
    if isinstance(result, Response):
        if isinstance(result, StreamingResponse) or result.status_code != 200:
            return result
        body = bytes(result.body)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in result.raw_headers]
        headers = [(k, v) for k, v in headers if k.lower() != "etag"]
        etag = _http.etag_for(body)
        entry = _http.make_entry(stored_at=timer(), etag=etag, headers=headers, body=body)
        result.headers["etag"] = etag
        response: Any = result
    else:
        if sub_response is None or sub_response.status_code not in (None, 200):
            return result
        from fastapi.encoders import jsonable_encoder

        value = jsonable_encoder(result)
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in sub_response.raw_headers
            if k.lower() != b"etag"
        ]
        etag = _http.etag_for(_http.canonical_json(value))
        entry = _http.make_entry(stored_at=timer(), etag=etag, headers=headers, value=value)
        sub_response.headers["etag"] = etag
        response = value
    storable, seconds = _http.response_ttl(
        dict((k.lower(), v) for k, v in headers).get("cache-control"), None
    )
    if may_store and storable and _http.replayable(headers, vary):
        try:
            await cache.set(rkey, entry, ttl if seconds is None else seconds)
        except (SerializationError, ValueTooLargeError) as exc:
            log.warning("cachekit: response for %r not cached: %s", rkey, exc)
    if _http.etag_matches(if_none_match, etag):
        return _not_modified(etag, headers)
    return response
