"""The app factory: settings in, app out; the pool lives in the lifespan."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from psycopg_pool import ConnectionPool

import twin
from api.access import Gate, KeyCache
from api.background import Sweeper
from api.deps import PublicAddress, PublicCORS, configure
from api.errors import install_error_handlers
from api.routes import (
    changes,
    evaluation,
    health,
    imports,
    incidents,
    intake,
    keys,
    layers,
    network,
    ogc,
    open311,
    photos,
    spatial,
    terrain,
    tiles,
    view,
)
from tiles import vector
from tiles.cache import TileCache
from twin import registry
from twin.settings import Settings

GC_THRESHOLDS = (10_000, 5, 100)  # CPython's are (700, 10, 10)


def create_app(settings: Settings, *, database_url: str) -> FastAPI:
    """The one map's HTTP API on the data base at ``database_url`` (already migrated)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        def pool(
            min_size: int, max_size: int, timeout_ms: int = settings.database.statement_timeout_ms
        ) -> ConnectionPool:
            return ConnectionPool(
                database_url,
                min_size=min(min_size, max_size),
                max_size=max_size,
                kwargs={"options": f"-c statement_timeout={timeout_ms}", "autocommit": True},
                configure=configure,
                open=False,
                timeout=settings.database.pool_timeout_s,
            )

        # Operational routes (api/access.py) have connections and threads of their own.
        app.state.pool = pool(settings.database.pool_min_size, settings.database.pool_max_size)
        app.state.operational_pool = pool(1, settings.database.operational_pool_size)
        app.state.operational_threads = anyio.CapacityLimiter(
            settings.database.operational_pool_size
        )
        app.state.heavy_gate = Gate(settings.api.heavy_concurrency, settings.api.heavy_queue_s)
        # Intake's batches, each on the same connection (api/routes/intake.py).
        setattr(app.state, intake.POOL, pool(intake.IN_FLIGHT, intake.IN_FLIGHT))
        # Tiles, on connections whose time limit is a tile's: a miss is one statement,
        # with no transaction to set the limit in (tiles/cache.py).
        setattr(app.state, tiles.POOL, pool(1, settings.database.pool_max_size,
                                            settings.tiles.tile_timeout_ms))  # fmt: skip
        app.state.pool.open()
        app.state.operational_pool.open()
        getattr(app.state, intake.POOL).open()
        getattr(app.state, tiles.POOL).open()
        app.state.catalogue.listen(database_url)
        app.state.tile_cache.listen(database_url)
        app.state.sweeper = Sweeper(app.state.pool, settings.api.sweep_interval_s)
        app.state.sweeper.start()
        # An area answer is some 200,000 small containers: at CPython's default thresholds
        # a full collection ran every second under heavy reads, holding the GIL, so every
        # request, for up to 0.8 s (bench/RESULTS.md). Fewer, younger collections, and
        # what start-up made frozen out of them.
        thresholds = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            yield
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            app.state.sweeper.stop()
            app.state.tile_cache.close()
            app.state.catalogue.close()
            getattr(app.state, intake.POOL).close()
            getattr(app.state, tiles.POOL).close()
            app.state.operational_pool.close()
            app.state.pool.close()

    # Swagger UI and ReDoc served from the package: a city intranet has no CDN.
    app = FastAPIOffline(
        title="The one map (一张图)",
        version=twin.__version__,
        description="Spatial digital twin of the city: layers, jurisdictions, assets.",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry asks for the global providers on every request (an
        # environment read each time: 9 % of an intake's server time); the twin configures
        # none, so it is off unless the environment sets OpenTelemetry up (OTEL_*).
        telemetry=None
        if any(k.startswith("OTEL_") for k in os.environ)
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    # The catalogue held in memory, reloaded when the change log says a layer changed.
    app.state.catalogue = registry.Snapshot()
    app.state.key_cache = KeyCache()
    # Rendered tiles, shared with the other processes and kept current by the change log.
    app.state.tile_cache = TileCache(settings.tile_cache, vector.Limits.of(settings.tiles))
    app.state.tile_flights = {}  # tiles being made now, by key (api.routes.tiles)
    app.add_middleware(tiles.TileFront)  # before the error handlers: inside InputGuard
    if settings.api.cors_origins.strip():  # outside the front: its answers get CORS too
        app.add_middleware(PublicCORS, origins=settings.api.cors_origins)
    if settings.api.public_url:  # every link from it, whatever Host a request carries
        app.add_middleware(PublicAddress, public_url=settings.api.public_url)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(layers.router)
    app.include_router(imports.router)
    app.include_router(ogc.router)
    app.include_router(spatial.router)
    app.include_router(changes.router)
    app.include_router(incidents.router)
    app.include_router(intake.router)
    app.include_router(keys.router)
    app.include_router(open311.router)
    app.include_router(photos.router)
    app.include_router(evaluation.router)
    app.include_router(tiles.router)
    app.include_router(terrain.router)
    app.include_router(view.router)
    app.include_router(network.router)

    return app
