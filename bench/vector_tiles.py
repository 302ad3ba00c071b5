"""Vector tiles, side by side on one data base and machine: our tile API, TiPg 1.6.1
pointed at the same tables, the raw ST_AsMVT statement through psycopg (the data base's
ceiling: every feature under the tile, drawn as stored) and our renderer's statement,
for z12, z14 and z16 over the demo district, at 1 and 8 connections.

For each zoom the same fixed list of tile URLs is asked of each server: once with every
tile new to the server (ours starts with an empty cache: "first"), then again ("warm").
TiPg has no cache, so its two passes measure the same thing. Both are told extent 4096
and buffer 64; the tiles of each are decoded to compare what they hold. Where wrk is
installed (`apt-get install wrk`), warm tiles are also asked by wrk for five seconds: the
server's own rate, with no Python client on the same two cores.

    .venv/bin/python bench/vector_tiles.py [--size default] [--layers buildings,pipes]
        [--zooms 12,14,16] [--per-zoom 200]

TiPg runs from a virtual environment of its own (``.twin/bench-tipg``, made on first use
with pip: ``tipg==1.6.1``), so its pins never meet ours.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mapbox_vector_tile
import shapely
import shapely.geometry
from city import demo_city
from psycopg import sql
from timing import figures, free_port

from tiles import matrix, vector
from twin import db, embedded, registry

TMS = "WebMercatorQuad"
ZOOMS = (12, 14, 16)
TIPG_VENV = Path(".twin/bench-tipg")
TIPG_VERSION = "1.6.1"


def _tipg_python() -> Path:
    """TiPg's own interpreter, installed on first use."""
    python = TIPG_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TIPG_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"tipg=={TIPG_VERSION}", "uvicorn"],
            check=True,
            stderr=subprocess.DEVNULL,
        )
    return python


def _wait(port: int, path: str, server: subprocess.Popen) -> None:
    for _ in range(300):
        if server.poll() is not None:
            raise RuntimeError(f"the server for port {port} stopped: exit {server.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server on port {port} did not come up")


def _tiles(
    url: str, per_zoom: int, zooms: tuple[int, ...]
) -> tuple[dict[int, list[matrix.Tile]], dict[int, list[matrix.Tile]]]:
    """A fixed list of tiles over the demo district at each zoom (at most ``per_zoom``),
    and the district's other tiles at each zoom (a server's warm-up, outside the list)."""
    with db.connect(url) as conn:
        box = conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM"
            " (SELECT ST_Extent(geom) e FROM jurisdictions WHERE level = 'district') x"
        ).fetchone()
    rng = random.Random(12)
    chosen, spare = {}, {}
    for z in zooms:
        every = list(matrix.tiles_under(TMS, box, range(z, z + 1)))
        chosen[z] = sorted(rng.sample(every, min(per_zoom, len(every))))
        taken = set(chosen[z])
        spare[z] = [tile for tile in every if tile not in taken]
    return chosen, spare


def _get_all(port: int, paths: list[str], connections: int) -> tuple[list[float], float, list]:
    """Ask each path once over ``connections`` keep-alive connections; times and bodies."""
    local = threading.local()

    def one(path: str) -> tuple[float, bytes]:
        if not hasattr(local, "c"):
            local.c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        t = time.perf_counter()
        local.c.request("GET", path, headers={"Accept-Encoding": "gzip"})
        answer = local.c.getresponse()
        body = answer.read()
        if answer.status not in (200, 204):
            raise RuntimeError(f"GET {path}: HTTP {answer.status} {body[:200]!r}")
        if answer.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return time.perf_counter() - t, body

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        done = list(pool.map(one, paths))
    wall = time.perf_counter() - started
    return [d[0] for d in done], wall, [d[1] for d in done]


WRK_SCRIPT = Path(__file__).with_name("tiles_wrk.lua")
TILE_ITSELF = shapely.box(0, 0, vector.EXTENT, vector.EXTENT)


