"""``twin tiles seed`` and ``twin tiles clear``: the shared tile cache filled ahead of the
first map client, or emptied.

Seeding renders each tile of the zooms and box asked into the shared tier (tiles/cache.py)
that every API process reads: a collection tile of each layer chosen, and the one-map
tile of them (of every layer, when none is named). A tile already cached and current is
left as it is, so a seed run again only renders what changed since.
"""

from __future__ import annotations

import argparse
import itertools
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from cli.common import as_json, console, out, prepare, progress_bars
from tiles import cache, matrix, vector
from twin import db, registry
from twin.errors import InvalidInput, TwinError
from twin.settings import Settings

MAX_SEED_TILES = 2_000_000  # a run asked for more is a mistake of zooms or box
SHOWN_FAILURES = 5


def cmd_tiles_seed(settings: Settings, args: argparse.Namespace) -> int:
    """Render the tiles of ``--zooms`` over ``--bbox`` into the shared cache."""
    if settings.tile_cache.tile_cache_mb == 0:
        raise InvalidInput("the shared tile cache is off (TWIN_TILE_CACHE_MB=0): nothing to seed")
    url = prepare(settings)
    with db.connect(url, autocommit=True) as conn:
        catalogue = registry.load(conn)
    names = args.layers or [layer.name for layer in catalogue.feature_layers()]
    for name in names:
        if not catalogue.layer(name).has_features:
            raise InvalidInput(f"{name!r} is a raster: it has no vector tiles", option="layers")
    box = args.bbox or _extent(catalogue, names)
    if box is None:
        console.print("nothing to seed: the layers hold no features yet", highlight=False)
        return 0
    # A collection tile of each layer, and the one map's of them all.
    targets: list[Sequence[str] | None] = [[name] for name in names]
    targets.append(list(names) if args.layers else None)
    # Listed up to the cap only: the world to z14 is 358 million tiles.
    most = MAX_SEED_TILES // len(targets)
    tiles = list(itertools.islice(matrix.tiles_under(args.tms, box, args.zooms), most + 1))
    total = len(tiles) * len(targets)
    if len(tiles) > most:
        raise InvalidInput(
            f"more than {MAX_SEED_TILES:,} tiles to seed (over {most:,} at zooms "
            f"{_zooms_text(args.zooms)} for {len(targets)} tilesets): choose fewer zooms or a "
            "smaller --bbox"
        )
    tile_cache = cache.TileCache(settings.tile_cache, vector.Limits.of(settings.tiles))
    counts = {"rendered": 0, "empty": 0, "cached": 0, "failed": 0, "bytes": 0}
    failures: list[str] = []
    local = threading.local()
    lock = threading.Lock()
    started = time.monotonic()
    connections: list[psycopg.Connection] = []

    def seed_one(work: tuple[Sequence[str] | None, matrix.Tile]) -> None:
        layers, tile = work
        if not hasattr(local, "conn"):
            local.conn = db.connect(url, autocommit=True)
            with lock:
                connections.append(local.conn)
        try:
            done = tile_cache.fill(local.conn, catalogue, args.tms, layers, tile)
        except (TwinError, psycopg.Error) as exc:
            with lock:
                counts["failed"] += 1
                if len(failures) < SHOWN_FAILURES:
                    failures.append(
                        f"{'/'.join(layers or ['*'])} {tile.z}/{tile.y}/{tile.x}: {exc}"
                    )
            return
        with lock:
            if done.source == "shared":
                counts["cached"] += 1
            else:
                counts["rendered"] += 1
                counts["empty"] += not done.data
                counts["bytes"] += len(done.data)

    work = [(layers, tile) for tile in tiles for layers in targets]
    try:
        with progress_bars() as progress, ThreadPoolExecutor(args.jobs) as pool:
            for i, _ in enumerate(pool.map(seed_one, work), 1):
                if i % 20 == 0 or i == total:
                    progress("seeding tiles", i, total)
    finally:
        for conn in connections:
            conn.close()
    summary: dict[str, Any] = {
        "zooms": [args.zooms.start, args.zooms.stop - 1], "bbox": list(box), "layers": names,
        "tilesets": len(targets), "tiles": total, **counts,
        "seconds": round(time.monotonic() - started, 2),
    }  # fmt: skip
    if args.json:
        out.print(as_json(summary), highlight=False, markup=False, soft_wrap=True)
    else:
        out.print(
            f"seeded {total:,} tiles (zooms {_zooms_text(args.zooms)}, {len(targets)} tilesets) "
            f"in {summary['seconds']} s: {counts['rendered']:,} rendered ({counts['empty']:,} "
            f"empty, {counts['bytes']:,} bytes), {counts['cached']:,} already cached, "
            f"{counts['failed']:,} failed",
            highlight=False,
        )
    for failure in failures:
        console.print(f"  failed: {failure}", highlight=False, markup=False)
    return 3 if counts["failed"] else 0


def cmd_tiles_clear(settings: Settings, args: argparse.Namespace) -> int:
    """Delete the shared cache's tiles (of ``--layers`` only, when given)."""
    url = prepare(settings)
    with db.connect(url, autocommit=True) as conn:
        if args.layers:
            catalogue = registry.load(conn)
            for name in args.layers:
                catalogue.layer(name)  # NotFound for an unknown one
        tile_cache = cache.TileCache(settings.tile_cache)
        gone = tile_cache.clear(conn, args.layers)
    out.print(f"removed {gone:,} cached tiles", highlight=False)
    return 0


def _extent(catalogue: registry.Catalogue, names: Sequence[str]) -> tuple[float, ...] | None:
    boxes = [catalogue.entries[name]["bbox"] for name in names if catalogue.entries[name]["bbox"]]
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))  # fmt: skip


def _zooms_text(zooms: range) -> str:
    last = zooms.stop - 1
    return str(zooms.start) if zooms.start == last else f"{zooms.start}-{last}"
