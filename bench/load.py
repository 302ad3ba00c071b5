"""Benchmark: does dispatch's /locate stay fast while heavy public reads run?

    .venv/bin/python bench/load.py [--heavy 12] [--seconds 30] [--locate-rate 4]

Uses its own embedded cluster in .twin/bench-load (or TWIN_DATABASE_URL) and loads the
default demo city there first if it has none. Serves the API with `twin serve` (uvicorn)
in a child process on a free loopback port, with the environment's TWIN_* settings, then
for --seconds runs at once: --heavy clients each posting `POST /within` over the whole
district (layers default, limit 5000) in a loop; one dispatch client asking `/locate` at
random points inside the district --locate-rate times a second; --gdal clients paging
`/collections/buildings/items?limit=1000` from the start, as GDAL does. Prints /locate's
p50/p95/max and status counts (and the same question asked of the data base directly,
without HTTP, to tell the server's share from the data base's), and the heavy and paged
requests' status counts and rates.
Record figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import shapely
import shapely.geometry
from city import demo_city
from timing import free_port

from twin import db, spatial


class Tally:
    """Status counts and latencies of one kind of request, from many threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: collections.Counter[str] = collections.Counter()
        self.seconds: list[float] = []
        self.failures = 0  # 5xx other than a refusal with Retry-After, or no answer at all

    def add(self, status: str, seconds: float, answer: http.client.HTTPResponse | None) -> None:
        refused = status in ("429", "503") and bool(answer and answer.getheader("Retry-After"))
        failed = not status.isdigit() or (int(status) >= 500 and not refused)
        with self.lock:
            self.statuses[status] += 1
            self.seconds.append(seconds)
            self.failures += failed

    def figures(self, wall: float) -> str:
        ms = sorted(s * 1000 for s in self.seconds) or [0.0]
        p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        ok = self.statuses.get("200", 0)
        return (
            f"p50 {statistics.median(ms):7.0f} ms  p95 {p95:7.0f} ms  max {ms[-1]:7.0f} ms  "
            f"{ok / wall:6.2f} ok/s  [{statuses}]"
        )


def _request(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 120
) -> tuple[str, bytes, http.client.HTTPResponse | None]:
    """One request on a new connection: (status or error name, body, response)."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        client.request(method, path, body=body, headers=headers)
        answer = client.getresponse()
        return str(answer.status), answer.read(), answer
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__, b"", None
    finally:
        client.close()


def main() -> None:
    """Run the benchmark once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heavy", type=int, default=12, help="concurrent heavy POST /within")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--locate-rate", type=float, default=4.0, help="/locate per second")
    parser.add_argument("--gdal", type=int, default=1, help="concurrent paged items readers")
    args = parser.parse_args()

    url, env = demo_city("default", ".twin/bench-load")
    with db.connect(url) as conn:
        row = conn.execute(
            "SELECT ST_AsGeoJSON(ST_Union(geom)) FROM jurisdictions WHERE level = 'district'"
        ).fetchone()
        buildings = conn.execute("SELECT count(*) FROM buildings").fetchone()[0]
    district = shapely.geometry.shape(json.loads(row[0]))
    heavy_body = json.dumps(
        {"geometry": shapely.geometry.mapping(district), "limit": 5000}
    ).encode()
    west, south, east, north = district.bounds
    rng = random.Random(7)

    def inside_point() -> tuple[float, float]:
        while True:
            lon, lat = rng.uniform(west, east), rng.uniform(south, north)
            if district.contains(shapely.Point(lon, lat)):
                return lon, lat

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"data: {buildings:,} buildings; {args.heavy} heavy POST /within (the whole district, "
        f"limit 5000), /locate {args.locate_rate:g}/s, {args.gdal} paged items reader(s), "
        f"{args.seconds:g} s"
    )
    print(
        "server settings: " + ", ".join(f"{k}={v}" for k, v in env.items() if k.startswith("TWIN_"))
    )

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    locate, heavy, pages, direct = Tally(), Tally(), Tally(), Tally()
    reads_done = [0]
    try:
        for _ in range(150):
            if _request(port, "GET", "/health", timeout=2)[0] == "200":
                break
            time.sleep(0.2)
        else:
            raise SystemExit("the server did not start")
        stop = threading.Event()

        def heavy_loop() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                status, _, answer = _request(port, "POST", "/within", heavy_body)
                heavy.add(status, time.perf_counter() - t, answer)
                if status in ("429", "503") and answer is not None:
                    # A polite client waits as told (bounded, so the run stays ~--seconds).
                    stop.wait(min(float(answer.getheader("Retry-After") or 1), 5))

        def locate_loop() -> None:
            period = 1 / args.locate_rate
            next_at = time.perf_counter()
            while not stop.is_set():
                lon, lat = inside_point()
                t = time.perf_counter()
                status, _, answer = _request(port, "GET", f"/locate?lon={lon}&lat={lat}")
                locate.add(status, time.perf_counter() - t, answer)
                next_at += period
                stop.wait(max(0.0, next_at - time.perf_counter()))

        def gdal_loop() -> None:
            path = "/collections/buildings/items?limit=1000"
            while not stop.is_set():
                t = time.perf_counter()
                status, body, answer = _request(port, "GET", path)
                pages.add(status, time.perf_counter() - t, answer)
                if status != "200":
                    # GDAL gives up on a failed page (the read is cut off): start again.
                    path = "/collections/buildings/items?limit=1000"
                    stop.wait(1)
                    continue
                links = json.loads(body).get("links", [])
                following = [link["href"] for link in links if link.get("rel") == "next"]
                if following:
                    parts = urlsplit(following[0])
                    path = f"{parts.path}?{parts.query}"
                else:
                    with pages.lock:
                        reads_done[0] += 1
                    path = "/collections/buildings/items?limit=1000"

        def sql_loop() -> None:
            # The same question straight to the data base: what the server's own share is.
            with db.connect(url) as conn:
                conn.autocommit = True
                while not stop.is_set():
                    t = time.perf_counter()
                    spatial.locate(conn, *inside_point())
                    direct.add("200", time.perf_counter() - t, None)
                    stop.wait(1 / args.locate_rate)

        threads = (
            [threading.Thread(target=heavy_loop) for _ in range(args.heavy)]
            + [threading.Thread(target=gdal_loop) for _ in range(args.gdal)]
            + [threading.Thread(target=locate_loop), threading.Thread(target=sql_loop)]
        )
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(args.seconds)
        stop.set()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"{'/locate':<26} {locate.figures(wall)}")
    print(f"{'locate SQL, no HTTP':<26} {direct.figures(wall)}")
    print(f"{'heavy POST /within':<26} {heavy.figures(wall)}")
    print(f"{'items pages, limit=1000':<26} {pages.figures(wall)}  full reads: {reads_done[0]}")
    failures = locate.failures + heavy.failures + pages.failures
    print(f"5xx (other than a refusal with Retry-After) or no answer: {failures}")


if __name__ == "__main__":
    main()
