"""Benchmark: terrain tiles (Terrarium and shaded) over the demo district, z10 to z18.

    .venv/bin/python bench/terrain_tiles.py [--size default] [--tiles 30]

Uses its own embedded cluster in .twin/bench (or TWIN_DATABASE_URL when set) and loads
the demo city there if it has no terrain yet. For each zoom, up to ``--tiles`` tiles
under the DEM (spread over it) are drawn by tiles.terrain (one query for the DEM blocks,
the warp, the encoding) and then asked for over HTTP through the app (TestClient, in
process: routing, the pooled connection, the ETag). Prints ms per tile, p50 and p99.
Record figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from fastapi.testclient import TestClient
from timing import figures

from api.app import create_app
from layers.demo.generate import generate_city
from layers.demo.load import load_demo
from tiles import matrix
from tiles import terrain as terrain_tiles
from twin import db
from twin.errors import NotFound
from twin.settings import DatabaseSettings, Settings

ZOOMS = range(10, 19)


def main() -> None:
    """Run the benchmark once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "default"), default="default")
    parser.add_argument("--tiles", type=int, default=30, help="tiles per zoom")
    args = parser.parse_args()

    settings = Settings()
    if not settings.database.database_url:
        settings = Settings(database=DatabaseSettings(data_dir=Path(".twin/bench")))
    url = db.prepare(settings)
    with db.connect(url) as conn:
        try:
            found = terrain_tiles.terrain(conn)
        except NotFound:
            print(f"loading the {args.size} demo city (it has no terrain yet) ...")
            load_demo(conn, generate_city(args.size, seed=1))
            conn.commit()
            found = terrain_tiles.terrain(conn)
        chosen = {z: _spread(list(matrix.tiles_under("WebMercatorQuad", found.bounds,
                                                     range(z, z + 1))), args.tiles)
                  for z in ZOOMS}  # fmt: skip
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}; DEM {found.bounds}, "
            f"{found.min_m:.2f} to {found.max_m:.2f} m, TileJSON zooms "
            f"{terrain_tiles.zoom_range(found)}"
        )
        print("drawn by tiles.terrain (query + warp + PNG):")
        for kind in terrain_tiles.KINDS:
            for z, tiles in chosen.items():
                seconds, sizes = [], []
                started, cpu = time.perf_counter(), time.process_time()
                for tile in tiles:
                    t0 = time.perf_counter()
                    sizes.append(len(terrain_tiles.render(conn, found, kind, tile)))
                    seconds.append(time.perf_counter() - t0)
                wall = time.perf_counter() - started
                # This process's CPU per tile (the warp and the PNG; not the data base's):
                # what a busy machine changes least.
                cpu_ms = (time.process_time() - cpu) / len(tiles) * 1000
                line = figures(f"  {kind} z{z} ({len(tiles)} tiles)", seconds, wall, "tiles")
                print(f"{line}  cpu {cpu_ms:5.1f} ms  {sum(sizes) / len(sizes) / 1024:5.1f} KB")
    app = create_app(settings, database_url=url)
    with TestClient(app) as client:
        print("over HTTP (in process), and a revalidation (304):")
        for kind in terrain_tiles.KINDS:
            revalidated: list[float] = []
            for z, tiles in chosen.items():
                seconds = []
                started = time.perf_counter()
                for tile in tiles:
                    path = (
                        f"/collections/terrain/{kind}/tiles/WebMercatorQuad/{z}/{tile.y}/{tile.x}"
                    )
                    t0 = time.perf_counter()
                    answer = client.get(path)
                    seconds.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    client.get(path, headers={"If-None-Match": answer.headers["etag"]})
                    revalidated.append(time.perf_counter() - t0)
                wall = time.perf_counter() - started
                print(figures(f"  {kind} z{z}", seconds, wall, "tiles"))
            print(figures(f"  {kind} 304, every zoom", revalidated, sum(revalidated), "req"))


def _spread(tiles: list[matrix.Tile], n: int) -> list[matrix.Tile]:
    """``n`` tiles taken evenly from ``tiles`` (all of them when there are fewer)."""
    if len(tiles) <= n:
        return tiles
    step = len(tiles) / n
    return [tiles[int(i * step)] for i in range(n)]


if __name__ == "__main__":
    main()
