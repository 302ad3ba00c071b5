"""Benchmark: locate and nearest (with and without max_distance) over HTTP (1 and 8
connections) beside the raw SQL time.

    .venv/bin/python bench/queries.py [--requests 2000] [--size large]

Uses the benchmark cluster in .twin/bench (or TWIN_DATABASE_URL); loads the demo city of
the given size there first if it has none. Serves the API with `twin serve` in a child
process on a free port, then times requests from this process. Record figures in
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from city import demo_city
from timing import figures, serving

from twin import db, spatial


def main() -> None:
    """Run the benchmark once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--size", choices=("small", "default", "large"), default="large")
    args = parser.parse_args()

    url, env = demo_city(args.size)
    with db.connect(url) as conn:
        west, south, east, north = conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM"
            " (SELECT ST_Extent(geom) e FROM jurisdictions WHERE level = 'district') x"
        ).fetchone()
        buildings = conn.execute("SELECT count(*) FROM buildings").fetchone()[0]

    rng = np.random.default_rng(7)
    points = rng.uniform((west, south), (east, north), (args.requests, 2)).tolist()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"data: {buildings:,} buildings; {args.requests:,} random points in the districts")

    with db.connect(url) as conn:
        for name, call in (
            ("locate, SQL in process", lambda p: spatial.locate(conn, *p)),
            ("nearest k=5 x3 layers, SQL", lambda p: spatial.nearest(conn, *p, layers=["buildings", "sensors", "pipe_nodes"], k=5)),
            ("nearest ... max_distance=200, SQL", lambda p: spatial.nearest(conn, *p, layers=["buildings", "sensors", "pipe_nodes"], k=5, max_distance_m=200)),
            ("nearest pipes, SQL", lambda p: spatial.nearest(conn, *p, layers=["pipes"], k=5)),
            ("nearest pipes max_distance=50, SQL", lambda p: spatial.nearest(conn, *p, layers=["pipes"], k=5, max_distance_m=50)),
        ):  # fmt: skip
            times = []
            started = time.perf_counter()
            for point in points:
                t = time.perf_counter()
                call(point)
                times.append(time.perf_counter() - t)
            print(figures(name, times, time.perf_counter() - started))

    with serving({**env, "TWIN_POOL_MAX_SIZE": "16"}) as port:
        for path in (
            "/locate?lon={}&lat={}",
            "/nearest?lon={}&lat={}&layers=buildings,sensors,pipe_nodes&k=5",
            "/nearest?lon={}&lat={}&layers=buildings,sensors,pipe_nodes&k=5&max_distance=200",
        ):
            for connections in (1, 8):
                # http.client, the lightest client, one connection per client thread:
                # the figures are mostly the server's.
                local = threading.local()

                def one(i: int, path: str = path, local: threading.local = local) -> float:
                    if not hasattr(local, "client"):
                        local.client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    lon, lat = points[i]
                    t = time.perf_counter()
                    local.client.request("GET", path.format(lon, lat))
                    answer = local.client.getresponse()
                    answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"{path}: HTTP {answer.status}")
                    return time.perf_counter() - t

                with ThreadPoolExecutor(max_workers=connections) as pool:
                    list(pool.map(one, range(min(200, len(points)))))  # warm the pool and plans
                started = time.perf_counter()
                with ThreadPoolExecutor(max_workers=connections) as pool:
                    times = list(pool.map(one, range(len(points))))
                wall = time.perf_counter() - started
                label = path.split("?")[0].strip("/") + (
                    " max_distance" if "max_distance" in path else ""
                )
                print(figures(f"{label}, HTTP, {connections} connection(s)", times, wall))


if __name__ == "__main__":
    main()
