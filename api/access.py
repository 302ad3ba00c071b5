"""Who may call what, and in which class. Every route names its audience with one of
these dependencies, and the routes that are not plain reads name their class too.

Audience. ``public``: anyone, no key (health, the catalogue, the open map data).
``staff``: dispatch staff, engineers and trusted external systems, with an API key
(``X-API-Key``) listed in ``TWIN_API_KEYS``.

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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from fastapi import Depends, Header, Request
from fastapi.routing import APIRoute

from twin.errors import TwinError

HEAVY_PAGE = 1000  # items pages larger than this are heavy (GDAL's pages of 1,000 are not)


class NotAllowed(TwinError):
    """The caller has no key, or a key that is not allowed here."""


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


def staff(
    request: Request, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None
) -> str:
    """Staff or a trusted system with a configured API key; returns the caller's name."""
    keys: dict[str, str] = request.app.state.settings.api.api_keys
    caller = keys.get(x_api_key or "")
    if caller is None:
        raise NotAllowed("this route needs a valid X-API-Key header")
    return caller


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


Public = Depends(public)
Staff = Annotated[str, Depends(staff)]
Operational = Depends(operational)
# A heavy slot is given back when the route has answered, before the answer is sent: a
# slow client must not hold one while it reads.
Heavy = Depends(heavy, scope="function")
HeavyPage = Depends(heavy_page, scope="function")


def route_class(route: Any) -> RouteClass:
    """The class a route declared (see the module's docstring); light when it declared none.
    (A handful of lookups: cheaper than a cache, and routes are not hashable.)"""
    if not isinstance(route, APIRoute):
        return RouteClass.LIGHT
    calls = {dependency.call for dependency in route.dependant.dependencies}
    if heavy in calls or heavy_page in calls:
        return RouteClass.HEAVY
    if operational in calls or staff in calls:
        return RouteClass.OPERATIONAL
    return RouteClass.LIGHT
