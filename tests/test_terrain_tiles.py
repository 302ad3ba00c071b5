"""Terrain tiles: Terrarium PNG decoded as deck.gl and MapLibre decode it, the shaded map
tile, their HTTP (204, 404, 400, ETag, 304) and TileJSON, a re-import, and the demo
city's ground under its buildings; the terrain found from /collections by links alone
(OGC API Tiles), with GDAL's feature driver still seeing only the feature layers."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import morecantile
import numpy as np
import psycopg
import pytest
import rasterio
from fastapi.testclient import TestClient
from PIL import Image
from pyproj import Transformer
from rasterio.transform import from_origin

from api.app import create_app
from layers.terrain import import_dem
from tests.conftest import _clone, _drop
from tests.helpers import make_data_dir, serve_app, settings_for
from tiles import matrix

TMS = morecantile.tms.get("WebMercatorQuad")
BASE = "/collections/terrain"
OGC_REL = "http://www.opengis.net/def/rel/ogc/1.0/"
TILESETS = {"map": OGC_REL + "tilesets-map", "coverage": OGC_REL + "tilesets-coverage"}
# A plane in UTM 51N, 2 km x 1.5 km of 10 m cells, rising from 0 m in the west to 100 m in
# the east; north-east of the small demo district, so the two DEMs do not overlap.
UTM = "EPSG:32651"
WEST_LON, NORTH_LAT = 121.50, 31.32
CELL, COLUMNS, ROWS = 10.0, 200, 150
_TO_UTM = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
X0, Y0 = (round(v, -1) for v in _TO_UTM.transform(WEST_LON, NORTH_LAT))


def plane(x: float | np.ndarray) -> float | np.ndarray:
    """The plane's elevation at UTM easting ``x``."""
    return 100.0 * (x - X0) / (COLUMNS * CELL)


def write_plane(path: Path, lift: float = 0.0) -> Path:
    """The plane as a GeoTIFF (cell values at cell centres), ``lift`` metres higher."""
    centres = X0 + (np.arange(COLUMNS) + 0.5) * CELL
    z = np.tile(plane(centres) + lift, (ROWS, 1)).astype("float32")
    with rasterio.open(path, "w", driver="GTiff", width=COLUMNS, height=ROWS, count=1,
                       dtype="float32", crs=UTM, transform=from_origin(X0, Y0, CELL, CELL)) as out:  # fmt: skip
        out.write(z, 1)
    return path


def inside(lon_share: float, lat_share: float = 0.5) -> tuple[float, float]:
    """A point of the plane: ``lon_share`` of the way east, ``lat_share`` south."""
    to_lonlat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    x = X0 + lon_share * COLUMNS * CELL
    y = Y0 - lat_share * ROWS * CELL
    return to_lonlat.transform(x, y)


def pixel_of(tile: morecantile.Tile, lon: float, lat: float) -> tuple[int, int]:
    """The row and column of the tile's pixel over ``lon``, ``lat``."""
    bounds = TMS.xy_bounds(tile)
    x, y = TMS.xy(lon, lat)
    size = TMS.matrix(tile.z).tileWidth
    column = int((x - bounds.left) / (bounds.right - bounds.left) * size)
    row = int((bounds.top - y) / (bounds.top - bounds.bottom) * size)
    return row, column


def pixel_centre(tile: morecantile.Tile, row: int, column: int) -> tuple[float, float]:
    """The lon, lat of the centre of the tile's pixel."""
    bounds = TMS.xy_bounds(tile)
    size = TMS.matrix(tile.z).tileWidth
    x = bounds.left + (column + 0.5) * (bounds.right - bounds.left) / size
    y = bounds.top - (row + 0.5) * (bounds.top - bounds.bottom) / size
    return TMS.lnglat(x, y)


def url(kind: str, tile: morecantile.Tile) -> str:
    return f"{BASE}/{kind}/tiles/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}"


