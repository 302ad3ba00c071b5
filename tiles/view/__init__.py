"""The 3D view of the one map (一屏观全域): one page, drawn by deck.gl over the one map's
own tiles, that works with no internet.

``page`` writes the page for a catalogue: the deck (``tiles.view.deck``, with pydeck) in
our own HTML around it, which names no outside host; ``asset`` gives the files the page
loads (``tiles.view.assets``): deck.gl as pydeck ships it, loaders.gl's workers, and the
page's own script and style sheet.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

import psycopg

from tiles import terrain as terrain_tiles
from tiles.view import assets, deck
from twin import registry
from twin.errors import NotFound
from twin.network.topology import PRESSURE_NETWORKS
from twin.schema import SRID

PAGE = Template((Path(__file__).resolve().parent / "page.html").read_text(encoding="utf-8"))
POLL_S = 5  # how often the page asks the change log whether incidents changed
# Where the camera starts when the catalogue has no extent yet (an empty one map).
EMPTY_BBOX = (121.40, 31.20, 121.50, 31.28)
# The layers whose extent is the city's (incidents may be reported from anywhere).
CITY_LAYERS = ("buildings", "public_spaces", "jurisdictions")


@dataclass(frozen=True)
class Served:
    """An asset's bytes as sent: plain and gzipped, its media type and its ETag."""

    data: bytes
    gzipped: bytes
    media_type: str
    etag: str


@cache
def asset(name: str) -> Served:
    """The file ``name`` of the page (``assets.ASSETS``), read once; NotFound for a name
    that is not one, or a file that is missing (the workers before ``npm ci``)."""
    found = assets.ASSETS.get(name)
    if found is None:
        raise NotFound(f"no view file named {name[:80]!r} (there are: {', '.join(assets.ASSETS)})")
    if not found.path.exists():
        raise NotFound(
            f"{name} is not installed: run `make setup` (npm ci puts it in node_modules)"
        )
    data = found.path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:20]
    return Served(data, gzip.compress(data, 6, mtime=0), found.media_type, f'"{digest}"')


def _url(name: str) -> str:
    """The address of an asset, with its content's digest: cached for good by browsers,
    and asked for anew whenever the file changes."""
    try:
        version = asset(name).etag.strip('"')[:12]
    except NotFound:
        version = "missing"
    return f"{deck.static_url(name)}?v={version}"


def city_bbox(catalogue: registry.Catalogue) -> tuple[float, float, float, float]:
    """The extent of the city's layers (west, south, east, north) in the catalogue."""
    boxes = [
        catalogue.entries[name]["bbox"]
        for name in CITY_LAYERS
        if name in catalogue.entries and catalogue.entries[name].get("bbox")
    ]
    if not boxes:
        return EMPTY_BBOX
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def terrain_bbox(catalogue: registry.Catalogue) -> tuple[float, ...] | None:
    """The extent of the ground elevation model (``twin terrain import``), or None when
    no DEM is loaded."""
    entry = catalogue.entries.get("terrain")
    if not entry or not entry.get("feature_count") or not entry.get("bbox"):
        return None
    return tuple(float(v) for v in entry["bbox"])


# The ground at a point: the DEM's elevation there, else the buildings' usual base (their
# base elevations are above the same datum), else the datum itself.
_GROUND_SQL = """
    SELECT coalesce(
        (SELECT ST_Value(rast, 1, p.point) FROM terrain_tiles
         WHERE ST_Intersects(rast, p.point) LIMIT 1),
        (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY base_elevation_m)
         FROM buildings WHERE base_elevation_m IS NOT NULL),
        0)
    FROM (SELECT ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), %(srid)s) AS point) AS p
"""


def ground_level(conn: psycopg.Connection, lon: float, lat: float) -> float:
    """The ground's elevation (metres) at ``lon``, ``lat``, as the view draws it."""
    row = conn.execute(_GROUND_SQL, {"lon": lon, "lat": lat, "srid": SRID}).fetchone()
    return round(float(row[0]), 2) if row and row[0] is not None else 0.0


def _script_json(value: Any) -> str:
    """JSON to put inside a <script> element: no "</script>" or "<!--" can end it early."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page(conn: psycopg.Connection, catalogue: registry.Catalogue) -> str:
    """The 3D view's HTML for the one map as ``catalogue`` describes it."""
    terrain = terrain_bbox(catalogue)
    terrain_min_zoom = 0
    if terrain is not None:
        terrain_min_zoom = terrain_tiles.zoom_range(terrain_tiles.terrain(conn))[0]
    extents = {layer.name: catalogue.entries[layer.name]["bbox"]
               for layer in catalogue.feature_layers()
               if catalogue.entries[layer.name].get("bbox")}  # fmt: skip
    view = deck.fit(city_bbox(catalogue))
    ground = ground_level(conn, view.longitude, view.latitude)
    drawn = [layer.id for layer in deck.layers(terrain=terrain, url=_url)]
    config = {
        "layers": [{"id": name, "title": deck.TITLES[name]} for name in drawn],
        "version": catalogue.version,
        "pollSeconds": POLL_S,
        "legend": {
            "Pipes 管网": deck.NETWORK_COLOURS,
            "Sensors 感知": deck.SENSOR_COLOURS,
            "Incidents 事件": deck.INCIDENT_COLOURS,
            "Isolation 关阀隔离": {
                **deck.ISOLATION_COLOURS,
                "close": [230, 0, 0, 255],  # its red ring is what is seen
                "sensitive": deck.SENSITIVE_RING,
            },
        },
        # The isolation tool (staff): the networks isolated by valves, and the height its
        # answer is drawn at.
        "isolation": {
            "title": "Isolation 关阀隔离",
            "networks": list(PRESSURE_NETWORKS),
            "z": round(ground + deck.ISOLATION_LIFT_M, 2),
        },
    }
    return PAGE.substitute(
        deckgl=_url("deckgl.js"),
        script=_url("one-map.js"),
        style=_url("one-map.css"),
        deck=_script_json(
            deck.deck_json(
                view,
                terrain=terrain,
                ground=ground,
                url=_url,
                extents=extents,
                terrain_min_zoom=terrain_min_zoom,
            )
        ),
        config=_script_json(config),
    )
