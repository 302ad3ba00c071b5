"""Benchmark: GDAL's and QGIS's default reads of the demo city's buildings over OGC API.

    .venv/bin/python bench/clients.py [--skip-qgis]

Uses its own embedded cluster in .twin/bench-clients (or TWIN_DATABASE_URL) and loads the
default demo city there if it has none. Serves the API with uvicorn in this process, behind
a counter of the requests made, then times, each with its default options:

- `ogr2ogr -f GeoJSON out.json OAPIF:<api>/ buildings` (the whole layer),
- the same with `-where "height_m > 100"` (GDAL sends the filter to the server),
- QGIS's OAPIF provider reading every building (Debian's python3-qgis run with
  /usr/bin/python3 and QT_QPA_PLATFORM=offscreen).

Prints seconds, requests (with the page sizes asked) and features read. Record figures in
bench/RESULTS.md. Targets: GDAL's filtered read under 20 s, QGIS's read 10 s or less.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from timing import free_port

from api.app import create_app
from layers.demo.generate import generate_city
from layers.demo.load import load_demo
from twin import db
from twin.settings import DatabaseSettings, Settings

QGIS_PYTHON = "/usr/bin/python3"
# Run by QGIS's own Python: reads a layer through the OAPIF provider, as QGIS's map does.
QGIS_SCRIPT = """
import json, os, sys, time
from qgis.core import QgsApplication, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
started = time.perf_counter()
layer = QgsVectorLayer(f"url='{sys.argv[1]}' typename='{sys.argv[2]}'", "layer", "OAPIF")
if not layer.isValid():
    print(json.dumps({"error": layer.error().summary()}))
    sys.exit(1)
count = sum(1 for _ in layer.getFeatures())
print(json.dumps({"seconds": time.perf_counter() - started, "features": count}), flush=True)
os._exit(0)  # QGIS's own teardown may crash headless; the figures are out
"""

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RequestLog:
    """ASGI middleware that notes every request's path and `limit`, for the figures."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str | None, float]] = []  # path, limit, seconds

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """Note the request and the time the server took to answer it, then pass it on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode())
        limit = (query.get("limit") or [None])[0]
        self.requests.append((scope["path"], limit, time.perf_counter() - started))

    def since(self, start: int) -> str:
        """Requests made since index ``start``: the total, items pages by limit, server time."""
        made = self.requests[start:]
        pages = collections.Counter(
            limit or "none" for path, limit, _ in made if path.endswith("/items")
        )
        sizes = ", ".join(f"{n} at limit={limit}" for limit, n in pages.most_common())
        served = sum(seconds for *_, seconds in made)
        return f"{len(made):,} requests (items pages: {sizes or 'none'}; server {served:.1f} s)"


def _timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {done.stderr[-2000:]}")
    return seconds, done.stdout, done.stderr


def main() -> None:
    """Run the benchmark once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-qgis", action="store_true", help="GDAL only")
    args = parser.parse_args()

    settings = Settings()
    if not settings.database.database_url:
        settings = Settings(database=DatabaseSettings(data_dir=Path(".twin/bench-clients")))
    url = db.prepare(settings)
    with db.connect(url) as conn:
        demo = conn.execute("SELECT count(*) FROM buildings WHERE dataset = 'demo'").fetchone()[0]
        if demo == 0:
            load_demo(conn, generate_city("default", seed=1))
        buildings, tall = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE height_m > 100) FROM buildings"
        ).fetchone()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    gdal_version = subprocess.run(["ogr2ogr", "--version"], capture_output=True, text=True)
    print(f"client: {gdal_version.stdout.strip()}")
    print(f"data: {buildings:,} buildings, {tall:,} of them above 100 m")

    log = RequestLog(create_app(settings, database_url=url))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(log, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory() as folder:
            for label, extra in (
                ("GDAL ogr2ogr, whole layer", []),
                ('GDAL ogr2ogr, -where "height_m > 100"', ["-where", "height_m > 100"]),
            ):
                out = Path(folder) / "out.geojson"
                out.unlink(missing_ok=True)
                start = len(log.requests)
                seconds, _, stderr = _timed(
                    ["ogr2ogr", "-f", "GeoJSON", str(out), f"OAPIF:{base}/", "buildings", *extra]
                )
                features = len(json.loads(out.read_text())["features"])
                warning = " GDAL said: " + stderr.strip()[:200] if stderr.strip() else ""
                print(f"{label:<40} {seconds:7.1f} s  {features:>7,} features  {log.since(start)}{warning}")  # fmt: skip
        if args.skip_qgis:
            return
        if not _has_qgis():
            print("QGIS: not installed (apt-get install python3-qgis)")
            return
        start = len(log.requests)
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
        _, stdout, _ = _timed([QGIS_PYTHON, "-c", QGIS_SCRIPT, base, "buildings"], env=env)
        result = json.loads(stdout.strip().splitlines()[-1])
        print(
            f"{'QGIS OAPIF provider, all buildings':<40} {result['seconds']:7.1f} s  "
            f"{result['features']:>7,} features  {log.since(start)}"
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _has_qgis() -> bool:
    if not Path(QGIS_PYTHON).exists():
        return False
    done = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, check=False)
    return done.returncode == 0


if __name__ == "__main__":
    main()