def decode(png: bytes) -> np.ndarray:
    """Metres from a Terrarium PNG, as deck.gl's elevationDecoder computes them."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype("float64")
    return rgb[..., 0] * 256 + rgb[..., 1] + rgb[..., 2] / 256 - 32768


def rgba(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.mode == "RGBA"
    return np.asarray(image)


@pytest.fixture(scope="module")
def plane_url(template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The small demo with the plane imported beside its own DEM."""
    name = "terrain_plane_module"
    url = _clone(template_url, name)
    with psycopg.connect(url) as conn:
        import_dem(conn, write_plane(tmp_path_factory.mktemp("dem") / "plane.tif"))
    yield url
    _drop(template_url, name)


@pytest.fixture(scope="module")
def plane_client(plane_url: str) -> Iterator[TestClient]:
    app = create_app(settings_for(make_data_dir("twin-terrain-")), database_url=plane_url)
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("z", [11, 13, 15, 17])
def test_terrarium_tiles_decode_to_the_dems_elevations(plane_client: TestClient, z: int):
    for share in (0.1, 0.5, 0.9):
        lon, lat = inside(share)
        tile = TMS.tile(lon, lat, z)
        answer = plane_client.get(url("coverage", tile))
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        row, column = pixel_of(tile, lon, lat)
        x, _ = _TO_UTM.transform(*pixel_centre(tile, row, column))
        assert decode(answer.content)[row, column] == pytest.approx(plane(x), abs=0.1)


def test_a_tile_over_the_dems_edge_decodes_everywhere_to_ground_of_the_dem(
    plane_client: TestClient,
):
    lon, lat = inside(0.99)  # a z14 tile holds the plane's east edge and what lies beyond
    tile = TMS.tile(lon, lat, 14)
    elevations = decode(plane_client.get(url("coverage", tile)).content)
    # Beyond the DEM the nearest DEM value: the mesh ends flat, no wall to -32768 or 0.
    assert elevations.min() >= -0.5 and elevations.max() <= 100.5
    outside_row, outside_column = pixel_of(tile, *inside(1.05))
    assert elevations[outside_row, outside_column] == pytest.approx(100, abs=1.0)


def test_the_map_tile_is_drawn_where_the_dem_is_and_transparent_beyond(plane_client: TestClient):
    tile = TMS.tile(*inside(0.99), 14)
    answer = plane_client.get(url("map", tile))
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    pixels = rgba(answer.content)
    row, column = pixel_of(tile, *inside(0.97))
    assert pixels[row, column, 3] == 255
    row, column = pixel_of(tile, *inside(1.05))
    assert pixels[row, column, 3] == 0
    assert pixels[..., 3].min() == 0 and (pixels[..., 3] == 255).sum() > 1000
    # Coloured by height: the west of the plane is not the colour of its east.
    west_tile = TMS.tile(*inside(0.05), 14)
    west = rgba(plane_client.get(url("map", west_tile)).content)[pixel_of(west_tile, *inside(0.05))]
    east = pixels[pixel_of(tile, *inside(0.97))]
    assert np.abs(west[:3].astype(int) - east[:3].astype(int)).sum() > 60


@pytest.mark.parametrize("kind", ["coverage", "map"])
def test_a_tile_beyond_the_dem_is_404_as_its_limits_say(plane_client: TestClient, kind: str):
    # OGC API - Tiles: outside the tileset's tileMatrixSetLimits, 404 (204 is for an empty
    # tile within them).
    answer = plane_client.get(url(kind, TMS.tile(2.35, 48.85, 14)))  # Paris
    assert answer.status_code == 404 and "beyond the terrain" in answer.json()["detail"]
    limits = plane_client.get(f"{BASE}/{kind}/tiles/WebMercatorQuad").json()["tileMatrixSetLimits"]
    z14 = next(limit for limit in limits if limit["tileMatrix"] == "14")
    past = f"{BASE}/{kind}/tiles/WebMercatorQuad/14/{z14['maxTileRow'] + 1}/{z14['minTileCol']}"
    assert plane_client.get(past).status_code == 404
    last = f"{BASE}/{kind}/tiles/WebMercatorQuad/14/{z14['maxTileRow']}/{z14['minTileCol']}"
    assert plane_client.get(last).status_code == 200


