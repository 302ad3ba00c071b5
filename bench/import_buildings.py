"""Benchmark: import 1,000,000 buildings from a GeoPackage, beside ogr2ogr on the same file.

    .venv/bin/python bench/import_buildings.py [--count 1000000]

Makes (once, then reuses) bench/out/buildings_<count>.gpkg: rectangles with OSM-style
fields ("building:levels" as text, "height" like "18.5 m", names, uses). Then loads it
twice into the same embedded PostGIS (.twin/bench, or TWIN_DATABASE_URL):
  1. `twin import buildings` (validation, field mapping, value parsing, upsert by source id)
     into the buildings table, beside what it already holds;
  2. `ogr2ogr -f PostgreSQL` into a new table of its own (COPY, index built after), no mapping;
  3. `ogr2ogr -append` of the same file into that table, now indexed and full.
Prints both rates. Record figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pyogrio
import shapely
from sqlalchemy.engine import make_url

from layers.ingest import ImportOptions, import_file
from twin import db
from twin.settings import Settings

OUT = Path(__file__).parent / "out"
USES = np.array(["apartments", "residential", "retail", "office", "yes", "industrial", "school"])


def make_file(count: int) -> Path:
    """A GeoPackage of ``count`` building rectangles around Shanghai, made once."""
    path = OUT / f"buildings_{count}.gpkg"
    if path.exists():
        return path
    OUT.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    side = int(np.ceil(np.sqrt(count)))
    i = np.arange(count)
    x = 121.20 + (i % side) * 0.0004
    y = 31.00 + (i // side) * 0.0004
    w = rng.uniform(0.0001, 0.0003, count)
    h = rng.uniform(0.0001, 0.0003, count)
    boxes = shapely.box(x, y, x + w, y + h)
    floors = rng.integers(1, 34, count)
    heights = np.where(
        rng.random(count) < 0.7, np.char.add((floors * 3.1).round(1).astype(str), " m"), ""
    )
    fields = {
        "osm_id": np.char.add("w", i.astype(str)).astype(object),
        "building": USES[rng.integers(0, len(USES), count)].astype(object),
        "building:levels": floors.astype(str).astype(object),
        "height": heights.astype(object),
        "name": np.where(rng.random(count) < 0.1, "大楼", "").astype(object),
    }
    started = time.perf_counter()
    pyogrio.raw.write(
        str(path), shapely.to_wkb(boxes), list(fields.values()), list(fields),
        driver="GPKG", geometry_type="Polygon", crs="EPSG:4326",
    )  # fmt: skip
    print(f"made {path} in {time.perf_counter() - started:.1f} s")
    return path


def main() -> None:
    """Run both loads and print their rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    args = parser.parse_args()
    path = make_file(args.count)

    settings = Settings()
    if not settings.database_url:
        settings = Settings(data_dir=Path(".twin/bench"))
    url = db.prepare(settings)
    with db.connect(url) as conn:
        conn.execute("DELETE FROM buildings WHERE dataset = 'bench'")
        conn.execute("DROP TABLE IF EXISTS bench_ogr_buildings")
        conn.commit()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"file: {path.name}, {path.stat().st_size / 1024**2:,.0f} MB, {args.count:,} buildings")

    started = time.perf_counter()
    with db.connect(url) as conn:
        report = import_file(conn, "buildings", path, ImportOptions(dataset="bench"))
    ours = time.perf_counter() - started
    print(
        f"twin import:  {ours:7.1f} s  {report.read / ours:>10,.0f} features/s  ({report.summary()})"
    )

    ogr2ogr = shutil.which("ogr2ogr")
    if ogr2ogr is None:
        print("ogr2ogr not found (apt-get install gdal-bin): no comparison")
        return
    u = make_url(url)
    pg = f"PG:host={u.host} port={u.port} dbname={u.database} user={u.username} password={u.password}"
    common = [ogr2ogr, "-f", "PostgreSQL", pg, str(path), "-nln", "bench_ogr_buildings"]
    runs = (
        (
            "ogr2ogr, new table",
            ["-lco", "GEOMETRY_NAME=geom", "-lco", "SPATIAL_INDEX=GIST", "-overwrite"],
        ),
        # The same file again into that table, now indexed and full: what twin import faces.
        ("ogr2ogr -append", ["-append", "--config", "PG_USE_COPY", "YES"]),
    )
    for label, extra in runs:
        started = time.perf_counter()
        subprocess.run([*common, *extra], check=True, stderr=subprocess.DEVNULL)
        theirs = time.perf_counter() - started
        print(
            f"{label + ':':<20}{theirs:7.1f} s  {args.count / theirs:>10,.0f} features/s  "
            f"(twin import runs at {theirs / ours:.2f}x its rate)"
        )


if __name__ == "__main__":
    main()
