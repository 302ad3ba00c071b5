"""Benchmark: sustained intake (validate, attach, fusion check, dispatch, store, change
log) of incidents over HTTP (1 and 8 connections), beside the same core call in process.

    .venv/bin/python bench/intake.py [--reports 2000] [--size large] [--categories 360]

Uses the benchmark cluster in .twin/bench (or TWIN_DATABASE_URL); loads the demo city of
the given size there first if it has none. The demo's 144 categories are grown to
``--categories`` as a real city's list is, by sub-categories under its leaves (same layers,
radius and hours as their parent, dataset "bench"; the rules of the parent cover them).
Reports go to random points in the districts with categories drawn from the leaves, every
channel. Serves the API with `twin serve` in a child process on a free port. The
incidents it makes are deleted afterwards. Record figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import numpy as np
from city import demo_city
from timing import figures, free_port

from twin import db
from twin.incidents import categories, intake
from twin.schema import INCIDENT_CHANNELS

KEY = "bench-key"


def _clean(url: str) -> None:
    with db.connect(url) as conn:
        conn.execute("DELETE FROM incident_photos")
        conn.execute("DELETE FROM incident_events")
        conn.execute("DELETE FROM incidents")
        conn.execute("DELETE FROM layer_changes WHERE layer = 'incidents'")
        conn.execute("DELETE FROM layer_catalogue_deltas WHERE layer = 'incidents'")
        conn.execute("UPDATE layer_catalogue SET feature_count = 0, extent = NULL"
                     " WHERE name = 'incidents'")  # fmt: skip
        conn.commit()


def _grow_categories(url: str, wanted: int) -> None:
    """Sub-categories under the demo's leaves until there are ``wanted`` categories."""
    with db.connect(url) as conn:
        stored = categories.list_categories(conn)
        missing = wanted - len(stored)
        if missing <= 0:
            return
        parents = {c.parent_code for c in stored}
        leaves = [c for c in stored if c.code not in parents]
        rows = []
        for n in range(missing):
            leaf = leaves[n % len(leaves)]
            rows.append({**leaf.as_dict(), "code": f"{leaf.code}-{n // len(leaves) + 1}",
                         "name": f"{leaf.name}（{n // len(leaves) + 1}）",
                         "parent_code": leaf.code})  # fmt: skip
        for row in rows:
            row.pop("dataset")
        categories.store(conn, rows, dataset="bench").raise_first()
        conn.commit()


def main() -> None:
    """Run the benchmark once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--size", choices=("small", "default", "large"), default="large")
    parser.add_argument("--categories", type=int, default=360)
    args = parser.parse_args()

    url, env = demo_city(args.size)
    _grow_categories(url, args.categories)
    with db.connect(url) as conn:
        west, south, east, north = conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM"
            " (SELECT ST_Extent(geom) e FROM jurisdictions WHERE level = 'district') x"
        ).fetchone()
        buildings = conn.execute("SELECT count(*) FROM buildings").fetchone()[0]
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM incident_categories),"
            " (SELECT count(*) FROM responsibility_rules), (SELECT count(*) FROM jurisdictions)"
        ).fetchone()
        codes = [r[0] for r in conn.execute(
            "SELECT c.code FROM incident_categories c WHERE NOT EXISTS (SELECT 1 FROM"
            " incident_categories k WHERE k.parent_code = c.code) ORDER BY c.code"
        )]  # fmt: skip
    _clean(url)

    rng = np.random.default_rng(11)
    points = rng.uniform((west, south), (east, north), (args.reports, 2)).tolist()
    chosen = rng.integers(0, len(codes), args.reports).tolist()
    channels = rng.integers(0, len(INCIDENT_CHANNELS), args.reports).tolist()
    bodies = [
        {"category": codes[c], "channel": INCIDENT_CHANNELS[k],
         "location": {"lon": p[0], "lat": p[1]}, "description": "bench report",
         "reporter": {"name": "测试", "phone": "13800000000"}}
        for p, c, k in zip(points, chosen, channels, strict=True)
    ]  # fmt: skip
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"data: {buildings:,} buildings, {counts[2]:,} jurisdictions, {counts[0]} categories "
          f"({len(codes)} leaves), {counts[1]:,} rules; {args.reports:,} reports at random "
          "points in the districts")  # fmt: skip

    with db.connect(url, autocommit=True) as conn:
        times = []
        started = time.perf_counter()
        for body in bodies:
            t = time.perf_counter()
            intake.report(
                conn, category_code=body["category"], channel=body["channel"],
                lon=body["location"]["lon"], lat=body["location"]["lat"],
                description=body["description"], reporter=body["reporter"],
            )  # fmt: skip
            times.append(time.perf_counter() - t)
        print(
            figures("intake.report, in process", times, time.perf_counter() - started, "incidents")
        )
    _clean(url)

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--port", str(port)],
        env={**env, "TWIN_POOL_MAX_SIZE": "16", "TWIN_API_KEYS": json.dumps({KEY: "bench"})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        encoded = [json.dumps(b).encode() for b in bodies]
        for connections in (1, 8):
            local = threading.local()

            def one(i: int, local: threading.local = local) -> float:
                if not hasattr(local, "client"):
                    local.client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                t = time.perf_counter()
                local.client.request("POST", "/incidents", encoded[i], headers={
                    "X-API-Key": KEY, "Content-Type": "application/json"})  # fmt: skip
                answer = local.client.getresponse()
                text = answer.read()
                if answer.status != 201:
                    raise RuntimeError(f"POST /incidents: HTTP {answer.status} {text[:200]!r}")
                return time.perf_counter() - t

            with ThreadPoolExecutor(max_workers=connections) as pool:
                list(pool.map(one, range(min(100, len(bodies)))))  # warm the pool and plans
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=connections) as pool:
                times = list(pool.map(one, range(len(bodies))))
            wall = time.perf_counter() - started
            print(
                figures(f"POST /incidents, {connections} connection(s)", times, wall, "incidents")
            )
            _clean(url)
    finally:
        server.terminate()
        server.wait(timeout=30)
        _clean(url)


if __name__ == "__main__":
    main()