@pytest.mark.parametrize(
    ("address", "named"),
    [("23/0/0", "z"), ("-1/0/0", "z"), ("3/8/0", "y"), ("3/0/8", "x"), ("3/-1/0", "y"),
     ("3/0/99999999999999999999999", "x"), ("a/0/0", "z"), ("3/0/1.5", "x"),
     ("+3/0/0", "z"), ("03/0/0", "z"), ("3/%200/0", "y"), ("3/0/1_0", "x")],
)  # fmt: skip
def test_an_impossible_tile_is_400_naming_the_index(
    plane_client: TestClient, address: str, named: str
):
    answer = plane_client.get(f"{BASE}/coverage/tiles/WebMercatorQuad/{address}")
    assert answer.status_code == 400, answer.text
    assert answer.json()["parameter"] == named


def test_an_unknown_query_parameter_is_named_as_one_with_what_the_route_takes(
    plane_client: TestClient,
):
    # A GET has no body: the message must not send the client to one (door test D14).
    tile = TMS.tile(*inside(0.5), 15)
    for path in (url("coverage", tile), f"{BASE}/map/tiles/WebMercatorQuad/tilejson.json",
                 f"{BASE}/coverage/tiles"):  # fmt: skip
        answer = plane_client.get(path, params={"zoom": "3"})
        assert answer.status_code == 400, path
        detail = answer.json()["detail"]
        assert "unknown query parameter 'zoom'" in detail, detail
        assert "body" not in detail, detail


def test_the_terrain_tilesets_lists_carry_their_limits(plane_client: TestClient):
    # As every tilesets list does (OGC's test suite picks its tile from them).
    for kind in ("map", "coverage"):
        [entry] = plane_client.get(f"{BASE}/{kind}/tiles").json()["tilesets"]
        tileset = plane_client.get(f"{BASE}/{kind}/tiles/WebMercatorQuad").json()
        assert entry["tileMatrixSetId"] == "WebMercatorQuad"
        assert entry["tileMatrixSetLimits"] == tileset["tileMatrixSetLimits"] != []


def test_ogcs_format_parameter_is_taken_when_it_names_the_format(plane_client: TestClient):
    tile = TMS.tile(*inside(0.5), 15)
    assert plane_client.get(url("coverage", tile), params={"f": "png"}).status_code == 200
    for path in (f"{BASE}/map/tiles/WebMercatorQuad/tilejson.json", f"{BASE}/map/tiles",
                 f"{BASE}/coverage/tiles/WebMercatorQuad"):  # fmt: skip
        assert plane_client.get(path, params={"f": "json"}).status_code == 200, path
    answer = plane_client.get(url("map", tile), params={"f": "json"})
    assert answer.status_code == 400 and answer.json()["parameter"] == "f"


def test_an_unknown_matrix_set_is_404(plane_client: TestClient):
    for path in ("coverage/tiles/WorldCRS84Quad/3/0/0", "map/tiles/Nope/tilejson.json"):
        answer = plane_client.get(f"{BASE}/{path}")
        assert answer.status_code == 404 and "WebMercatorQuad" in answer.json()["detail"]
    assert plane_client.get(f"{BASE}/map/tiles/Web%00/3/0/0").status_code == 400


@pytest.mark.parametrize("kind", ["coverage", "map"])
def test_a_tile_is_revalidated_with_its_etag(plane_client: TestClient, kind: str):
    tile = TMS.tile(*inside(0.5), 15)
    first = plane_client.get(url(kind, tile))
    tag = first.headers["etag"]
    assert first.headers["cache-control"] == "public, no-cache"
    assert first.headers["access-control-allow-origin"] == "*"  # WebGL pages on other origins
    weak = plane_client.get(url(kind, tile), headers={"If-None-Match": f"W/{tag}"})
    assert weak.status_code == 304
    again = plane_client.get(url(kind, tile), headers={"If-None-Match": f'"other", {tag}'})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    stale = plane_client.get(url(kind, tile), headers={"If-None-Match": '"terrain-old"'})
    assert stale.status_code == 200 and stale.content == first.content
    # Another tile, or the other kind of the same, has an ETag of its own.
    other = plane_client.get(url(kind, TMS.tile(*inside(0.1), 15))).headers["etag"]
    assert other != tag
    assert plane_client.get(url("map" if kind == "coverage" else "coverage", tile)).headers[
        "etag"
    ] not in (tag, other)


