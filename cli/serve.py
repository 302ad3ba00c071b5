"""``twin serve`` (the API on the data base as it is) and ``twin up`` (data base, demo city
when there is none, and the API: the main job)."""

from __future__ import annotations

import argparse
import os
import signal
import socket

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from cli.common import console, prepare
from cli.demo import load_demo_city
from layers.demo.load import DATASET as DEMO_DATASET
from layers.demo.load import demo_loaded
from tiles.view import assets as view_assets
from twin import catalogue, db
from twin.errors import TwinError
from twin.settings import Settings

# kill, Docker and systemd stop a service with SIGTERM; Ctrl+C sends SIGINT (to the whole
# foreground process group, pg_ctl included). Both end the command the same way: as
# SystemExit where it is (starting the cluster, loading the demo), or, while uvicorn
# serves, once uvicorn has shut down (it takes both signals and raises them again after).
# SIGTERM's default would end the process on the spot, and with SIGINT's default
# (KeyboardInterrupt) asyncio puts a handler of its own in front of uvicorn's for the
# moment the server starts, where a Ctrl+C came out as a failed start-up.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the API on the data base as it is (the cluster stays up: it is not ours)."""
    _exit_on_stop_signals()
    return serve(settings, prepare(settings), host=args.host, port=args.port)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """Data base, demo city when there is none, then serve; stops a cluster it started."""
    host = args.host or settings.api.host
    port = args.port or settings.api.port
    _check_port_free(host, port)
    cluster = None if settings.database.database_url else db.embedded_cluster(settings)
    was_running = cluster is not None and cluster.is_running()
    _exit_on_stop_signals()
    try:
        # Inside the try: a stop while the cluster starts or migrates stops it too.
        url = prepare(settings)
        with db.connect(url) as conn:
            loaded = demo_loaded(conn)
            buildings = conn.execute(
                "SELECT count(*) FILTER (WHERE dataset = %s), count(*) FROM buildings",
                (DEMO_DATASET,),
            ).fetchone()
        if loaded:
            others = buildings[1] - buildings[0]  # type: ignore[index]
            console.print(
                f"a demo city is loaded ({buildings[0]:,} buildings"  # type: ignore[index]
                + (f", and {others:,} imported" if others else "")
                + "); "
                f"'twin demo --size {args.size}' replaces it",
                highlight=False,
            )
        else:
            load_demo_city(url, size=args.size, seed=1, history=not args.no_history)
        return serve(settings, url, host=host, port=port)
    finally:
        if cluster is not None and not was_running:
            # A second Ctrl+C must not cut the stop short (pg_ctl, inheriting the
            # ignoring, is not cut short either); `pg_ctl stop` waits 60 s at most.
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
            if cluster.stop():
                console.print(
                    f"stopped the embedded PostGIS in {cluster.data_dir}", highlight=False
                )


def _exit_on_stop_signals() -> None:
    """SIGINT and SIGTERM raise SystemExit (status 128 + the signal), so that ``finally``
    blocks run on the way out."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _exit_on_signal)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def serve(settings: Settings, url: str, *, host: str | None, port: int | None) -> int:
    """Run the API with uvicorn until interrupted."""
    host = host or settings.api.host
    port = port or settings.api.port
    _check_port_free(host, port)
    app = create_app(settings, database_url=url)
    where = (
        "configured server"
        if settings.database.database_url
        else f"embedded PostGIS in {settings.database.data_dir.absolute()}"
    )
    with db.connect(url) as conn:
        features = sum(layer["feature_count"] for layer in catalogue.list_layers(conn))
    console.print(f"data base: {where}, {features:,} features", highlight=False)
    if features == 0:
        console.print("the map is empty: load the demo city with 'twin demo', or import data")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    # Behind a proxy (TWIN_PUBLIC_URL) the address a person opens is the public one.
    address = settings.api.public_url or f"http://{shown}:{port}"
    listening = f", listening on {host}:{port}" if settings.api.public_url else ""
    console.print(
        f"the one map is served at {address}/  "
        f"(health: /health, API docs: /docs, layers: /layers){listening}",
        highlight=False,
    )
    for problem in view_assets.check():
        console.print(f"warning: the 3D view: {problem}", highlight=False, markup=False)
    view_line = f"The one map: {address}/view"
    if settings.api.workers == 1:
        server = _Server(
            uvicorn.Config(
                app, host=host, port=port, log_level="info", access_log=settings.api.access_log
            ),
            view_line,
        )
        server.run()  # a stop signal ends it as SystemExit once it has shut down
        return 0 if server.started else 3  # uvicorn's exit status for a failed start-up
    # Several processes on one port: uvicorn starts each from the factory below, which
    # reads the settings again; the data base found here is handed over by its URL.
    os.environ["TWIN_DATABASE_URL"] = url
    console.print(view_line, highlight=False)
    uvicorn.run("cli.serve:worker_app", factory=True, workers=settings.api.workers, host=host,
                port=port, log_level="info", access_log=settings.api.access_log)  # fmt: skip
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server, saying where the 3D view is once it listens: the last line of
    start-up is the address a person opens."""

    def __init__(self, config: uvicorn.Config, ready_line: str) -> None:
        super().__init__(config)
        self.ready_line = ready_line

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            console.print(self.ready_line, highlight=False)


def worker_app() -> FastAPI:
    """The app of one of several API processes (``TWIN_WORKERS``): the settings from the
    environment, the data base ``serve`` found in ``TWIN_DATABASE_URL``."""
    settings = Settings()
    assert settings.database.database_url is not None  # set by serve() before it forks
    return create_app(settings, database_url=settings.database.database_url)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise TwinError(
                f"cannot listen on {host}:{port} ({exc.strerror}): "
                "choose another with --port or TWIN_PORT"
            ) from exc
