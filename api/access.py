"""Who may call what, and in which class. Every route names its audience with one of
these dependencies, and the routes that are not plain reads name their class too.

Audience. ``Public``: anyone, no key (health, the catalogue, the open map data, tracking).
Every other route names the capability it needs (``twin.keys.CAPABILITIES``: report,
handle_incidents, dispatch, configure_incidents, edit_layers, evaluate, manage_keys) with
``Allowed(capability)``; the caller's key (``X-API-Key``) must give a role that has it.
Keys are made with ``twin keys`` or ``/keys`` and stored hashed; those of ``TWIN_API_KEYS``
are admin keys. A key's holder is remembered for ``KEY_CACHE_S`` seconds per process, so
a revoked key stops working at once in the process that revoked it and within that time
in the others.

Class, so that heavy public reads can never lock dispatch out:

- ``Operational``: dispatch's questions (``/locate``, ``/nearest``) and ``/health``; every
  ``staff`` route is operational too unless it is marked ``Heavy``. They take connections
  from a pool of their own (``TWIN_OPERATIONAL_POOL_SIZE``) and, when async, threads of
  their own: public load cannot use them up.
- ``Heavy``: area questions and bulk work (``/within``, ``/below``, imports; items pages
  above ``HEAVY_PAGE`` features): at most ``TWIN_HEAVY_CONCURRENCY`` at once; the others
  wait their turn up to ``TWIN_HEAVY_QUEUE_S`` and are then refused with 503 and
  ``Retry-After``.
- unmarked public routes are light reads (the catalogue, collections, a page of items):
  the shared pool, with no queue of their own.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from fastapi import Depends, Header, Request
from fastapi.routing import APIRoute

from twin import keys
from twin.errors import Forbidden, TwinError

HEAVY_PAGE = 1000  # items pages larger than this are heavy (GDAL's pages of 1,000 are not)
KEY_CACHE_S = 5.0
KEY_CACHE_SIZE = 10_000  # holders (and wrong keys) remembered; emptied when full


class NotAllowed(TwinError):
    """The caller has no key, or a key that is not valid (401)."""


class Busy(TwinError):
    """Too many heavy requests at once: come back after ``retry_after_s`` seconds."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RouteClass(enum.StrEnum):
    """How a route is admitted, and which connections it uses."""

    OPERATIONAL = "operational"
    LIGHT = "light"
    HEAVY = "heavy"


async def public() -> None:
    """Open to anyone: the route serves nothing personal. (Async: no thread hop for nothing.)"""


class KeyCache:
    """Key → (holder or None, until when), per process: a request with a key costs no
    query in the next ``KEY_CACHE_S`` seconds."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[keys.Holder | None, float]] = {}

    def clear(self) -> None:
        """Forget every key (after one was revoked here)."""
        self.held.clear()

    def known(self, request: Request, key: str) -> tuple[keys.Holder | None] | None:
        """``(holder,)`` of ``key`` when that needs no query (configured, or remembered,
        as a holder or as no key), else None."""
        configured = keys.configured_holder(request.app.state.settings.api.api_keys, key)
        if configured is not None:
            return (configured,)
        remembered = self.held.get(key)
        if remembered is not None and remembered[1] > time.monotonic():
            return (remembered[0],)
        return None

    def holder(self, request: Request, key: str) -> keys.Holder | None:
        """The holder of ``key``, read from the data base when not remembered."""
        known = self.known(request, key)
        if known is not None:
            return known[0]
        now = time.monotonic()
        from api.deps import pooled_connection  # deps imports this module

        with pooled_connection(request, operational=True) as conn:
            holder = keys.holder_of(conn, key)
        if len(self.held) >= KEY_CACHE_SIZE:
            self.held.clear()
        self.held[key] = (holder, now + KEY_CACHE_S)
        return holder


async def holder_of_key(request: Request, key: str | None) -> keys.Holder | None:
    """The holder of an API key (a header, or Open311's ``api_key`` field), or None. A key
    known already is answered on the event loop; only a look-up in the data base goes
    through the thread pool (a sync dependency took a trip through it on every request)."""
    if not key or len(key) > 200 or "\x00" in key:
        return None
    cache: KeyCache = request.app.state.key_cache
    known = cache.known(request, key)
    if known is not None:
        return known[0]
    return await anyio.to_thread.run_sync(cache.holder, request, key)


def _check_may(holder: keys.Holder, capability: str) -> keys.Holder:
    """``holder``, or Forbidden naming the roles that may do ``capability``."""
    if not holder.may(capability):
        roles = ", ".join(sorted(keys.CAPABILITIES[capability]))
        raise Forbidden(f"{holder.a_role} key may not {capability.replace('_', ' ')}; this "
                        f"route is for {roles}")  # fmt: skip
    return holder


class Allowed:
    """The dependency of a route open to the roles that have ``capability``: the caller's
    ``keys.Holder``, or NotAllowed (401 without a key, 403 with a key of another role)."""

    def __init__(self, capability: str) -> None:
        if capability not in keys.CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}")
        self.capability = capability

    async def __call__(
        self, request: Request, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None
    ) -> keys.Holder:
        holder = await holder_of_key(request, x_api_key)
        if holder is None:
            raise NotAllowed("this route needs a valid X-API-Key header")
        return _check_may(holder, self.capability)


async def operational() -> None:
    """Marks a route operational: its own pool and threads, never queued behind public load."""


class Gate:
    """At most ``capacity`` requests through at once; the others wait up to ``wait_s``
    seconds, in turn, and are then refused with Busy. Made in the app's lifespan."""

    def __init__(self, capacity: int, wait_s: float) -> None:
        self.capacity = capacity
        self.wait_s = wait_s
        self.slots = anyio.Semaphore(capacity)

    async def enter(self) -> None:
        """Take a slot, or raise Busy when none came free in time."""
        try:
            self.slots.acquire_nowait()
            return
        except anyio.WouldBlock:
            pass
        with anyio.move_on_after(self.wait_s):
            await self.slots.acquire()
            return
        raise Busy(
            f"the server is answering {self.capacity} heavy requests (areas, large pages, "
            "imports) already; retry after the time in Retry-After, or ask for a smaller "
            "area, fewer layers or a lower limit",
            retry_after_s=max(1, math.ceil(2 * self.wait_s)),
        )

    def leave(self) -> None:
        """Give the slot back."""
        self.slots.release()


@asynccontextmanager
async def _through_heavy_gate(request: Request) -> AsyncIterator[None]:
    gate: Gate = request.app.state.heavy_gate
    await gate.enter()
    try:
        yield
    finally:
        gate.leave()


async def heavy(request: Request) -> AsyncIterator[None]:
    """Marks a route heavy: admitted through the heavy gate."""
    async with _through_heavy_gate(request):
        yield


async def heavy_page(request: Request) -> AsyncIterator[None]:
    """Marks an items route: heavy when its page is larger than ``HEAVY_PAGE``."""
    try:
        large = int(request.query_params.get("limit", "0")) > HEAVY_PAGE
    except ValueError:
        large = False  # the route's own check answers a limit that is not a number
    if not large:
        yield
        return
    async with _through_heavy_gate(request):
        yield


class CheckedInRoute:
    """The audience of a route that reads the key itself (Open311 sends it in the form's
    ``api_key``, which a header dependency cannot see): it declares ``capability``, and the
    route must call ``holder_allowed``."""

    def __init__(self, capability: str) -> None:
        if capability not in keys.CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}")
        self.capability = capability

    async def __call__(self) -> None:
        return None