def test_a_long_if_none_match_list_is_answered_and_only_an_absurd_one_refused(
    plane_client: TestClient,
):
    # As on the vector tiles and the view's files (door test D9).
    tile = TMS.tile(*inside(0.5), 15)
    tag = plane_client.get(url("coverage", tile)).headers["etag"]
    others = ", ".join(f'"{i:040x}"' for i in range(60))
    asked = plane_client.get(url("coverage", tile), headers={"If-None-Match": f"{others}, {tag}"})
    assert asked.status_code == 304
    assert (
        plane_client.get(url("coverage", tile), headers={"If-None-Match": others}).status_code
        == 200
    )
    absurd = plane_client.get(url("coverage", tile), headers={"If-None-Match": others * 10})
    assert absurd.status_code == 400 and absurd.json()["parameter"] == "If-None-Match"


@pytest.mark.parametrize("kind", ["coverage", "map"])
def test_a_tile_address_ending_in_png_answers_the_same_tile(plane_client: TestClient, kind: str):
    # Raster clients (MapLibre styles, Leaflet, GDAL's XYZ) write {x}.png, as vector
    # clients write {x}.mvt: the same tile, headers and all, at one address in /api.
    tile = TMS.tile(*inside(0.5), 15)
    plain = plane_client.get(url(kind, tile))
    suffixed = plane_client.get(url(kind, tile) + ".png")
    assert suffixed.status_code == 200, suffixed.text
    assert suffixed.content == plain.content and suffixed.headers["etag"] == plain.headers["etag"]
    assert suffixed.headers["content-type"] == "image/png"
    again = plane_client.get(
        url(kind, tile) + ".png", headers={"If-None-Match": plain.headers["etag"]}
    )
    assert again.status_code == 304
    assert plane_client.get(url(kind, TMS.tile(2.35, 48.85, 14)) + ".png").status_code == 404
    for address, named in (("3/0/8.png", "x"), ("3/0/%2B1.png", "x"), ("3/0/0.mvt", "x")):
        answer = plane_client.get(f"{BASE}/{kind}/tiles/WebMercatorQuad/{address}")
        assert answer.status_code == 400 and answer.json()["parameter"] == named, address
    assert not [p for p in plane_client.get("/api").json()["paths"] if p.endswith(".png")]


def test_a_webgl_page_on_another_origin_reads_the_terrain(plane_client: TestClient):
    # deck.gl's TerrainLayer fetches these from the page's origin (door test D11).
    tile = TMS.tile(*inside(0.5), 15)
    for path in (url("coverage", tile), url("map", tile) + ".png",
                 f"{BASE}/coverage/tiles/WebMercatorQuad/tilejson.json", BASE):  # fmt: skip
        asked = plane_client.options(path, headers={"Origin": "https://deck.example",
                                                    "Access-Control-Request-Method": "GET"})  # fmt: skip
        assert asked.status_code == 204, (path, asked.status_code)
        assert asked.headers["access-control-allow-origin"] == "*"
        answer = plane_client.get(path, headers={"Origin": "https://deck.example"})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "*"


def test_the_tilejson_documents_say_where_and_how(plane_client: TestClient):
    coverage = plane_client.get(f"{BASE}/coverage/tiles/WebMercatorQuad/tilejson.json").json()
    shaded = plane_client.get(f"{BASE}/map/tiles/WebMercatorQuad/tilejson.json").json()
    assert coverage["tilejson"] == "3.0.0" and coverage["encoding"] == "terrarium"
    assert "encoding" not in shaded
    west, south, east, north = coverage["bounds"]
    for lon, lat in (inside(0.01, 0.01), inside(0.99, 0.99)):  # the plane ...
        assert west <= lon <= east and south <= lat <= north
    assert west < 121.40 < east and south < 31.24 < north  # ... and the demo's DEM
    # 10 m cells at 31° N: z14's pixels (8.2 m) are the first as fine.
    assert coverage["maxzoom"] == 14 and coverage["minzoom"] <= 12
    assert coverage["tileSize"] == 256
    for document, kind in ((coverage, "coverage"), (shaded, "map")):
        assert document["bounds"] == coverage["bounds"]
        template = document["tiles"][0]
        tile = TMS.tile(*inside(0.5), 15)
        filled = template.format(z=tile.z, y=tile.y, x=tile.x).replace("http://testserver", "")
        assert filled == url(kind, tile) and plane_client.get(filled).status_code == 200