def _wrk(
    port: int, paths: list[str], connections: int, seconds: float, name: str, *,
    once: bool = False,
) -> str:  # fmt: skip
    """wrk asking ``paths`` round and round for ``seconds`` (warm tiles), or, ``once``,
    each path once (first requests; ``seconds`` is wrk's run, which must
    outlast them): the figures of the server, with no Python client on the cores."""
    if once:  # no connection without a tile to ask (z12's two tiles keep two busy)
        connections = min(connections, len(paths))
    threads = connections if once else min(2, connections)
    prelude = (f"THREADS = {threads}\nONCE = {'true' if once else 'false'}\nPATHS = {{"
               + ", ".join(json.dumps(p) for p in paths) + "}\n")  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(prelude + WRK_SCRIPT.read_text())
        script.flush()
        done = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-s", script.name,
             "-d", f"{math.ceil(seconds)}s", "--timeout", "30s", f"http://127.0.0.1:{port}"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    found = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("WRK "))[4:])
    if found["failed"] or found["socket_errors"]:
        raise RuntimeError(f"wrk: {found['failed']} failed, {found['socket_errors']} socket errors")
    if once:
        if found["requests"] != len(paths):
            raise RuntimeError(f"wrk answered {found['requests']} of {len(paths)} in {seconds} s")
        # Each connection always waits on one answer: the rate is theirs over the mean.
        rate = connections / (found["mean_ms"] / 1000)
    else:
        rate = found["requests"] / found["seconds"]
    return (f"{name:<34} p50 {found['p50_ms']:6.2f} ms  p99 {found['p99_ms']:6.2f} ms  "
            f"{rate:7.0f} tiles/s")  # fmt: skip


def _ceiling(url: str, layers: list[str], tiles: list[matrix.Tile], connections: int) -> str:
    """Our renderer's statement straight through psycopg, no HTTP and no cache."""
    local = threading.local()
    catalogue_lock = threading.Lock()

    def one(tile: matrix.Tile) -> float:
        if not hasattr(local, "conn"):
            local.conn = db.connect(url, autocommit=True)
            with catalogue_lock:
                local.catalogue = registry.load(local.conn)
        t = time.perf_counter()
        vector.render(local.conn, local.catalogue, layers, tile)
        return time.perf_counter() - t

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        times = list(pool.map(one, tiles))
    return figures(
        f"  our statement via psycopg, {connections} conn",
        times,
        time.perf_counter() - started,
        "tiles",
    )


def _raw(layer: registry.Layer) -> sql.Composed:
    """The plain ST_AsMVT statement of a layer's tile, as a hand-written tile server has
    it (every feature under the tile, drawn through ST_Transform; the layer's tile
    properties): the issue's "raw ST_AsMVT query", the data base's ceiling."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in ["id", *layer.tile])
    return sql.SQL(
        "SELECT ST_AsMVT(t, %(name)s, 4096, 'geom') FROM (SELECT {columns},"
        " ST_AsMVTGeom(ST_Transform(geom, 3857), ST_TileEnvelope(%(z)s, %(x)s, %(y)s), 4096, 64,"
        " true) AS geom FROM {table} WHERE geom && ST_Transform(ST_TileEnvelope(%(z)s, %(x)s,"
        " %(y)s, margin => 64.0 / 4096), 4326)) AS t"
    ).format(columns=columns, table=sql.Identifier(layer.table))


def _raw_ceiling(url: str, layer: str, tiles: list[matrix.Tile], connections: int) -> str:
    """The raw statement (``_raw``) straight through psycopg: the data base's ceiling."""
    local = threading.local()
    with db.connect(url) as conn:
        statement = _raw(registry.load(conn).layer(layer))

    def one(tile: matrix.Tile) -> float:
        if not hasattr(local, "conn"):
            local.conn = db.connect(url, autocommit=True)
        t = time.perf_counter()
        local.conn.execute(statement, {"name": layer, "z": tile.z, "x": tile.x, "y": tile.y})
        return time.perf_counter() - t

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        times = list(pool.map(one, tiles))
    return figures(
        f"  raw ST_AsMVT, {connections} conn", times, time.perf_counter() - started, "tiles"
    )


