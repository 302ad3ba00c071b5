"""Benchmark: import 1,000,000 buildings from a GeoPackage, beside ogr2ogr on the same file.

    .venv/bin/python bench/import_buildings.py [--count 1000000]

Makes (once, then reuses) bench/out/buildings_<count>.gpkg: rectangles with OSM-style
fields ("building:levels" as text, "height" like "18.5 m", names, uses). Then loads it
into the same embedded PostGIS (.twin/bench, or TWIN_DATABASE_URL):
  1. `twin import buildings` (validation, field mapping, value parsing, upsert by source id)
     into the empty buildings layer of a new data base: a city's first load;
  2. `twin import buildings` into the buildings layer beside what it already holds (the
     large demo city, after `make bench SIZE=large`);
  3. `ogr2ogr -f PostgreSQL` into a new table of its own (COPY, index built after), no
     mapping: compare with 1;
  4. `ogr2ogr -append` of the same file into that table, now indexed and full: compare
     with 2;
  5. `ogr2ogr -append` of the file's first 100,000 features into the buildings layer
     itself, fields renamed with -sql: the same table twin import writes to.
Prints the rates. Record figures in bench/RESULTS.md.
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
from psycopg import sql
from sqlalchemy.engine import make_url

from layers.ingest import ImportOptions, ImportReport, import_file
from twin import db
from twin.settings import DatabaseSettings, Settings

OUT = Path(__file__).parent / "out"
OGR2OGR = shutil.which("ogr2ogr")
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


def _fresh_database(url: str, name: str) -> str:
    """An empty one-map data base of its own in the same cluster, for a first load."""
    with db.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    fresh = make_url(url).set(database=name).render_as_string(hide_password=False)
    return db.prepare(
        Settings(database=DatabaseSettings(database_url=fresh))
    )  # PostGIS, schema, layers: as any start


def _settle(url: str, *tables: str) -> None:
    """Quiet the cluster before a timed run: the tables just loaded vacuumed (else an
    autovacuum worker would do it, competing for the two cores with the next run), no
    autovacuum worker left, and a checkpoint behind it."""
    with db.connect(url, autocommit=True) as conn:
        for table in tables:
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0]:  # type: ignore[index]
                conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
        for _ in range(600):
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
            ).fetchone()[0]  # type: ignore[index]
            if not busy:
                break
            time.sleep(0.1)
        conn.execute("CHECKPOINT")


def _twin_import(url: str, path: Path) -> tuple[float, ImportReport]:
    _settle(url, "buildings")  # no dead rows of an earlier run
    with db.connect(url) as conn:
        started = time.perf_counter()
        report = import_file(conn, "buildings", path, ImportOptions(dataset="bench"))
    return time.perf_counter() - started, report


def _ogr2ogr(url: str, path: Path, extra: list[str], target: str = "bench_ogr_buildings") -> float:
    u = make_url(url)
    pg = f"PG:host={u.host} port={u.port} dbname={u.database} user={u.username} password={u.password}"
    _settle(url, "buildings", target)
    started = time.perf_counter()
    subprocess.run(
        [OGR2OGR, "-f", "PostgreSQL", pg, str(path), "-nln", target, *extra],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    """Run the loads and print their rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    args = parser.parse_args()
    path = make_file(args.count)

    settings = Settings()
    if not settings.database.database_url:
        settings = Settings(database=DatabaseSettings(data_dir=Path(".twin/bench")))
    url = db.prepare(settings)
    with db.connect(url) as conn:
        conn.execute("DELETE FROM buildings WHERE dataset IN ('bench', 'bench_ogr')")
        conn.execute("DROP TABLE IF EXISTS bench_ogr_buildings")
        held = conn.execute("SELECT count(*) FROM buildings").fetchone()[0]  # type: ignore[index]
        conn.commit()
    first_load = _fresh_database(url, "bench_first_load")

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"file: {path.name}, {path.stat().st_size / 1024**2:,.0f} MB, {args.count:,} buildings")
    rate = args.count
    first, report = _twin_import(first_load, path)
    _settle(first_load, "buildings")  # its autovacuum would run into the next runs
    print(f"twin import, empty layer:        {first:6.1f} s  {rate / first:>9,.0f} features/s")
    print(f"  ({report.summary()})")
    beside, _ = _twin_import(url, path)
    print(
        f"twin import, beside {held:,} buildings: {beside:6.1f} s  {rate / beside:>9,.0f} features/s"
    )
    if OGR2OGR is None:
        print("ogr2ogr not found (apt-get install gdal-bin): no comparison")
        return
    new = _ogr2ogr(url, path, ["-lco", "GEOMETRY_NAME=geom", "-lco", "SPATIAL_INDEX=GIST",
                               "-overwrite"])  # fmt: skip
    print(
        f"ogr2ogr, new table:              {new:6.1f} s  {rate / new:>9,.0f} features/s"
        f"  (twin import into an empty layer: {new / first:.2f}x its rate)"
    )
    # The same file again into that table, now indexed and full: what twin import faces
    # beside the city.
    append = _ogr2ogr(url, path, ["-append", "--config", "PG_USE_COPY", "YES"])
    print(
        f"ogr2ogr -append, indexed table:  {append:6.1f} s  {rate / append:>9,.0f} features/s"
        f"  (twin import beside the city: {append / beside:.2f}x its rate)"
    )
    # ogr2ogr into the buildings layer itself (its fields renamed, values not parsed): the
    # table's key is an id that ogr2ogr must read back, so it inserts row by row. A sample
    # of the file keeps this run short.
    sample = min(args.count, 100_000)
    # ogr2ogr's SQL over our own file: its layer name and a number, nothing from input.
    query = (
        "SELECT osm_id AS source_id, building AS use, name, 'bench_ogr' AS dataset, "  # noqa: S608
        f'geom FROM "{path.stem}" WHERE fid <= {sample}'
    )
    same = _ogr2ogr(url, path, ["-append", "-nlt", "MULTIPOLYGON", "-dialect", "SQLite",
                                "-sql", query, "--config", "PG_USE_COPY", "YES"],
                    target="buildings")  # fmt: skip
    theirs = sample / same
    print(
        f"ogr2ogr -append, buildings layer: {same:6.1f} s  {theirs:>9,.0f} features/s"
        f"  (first {sample:,}; twin import beside the city: {rate / beside / theirs:.1f}x its rate)"
    )
    with db.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM buildings WHERE dataset = 'bench_ogr'")
        conn.execute("DROP DATABASE bench_first_load")


if __name__ == "__main__":
    main()