def test_a_reimport_changes_the_tiles_and_their_etags(fresh_url: str, tmp_path: Path):
    tile = TMS.tile(*inside(0.5), 15)
    row, column = pixel_of(tile, *inside(0.5))
    app = create_app(settings_for(make_data_dir("twin-terrain-")), database_url=fresh_url)
    with TestClient(app) as client:
        with psycopg.connect(fresh_url) as conn:
            import_dem(conn, write_plane(tmp_path / "plane.tif"))
        first = client.get(url("coverage", tile))
        shaded = client.get(url("map", tile))
        with psycopg.connect(fresh_url) as conn:  # the same dataset, 10 m higher
            import_dem(conn, write_plane(tmp_path / "plane.tif", lift=10.0))
        after = client.get(url("coverage", tile), headers={"If-None-Match": first.headers["etag"]})
        assert after.status_code == 200 and after.headers["etag"] != first.headers["etag"]
        lifted = decode(after.content)[row, column] - decode(first.content)[row, column]
        assert lifted == pytest.approx(10.0, abs=0.02)
        again = client.get(url("map", tile), headers={"If-None-Match": shaded.headers["etag"]})
        assert again.status_code == 200 and again.headers["etag"] != shaded.headers["etag"]


def test_with_no_terrain_loaded_the_tiles_are_404_saying_how_to_load_one(fresh_url: str):
    with psycopg.connect(fresh_url) as conn:  # a data base no DEM was ever imported into
        conn.execute("DELETE FROM terrain_tiles")
        conn.execute("DELETE FROM layer_catalogue WHERE name = 'terrain'")
    app = create_app(settings_for(make_data_dir("twin-terrain-")), database_url=fresh_url)
    with TestClient(app) as client:
        for path in ("/coverage/tiles/WebMercatorQuad/14/6694/13717",
                     "/map/tiles/WebMercatorQuad/14/6694/13717",
                     "/coverage/tiles/WebMercatorQuad/tilejson.json",
                     "", "?f=html", "/map/tiles", "/coverage/tiles",
                     "/map/tiles/WebMercatorQuad", "/coverage/tiles/WebMercatorQuad"):  # fmt: skip
            answer = client.get(f"{BASE}{path}")
            assert answer.status_code == 404, path
            assert "twin terrain import" in answer.json()["detail"]
        # /collections lists the feature layers alone, in JSON and in HTML.
        listed = client.get("/collections").json()["collections"]
        assert "buildings" in {c["id"] for c in listed}
        assert all(c["itemType"] == "feature" for c in listed)
        assert "terrain" not in client.get("/collections?f=html").text


def test_the_demo_city_stands_on_its_terrain(client: TestClient, demo_url: str):
    with psycopg.connect(demo_url) as conn:
        standing = conn.execute(
            "SELECT ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)), base_elevation_m"
            " FROM buildings WHERE dataset = 'demo' ORDER BY id LIMIT 40"
        ).fetchall()
        standing += conn.execute(
            "SELECT ST_X(geom), ST_Y(geom), ground_elevation_m"
            " FROM pipe_nodes WHERE dataset = 'demo' ORDER BY id DESC LIMIT 40"
        ).fetchall()
    tilejson = client.get(f"{BASE}/coverage/tiles/WebMercatorQuad/tilejson.json").json()
    decoded: dict[morecantile.Tile, np.ndarray] = {}
    for lon, lat, elevation in standing:
        tile = TMS.tile(lon, lat, tilejson["maxzoom"])
        if tile not in decoded:
            answer = client.get(url("coverage", tile))
            assert answer.status_code == 200
            decoded[tile] = decode(answer.content)
        ground = decoded[tile][pixel_of(tile, lon, lat)]
        assert ground == pytest.approx(elevation, abs=0.1), (lon, lat)


# --- found by links: /collections, the collection, its tilesets, a tile ------------------


def _get(client: TestClient, href: str) -> Any:
    """The JSON at ``href`` (an absolute link of the app's), which must answer 200."""
    answer = client.get(href.replace("http://testserver", ""))
    assert answer.status_code == 200, (href, answer.text)
    return answer.json()