def _raw_pgbench(
    url: str, layer: str, tiles: list[matrix.Tile], connections: int, seconds: float = 5
) -> str | None:
    """The raw statement (``_raw``) run by pgbench for ``seconds``, a tile of the list
    at random each time: the data base's ceiling with a C client, which the Python one
    is not at 8 connections (its threads share one interpreter). None without pgbench."""
    pgbench = embedded.find_bin_dir() / "pgbench"
    if not pgbench.exists():
        return None
    with db.connect(url) as conn:
        text = _raw(registry.load(conn).layer(layer)).as_string(conn)
        name = sql.Literal(layer).as_string(conn)
    (z,) = {t.z for t in tiles}
    xs = ",".join(str(t.x) for t in tiles)
    ys = ",".join(str(t.y) for t in tiles)
    text = (text.replace("%(name)s", name).replace("%(z)s", str(z))
            .replace("%(x)s", f"(ARRAY[{xs}])[:i]").replace("%(y)s", f"(ARRAY[{ys}])[:i]"))  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder, "tile.sql")
        script.write_text(f"\\set i random(1, {len(tiles)})\n{text};\n")
        done = subprocess.run(
            [str(pgbench), "-n", "-M", "prepared", "-f", str(script), "-c", str(connections),
             "-j", str(min(2, connections)), "-T", f"{seconds:g}", "-l",
             "--log-prefix", str(Path(folder, "log")), url],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        ms = sorted(
            int(line.split()[2]) / 1000
            for log in Path(folder).glob("log*")
            for line in log.read_text().splitlines()
        )
    tps = next(float(x.split()[2]) for x in done.stdout.splitlines() if x.startswith("tps ="))
    p50, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (f"{f'  raw ST_AsMVT, {connections} conn (pgbench)':<34} p50 {p50:6.2f} ms  "
            f"p99 {p99:6.2f} ms  {tps:7.0f} tiles/s")  # fmt: skip


def _reaches_tile(geometry: dict) -> bool:
    """Whether a decoded feature's geometry meets the tile itself, not only the buffer
    around it (TiPg selects by the tile's own bounds, and so leaves out the features that
    lie in the buffer alone; ours holds them, as lines and outlines that cross the edge
    need)."""
    return shapely.geometry.shape(geometry).intersects(TILE_ITSELF)


def _features(body: bytes, layer: str) -> list:
    """The ids of the features of ``layer`` that reach into the tile (None for a merged
    cell's)."""
    if not body:
        return []
    decoded = mapbox_vector_tile.decode(body)
    for name, content in decoded.items():
        if name == layer or name.endswith("." + layer) or name == "default":
            # TiPg gives the key as a property, not as the MVT feature id.
            return [f.get("id") or f["properties"].get("id") for f in content["features"]
                    if _reaches_tile(f["geometry"])]  # fmt: skip
    return []


def main() -> None:
    """Run the benchmark once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "default", "large"), default="default")
    parser.add_argument("--layers", default="buildings,pipes")
    parser.add_argument("--per-zoom", type=int, default=200, help="tiles per zoom, at most")
    parser.add_argument("--zooms", default=",".join(map(str, ZOOMS)), help="comma list")
    args = parser.parse_args()

    url, env = demo_city(args.size, folder=f".twin/bench-tiles-{args.size}")
    layers = args.layers.split(",")
    chosen, spare = _tiles(url, args.per_zoom, tuple(int(z) for z in args.zooms.split(",")))
    with db.connect(url) as conn:
        catalogue = registry.load(conn)
        columns = {name: list(catalogue.layer(name).tile) for name in layers}
        # Each layer's tiles of the list: those within its tileset's limits (beyond its
        # extent ours are 404s, asking no statement: no measure of either server).
        extents = {name: tuple(catalogue.entries[name]["bbox"]) for name in layers}
        counts = {
            name: conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier(catalogue.layer(name).table)
                )
            ).fetchone()[0]
            for name in layers
        }
        conn.execute("SELECT 1")
    tipg_python = _tipg_python()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"data: {', '.join(f'{counts[n]:,} {n}' for n in layers)}; tiles per zoom: "
          + ", ".join(f"z{z} {len(t)}" for z, t in chosen.items()))  # fmt: skip

    ours_port, tipg_port = free_port(), free_port()
    tipg = subprocess.Popen(
        [str(tipg_python), "-m", "uvicorn", "tipg.main:app", "--port", str(tipg_port), "--log-level", "warning"],
        env={**env, "DATABASE_URL": url, "TIPG_DB_TABLES": json.dumps([f"public.{n}" for n in layers]),
             "TIPG_TILE_RESOLUTION": "4096", "TIPG_TILE_BUFFER": "64",
             "TIPG_MAX_FEATURES_PER_TILE": "1000000", "TIPG_DB_MAX_CONN_SIZE": "16"},
        stdout=subprocess.DEVNULL,
    )  # fmt: skip

    def start_ours(layer: str, z: int, connections: int) -> subprocess.Popen:
        subprocess.run([sys.executable, "-m", "cli", "tiles", "clear"], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        server = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--port", str(ours_port)],
            env={**env, "TWIN_POOL_MAX_SIZE": "16", "TWIN_SWEEP_INTERVAL_S": "0"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait(ours_port, "/health", server)
        # The process warmed up (its pool grown to the clients' connections, its statement
        # of the zoom prepared on them), not its cache of the list: tiles of the district
        # outside it, each a miss, as TiPg's process is warm from the rounds before (far
        # from the city a tile is outside the layer's limits, a 404 asking no statement).
        # none at z12: the district's 2 are the list
        others = [t for t in spare[z] if matrix.within_limits(TMS, extents[layer], t)]
        others = others[: 8 * connections]
        try:
            if others:
                _get_all(ours_port, [f"/collections/{layer}/tiles/{TMS}/{t.z}/{t.y}/{t.x}"
                                     for t in others], connections)  # fmt: skip
        except BaseException:
            server.terminate()  # not left serving after the run stops
            raise
        return server

    wrk = shutil.which("wrk") is not None
    try:
        _wait(tipg_port, "/collections", tipg)
        for z, tiles in chosen.items():
            print(f"z{z}:")
            every_tile = tiles
            for layer in layers:
                tiles = [t for t in every_tile if matrix.within_limits(TMS, extents[layer], t)]
                print(
                    f" {layer}: {len(tiles)} of the {len(every_tile)} tiles lie within its limits"
                )
                props = ",".join(["id", *columns[layer]])
                ours_paths = [f"/collections/{layer}/tiles/{TMS}/{t.z}/{t.y}/{t.x}" for t in tiles]
                tipg_paths = [f"/collections/public.{layer}/tiles/{TMS}/{t.z}/{t.x}/{t.y}?properties={props}" for t in tiles]  # fmt: skip
                for connections in (1, 8):
                    print(f" {layer}, {connections} connection(s):")
                    print(_raw_ceiling(url, layer, tiles, connections))
                    if (line := _raw_pgbench(url, layer, tiles, connections)) is not None:
                        print(line)
                    print(_ceiling(url, [layer], tiles, connections))
                    server = start_ours(layer, z, connections)
                    try:
                        times, first_wall, ours = _get_all(ours_port, ours_paths, connections)
                        print(figures("  ours, first request", times, first_wall, "tiles"))
                        times, wall, _ = _get_all(ours_port, ours_paths, connections)
                        print(figures("  ours, warm", times, wall, "tiles"))
                        if wrk:
                            print(_wrk(ours_port, ours_paths, connections, 5, "  ours, warm (wrk)"))
                    finally:
                        server.terminate()
                        server.wait(timeout=30)
                    if wrk:  # first requests again, from a C client, on a new process
                        server = start_ours(layer, z, connections)
                        try:
                            print(_wrk(ours_port, ours_paths, connections, 2 * first_wall + 1,
                                       "  ours, first request (wrk)", once=True))  # fmt: skip
                        finally:
                            server.terminate()
                            server.wait(timeout=30)
                    times, wall, theirs = _get_all(tipg_port, tipg_paths, connections)
                    print(figures("  TiPg 1.6.1, first request", times, wall, "tiles"))
                    if wrk:
                        print(_wrk(tipg_port, tipg_paths, connections, 2 * wall + 1,
                                   "  TiPg 1.6.1, first request (wrk)", once=True))  # fmt: skip
                    times, wall, _ = _get_all(tipg_port, tipg_paths, connections)
                    print(figures("  TiPg 1.6.1, again", times, wall, "tiles"))
                    if connections == 1:
                        a = [_features(b, layer) for b in ours]
                        b = [_features(b, layer) for b in theirs]
                        same = sum(set(x) == set(y) for x, y in zip(a, b, strict=True))
                        full = z >= catalogue.layer(layer).tiling.full_zoom
                        print(f"  decoded, reaching into the tile: ours {sum(map(len, a)):,} "
                              f"features, TiPg {sum(map(len, b)):,}; the same features in "
                              f"{same}/{len(a)} tiles"
                              + ("" if full else " (ours generalised below its full zoom)"))  # fmt: skip
    finally:
        tipg.terminate()
        tipg.wait(timeout=30)


if __name__ == "__main__":
    main()