async def holder_allowed(request: Request, key: str | None, capability: str) -> keys.Holder:
    """The holder of ``key`` if its role has ``capability``; Forbidden otherwise (no key, a
    key not valid, or one of a role that may not: Open311 answers 403 for each)."""
    holder = await holder_of_key(request, key)
    if holder is None:
        raise Forbidden("api_key is missing or not a valid key: send your key in the api_key "
                        "field or the X-API-Key header")  # fmt: skip
    return _check_may(holder, capability)


Public = Depends(public)
# The routes' audiences: each parameter gives the route the caller's keys.Holder.
Reporter = Annotated[keys.Holder, Depends(Allowed("report"))]
IncidentStaff = Annotated[keys.Holder, Depends(Allowed("handle_incidents"))]
Dispatcher = Annotated[keys.Holder, Depends(Allowed("dispatch"))]
IncidentSetup = Annotated[keys.Holder, Depends(Allowed("configure_incidents"))]
Editor = Annotated[keys.Holder, Depends(Allowed("edit_layers"))]
Evaluator = Annotated[keys.Holder, Depends(Allowed("evaluate"))]
NetworkStaff = Annotated[keys.Holder, Depends(Allowed("query_networks"))]
NetworkOperator = Annotated[keys.Holder, Depends(Allowed("operate_networks"))]
Admin = Annotated[keys.Holder, Depends(Allowed("manage_keys"))]
Operational = Depends(operational)
# A heavy slot is given back when the route has answered, before the answer is sent: a
# slow client must not hold one while it reads.
Heavy = Depends(heavy, scope="function")
HeavyPage = Depends(heavy_page, scope="function")


def audience(route: APIRoute) -> str | None:
    """The audience a route declared: "public", a capability, or None when it declared
    none (a defect: a test walks every route)."""
    calls = [dependency.call for dependency in route.dependant.dependencies]
    for call in calls:
        if isinstance(call, Allowed | CheckedInRoute):
            return call.capability
    return "public" if public in calls else None


def route_class(route: Any) -> RouteClass:
    """The class a route declared (see the module's docstring); light when it declared none.
    (A handful of lookups: cheaper than a cache, and routes are not hashable.)"""
    if not isinstance(route, APIRoute):
        return RouteClass.LIGHT
    calls = {dependency.call for dependency in route.dependant.dependencies}
    if heavy in calls or heavy_page in calls:
        return RouteClass.HEAVY
    if operational in calls or any(isinstance(c, Allowed | CheckedInRoute) for c in calls):
        return RouteClass.OPERATIONAL
    return RouteClass.LIGHT