def _link(document: dict[str, Any], rel: str) -> dict[str, Any]:
    (found,) = [link for link in document["links"] if link["rel"] == rel]
    return found


def _tileset(client: TestClient, collection: dict[str, Any], kind: str) -> dict[str, Any]:
    """The WebMercatorQuad tileset of ``kind``, from the collection by links alone."""
    tilesets = _get(client, _link(collection, TILESETS[kind])["href"])["tilesets"]
    (mercator,) = [t for t in tilesets if t["tileMatrixSetURI"] == TMS.uri]
    assert mercator["dataType"] == kind
    return _get(client, _link(mercator, "self")["href"])


def test_a_client_finds_the_terrain_tiles_from_collections_by_links(plane_client: TestClient):
    landing = _get(plane_client, "/")
    collections = _get(plane_client, _link(landing, "data")["href"])["collections"]
    by_id = {c["id"]: c for c in collections}
    terrain = by_id.pop("terrain")
    assert "buildings" in by_id and all(c["itemType"] == "feature" for c in by_id.values())
    # A coverage with no items: nothing tells a Features client to ask for them.
    assert "itemType" not in terrain and terrain["dataType"] == "coverage"
    rels = {link["rel"] for link in terrain["links"]}
    assert not rels & {"items", OGC_REL + "queryables", OGC_REL + "tilesets-vector"}
    assert rels >= {"self", "alternate", *TILESETS.values()}
    west, south, east, north = terrain["extent"]["spatial"]["bbox"][0]
    for lon, lat in (inside(0.01, 0.01), inside(0.99, 0.99)):
        assert west <= lon <= east and south <= lat <= north
    assert _get(plane_client, _link(terrain, "self")["href"]) == terrain
    page = plane_client.get(_link(terrain, "alternate")["href"].replace("http://testserver", ""))
    assert page.headers["content-type"].startswith("text/html")
    assert "/collections/terrain/map/tiles" in page.text
    listing = plane_client.get("/collections?f=html").text
    assert 'href="http://testserver/collections/terrain?f=html"' in listing

    centre = inside(0.5)
    for kind in ("coverage", "map"):
        tileset = _tileset(plane_client, terrain, kind)
        template = _link(tileset, "item")
        assert template["type"] == "image/png" and template["templated"] is True
        deepest = tileset["tileMatrixSetLimits"][-1]
        tile = TMS.tile(*centre, int(deepest["tileMatrix"]))
        assert deepest["minTileCol"] <= tile.x <= deepest["maxTileCol"]
        assert deepest["minTileRow"] <= tile.y <= deepest["maxTileRow"]
        href = template["href"].format(tileMatrix=tile.z, tileRow=tile.y, tileCol=tile.x)
        answer = plane_client.get(href.replace("http://testserver", ""))
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        if kind == "coverage":
            row, column = pixel_of(tile, *centre)
            x, _ = _TO_UTM.transform(*pixel_centre(tile, row, column))
            assert decode(answer.content)[row, column] == pytest.approx(plane(x), abs=0.1)
        else:
            assert rgba(answer.content)[pixel_of(tile, *centre)][3] == 255


@pytest.mark.parametrize("kind", ["coverage", "map"])
def test_a_terrain_tileset_gives_its_scheme_limits_and_tilejson(
    plane_client: TestClient, kind: str
):
    tileset = _tileset(plane_client, _get(plane_client, BASE), kind)
    assert tileset["dataType"] == kind
    assert tileset["crs"] == "http://www.opengis.net/def/crs/EPSG/0/3857"
    assert tileset["tileMatrixSetURI"] == TMS.uri
    scheme = _get(plane_client, _link(tileset, OGC_REL + "tiling-scheme")["href"])
    assert scheme["id"] == "WebMercatorQuad"
    tilejson = _get(plane_client, _link(tileset, "alternate")["href"])
    assert tilejson["tilejson"] == "3.0.0" and ("encoding" in tilejson) == (kind == "coverage")
    assert _get(plane_client, _link(tileset, "collection")["href"])["id"] == "terrain"
    # The limits: every zoom (each is drawn; TileJSON names those worth asking for), and
    # at each the tiles under the DEM's bounds.
    limits = tileset["tileMatrixSetLimits"]
    zooms = [int(limit["tileMatrix"]) for limit in limits]
    assert zooms == list(range(matrix.MAX_ZOOM + 1))
    assert 0 < tilejson["minzoom"] < tilejson["maxzoom"] < matrix.MAX_ZOOM
    west, south, east, north = tilejson["bounds"]
    for limit, z in zip(limits, zooms, strict=True):
        first, last = TMS.tile(west, north, z), TMS.tile(east, south, z)
        assert (limit["minTileCol"], limit["maxTileCol"]) == (first.x, last.x)
        assert (limit["minTileRow"], limit["maxTileRow"]) == (first.y, last.y)
    assert tileset["boundingBox"]["lowerLeft"] == [west, south]
    assert tileset["boundingBox"]["upperRight"] == [east, north]
    lon, lat, zoom = tilejson["center"]
    assert tileset["centerPoint"]["coordinates"] == [lon, lat]
    assert tileset["centerPoint"]["tileMatrix"] == str(zoom)
    answer = plane_client.get(f"{BASE}/{kind}/tiles/WebMercatorQuad")
    assert answer.headers["access-control-allow-origin"] == "*"
    assert plane_client.get(f"{BASE}/{kind}/tiles/Nope").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "items"), ("GET", "items/1"), ("POST", "items"), ("GET", "queryables"),
     ("GET", "tiles"), ("GET", "tiles/WebMercatorQuad/14/6694/13717")],
)  # fmt: skip
def test_the_terrains_feature_routes_are_404_naming_its_tiles(
    plane_client: TestClient, method: str, path: str
):
    answer = plane_client.request(method, f"{BASE}/{path}")
    assert answer.status_code == 404
    assert "/collections/terrain/coverage/tiles" in answer.json()["detail"]


@pytest.fixture(scope="module")
def plane_server(plane_url: str) -> Iterator[str]:
    """The app with the plane, served by uvicorn on a free loopback port (for GDAL)."""
    app = create_app(settings_for(make_data_dir("twin-terrain-live-")), database_url=plane_url)
    with serve_app(app) as base:
        yield base


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="gdal-bin is not installed")
def test_gdals_feature_driver_lists_the_feature_layers_and_not_the_terrain(
    plane_server: str, plane_client: TestClient
):
    collections = plane_client.get("/collections").json()["collections"]
    feature_layers = {c["id"] for c in collections if c.get("itemType") == "feature"}
    assert "terrain" in {c["id"] for c in collections} and "terrain" not in feature_layers
    listing = subprocess.run(["ogrinfo", "-ro", "-q", f"OAPIF:{plane_server}"],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    # "1: buildings (Polygon)": the layers GDAL found, by name
    layers = {
        line.split(":", 1)[1].split()[0] for line in listing.stdout.splitlines() if ":" in line
    }
    assert layers == feature_layers
    summary = subprocess.run(["ogrinfo", "-ro", "-so", f"OAPIF:{plane_server}", "sensors"],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert summary.returncode == 0, summary.stderr
    assert "Feature Count:" in summary.stdout


def test_many_terrain_tiles_asked_at_once_all_draw(plane_server: str):
    # The view asks a screenful of terrain tiles at once. Each is drawn in its own server
    # thread; rasterio's warp silences a warning through the process's one warnings filter
    # list, so two warps at once would let it through (here, with the suite's
    # -W error::NotGeoreferencedWarning, as a 500).
    west, north = inside(0.0, 0.0)
    east, south = inside(1.0, 1.0)
    addresses = [url(kind, tile) for z in (14, 15, 16, 17)
                 for tile in TMS.tiles(west, south, east, north, [z]) for kind in ("coverage", "map")]  # fmt: skip
    assert len(addresses) > 150

    def ask(share: list[str]) -> list[tuple[str, int]]:
        with httpx.Client(base_url=plane_server, timeout=60) as http:
            return [(a, http.get(a).status_code) for a in share for _ in range(2)]

    with ThreadPoolExecutor(8) as pool:
        answers = [a for part in pool.map(ask, [addresses[i::8] for i in range(8)]) for a in part]
    assert {status for _, status in answers} == {200}, [a for a in answers if a[1] != 200][:5]
