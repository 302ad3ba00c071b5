"""Vector tiles and OGC API Tiles, through the real app on the small demo city: tiles
decoded as clients decode them (mapbox-vector-tile, and GDAL's MVT driver through
pyogrio), their content per zoom, their HTTP, their caps, and nonsense at the doors."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import mapbox_vector_tile
import morecantile
import psycopg
import pyogrio
import pytest
import shapely
from fastapi.testclient import TestClient

from api.app import create_app
from layers import scenes
from tests.conftest import _clone, _drop
from tests.helpers import make_data_dir, serve_app, settings_for
from tiles import matrix, vector
from twin import registry
from twin.incidents import intake
from twin.settings import TileCacheSettings, TileSettings

TMS = morecantile.tms.get("WebMercatorQuad")
REPORTER = {"name": "李秘密", "phone": "13987654321", "email": "mimi@example.cn"}
SECRET_TEXT = "我家住在三楼东户"


def _tiles_settings(**tiles: object):
    """Settings with other tile limits, and no tile cache: the shared one holds the tiles
    other apps of this module rendered under the default limits."""
    settings = settings_for(make_data_dir("twin-tiles-"))
    uncached = TileCacheSettings(_env_file=None, tile_memory_mb=0, tile_cache_mb=0)  # type: ignore[call-arg]
    return settings.model_copy(
        update={"tiles": TileSettings(_env_file=None, **tiles), "tile_cache": uncached}  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def city_url(template_url: str) -> Iterator[str]:
    """A copy of the demo city of this module's own: a report with a reporter's name and
    phone, an overdue incident and a scene are added to it."""
    name = "tiles_city"
    url = _clone(template_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        lon, lat = _centre(conn)
        taken = intake.report(conn, category_code="SJ0401", channel="hotline_12345",
                              lon=lon, lat=lat, reporter=REPORTER,
                              description=SECRET_TEXT, address="演示路1号")  # fmt: skip
        conn.execute(
            "UPDATE incidents SET status = 'reported', unit_code = NULL,"
            " due_response_at = now() - interval '1 hour' WHERE id = %s",
            (taken.id,),
        )
        scenes.create_scene(conn, "benches", geometry_type="point",
                            properties={"seats": "integer", "material": "string"})  # fmt: skip
        conn.execute(
            "INSERT INTO scene_benches (source_id, properties, geom) VALUES"
            ' (\'b1\', \'{"seats": 4, "material": "wood", "donor": "张三"}\','
            " ST_SetSRID(ST_MakePoint(%s, %s), 4326))",
            (lon, lat),
        )
    yield url
    _drop(template_url, name)


@pytest.fixture(scope="module")
def client(city_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(_tiles_settings(), database_url=city_url)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def warm(city_url: str) -> Iterator[TestClient]:
    """An app that keeps tiles in memory, where TileFront answers them ahead of the
    routes once warm (and no shared tier: the other apps' tiles are not its own)."""
    settings = settings_for(make_data_dir("twin-tiles-"))
    memory = TileCacheSettings(_env_file=None, tile_memory_mb=64, tile_cache_mb=0)  # type: ignore[call-arg]
    app = create_app(settings.model_copy(update={"tile_cache": memory}), database_url=city_url)
    with TestClient(app) as test_client:
        yield test_client


def _warmed(client: TestClient, path: str) -> None:
    """Asks ``path`` until its tile comes from memory (the change log's listener is
    connected a moment after start-up; until then tiles are not kept)."""
    for _ in range(50):
        if _get(client, path).headers.get("x-tile-cache") == "memory":
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never came from memory")


def _centre(conn: psycopg.Connection) -> tuple[float, float]:
    row = conn.execute(
        "SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_Centroid(ST_Extent(geom)::geometry) AS c"
        " FROM buildings) AS x"
    ).fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


@pytest.fixture(scope="module")
def centre(city_url: str) -> tuple[float, float]:
    with psycopg.connect(city_url) as conn:
        return _centre(conn)


def _tile(centre: tuple[float, float], z: int) -> morecantile.Tile:
    return TMS.tile(centre[0], centre[1], z)


def _get(client: TestClient, path: str, **headers: str):
    return client.get(path, headers={"Accept-Encoding": "identity", **headers})


def _decode(data: bytes) -> dict:
    return mapbox_vector_tile.decode(data)


def _building_ids(url: str, tile: morecantile.Tile, margin: float = 0.0) -> set[int]:
    west, south, east, north = matrix.lonlat_bounds("WebMercatorQuad", tile, margin)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id FROM buildings WHERE ST_Intersects(geom,"
            " ST_MakeEnvelope(%s, %s, %s, %s, 4326))",
            (west, south, east, north),
        ).fetchall()
    return {r[0] for r in rows}


# --- content per zoom -------------------------------------------------------------------


def test_a_street_tile_holds_every_building_in_it_with_the_views_properties(
    client: TestClient, city_url: str, centre: tuple[float, float]
):
    tile = _tile(centre, 16)
    answer = _get(client, f"/tiles/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    layers = _decode(answer.content)
    assert {"buildings", "pipes", "pipe_nodes", "public_spaces", "jurisdictions"} <= set(layers)
    buildings = layers["buildings"]
    assert buildings["extent"] == vector.EXTENT
    ids = {f["id"] for f in buildings["features"]}
    # Every building in the tile is there, and none beyond its buffer.
    assert _building_ids(city_url, tile) <= ids
    assert ids <= _building_ids(city_url, tile, vector.BUFFER / vector.EXTENT)
    first = buildings["features"][0]["properties"]
    assert {"height_m", "floors", "base_elevation_m", "use"} <= set(first)
    assert first["id"] == buildings["features"][0]["id"]
    pipes = [f["properties"] for f in layers["pipes"]["features"]]
    assert all({"network", "depth_m", "diameter_mm"} <= set(p) for p in pipes[:20])
    nodes = [f["properties"] for f in layers["pipe_nodes"]["features"]]
    assert all("kind" in n for n in nodes) and any("state" in n for n in nodes)


@pytest.mark.parametrize("z", [14, 16, 20])
def test_a_tiles_vertices_are_where_web_mercator_puts_them(
    city_url: str, centre: tuple[float, float], z: int
):
    # From z14 features are drawn by the projection's tangent at the tile's middle (no
    # PROJ call a feature): every vertex must still land on the tile grid where the
    # projection itself puts it, to within the grid's rounding.
    with psycopg.connect(city_url) as conn:
        corner = conn.execute(  # a corner of the building nearest the centre: in the tile
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointN(ST_ExteriorRing("
            "ST_GeometryN(geom, 1)), 2) AS p FROM buildings"
            " ORDER BY geom <-> ST_SetSRID(ST_MakePoint(%s, %s), 4326) LIMIT 1) AS c",
            centre,
        ).fetchone()
        tile = _tile(corner, z)
        bounds = TMS.xy_bounds(tile)
        catalogue = registry.load(conn)
        data = vector.render(conn, catalogue, ["buildings"], tile)
        stored = {
            row[0]: shapely.from_wkb(row[1])
            for row in conn.execute(
                "SELECT id, ST_AsBinary(ST_Transform(geom, 3857)) FROM buildings"
                " WHERE geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326)",
                matrix.lonlat_bounds("WebMercatorQuad", tile),
            )
        }
    scale = vector.EXTENT / (bounds.right - bounds.left)
    checked = 0
    for feature in _decode(data)["buildings"]["features"]:
        shape = stored.get(feature["id"])
        if shape is None:
            continue
        exact = {
            (round((x - bounds.left) * scale), round((y - bounds.bottom) * scale))
            for x, y in shapely.get_coordinates(shape)
        }
        drawn = shapely.get_coordinates(shapely.geometry.shape(feature["geometry"]))
        for x, y in drawn:
            if 0 < x < vector.EXTENT and 0 < y < vector.EXTENT:  # clipping adds on the edges
                assert min(abs(x - ex) + abs(y - ey) for ex, ey in exact) <= 1, (feature, x, y)
                checked += 1
    assert checked > 0


def test_pipes_thin_out_below_street_scale(client: TestClient, centre: tuple[float, float]):
    def diameters(z: int) -> list[float]:
        tile = _tile(centre, z)
        answer = _get(client, f"/collections/pipes/tiles/WebMercatorQuad/{z}/{tile.y}/{tile.x}")
        assert answer.status_code == 200, answer.text
        return [
            f["properties"].get("diameter_mm", 0)
            for f in _decode(answer.content)["pipes"]["features"]
        ]

    assert min(diameters(15)) < 100  # from its full zoom every pipe, service pipes too
    assert min(diameters(14)) >= 100  # distribution mains from street scale
    assert min(diameters(12)) >= 300  # trunk mains only at district scale
    assert len(diameters(12)) > 0


def test_tile_bounds_are_morecantiles():
    # The bounds come from Web Mercator's inverse in closed form (pyproj's call is as
    # slow as a small tile's query): they must be morecantile's, at every zoom.
    tms = matrix.matrix_set("WebMercatorQuad")
    for z in range(matrix.MAX_ZOOM + 1):
        for x, y in ((0, 0), (2**z - 1, 2**z - 1), (2**z // 3, 2**z // 5)):
            tile = morecantile.Tile(x, y, z)
            expected = tms.bounds(tile)
            got = matrix.lonlat_bounds("WebMercatorQuad", tile)
            assert got == pytest.approx(tuple(expected), abs=1e-9), tile


def test_a_district_tile_holds_buildings_as_blocks_that_count_them_all(
    client: TestClient, city_url: str, centre: tuple[float, float]
):
    tile = _tile(centre, 10)
    layers = _decode(_get(client, f"/collections/buildings/tiles/WebMercatorQuad/"
                                  f"{tile.z}/{tile.y}/{tile.x}").content)  # fmt: skip
    blocks = layers["buildings"]["features"]
    inside = _building_ids(city_url, tile)
    assert 0 < len(blocks) < len(inside) / 20  # a few blocks, not 2,687 buildings
    assert sum(b["properties"]["count"] for b in blocks) == len(inside)
    assert all({"count", "height_m", "use"} <= set(b["properties"]) for b in blocks)


def test_sensors_and_incidents_carry_their_state_and_clusters_count_them(
    client: TestClient, centre: tuple[float, float]
):
    near = _tile(centre, 15)
    layers = _decode(
        _get(
            client, f"/tiles/WebMercatorQuad/15/{near.y}/{near.x}?layers=sensors,incidents"
        ).content
    )
    assert set(layers) == {"sensors", "incidents"}
    sensor = layers["sensors"]["features"][0]["properties"]
    assert {"kind", "latest_value", "online"} <= set(sensor)
    incidents = [f["properties"] for f in layers["incidents"]["features"]]
    assert all({"category_code", "status", "overdue"} <= set(i) for i in incidents)
    assert any(i["overdue"] for i in incidents)  # the report made overdue above
    far = _tile(centre, 9)
    clusters = _decode(
        _get(client, f"/collections/incidents/tiles/WebMercatorQuad/9/{far.y}/{far.x}").content
    )["incidents"]["features"]
    assert all("count" in c["properties"] and "overdue_count" in c["properties"] for c in clusters)
    assert sum(c["properties"]["overdue_count"] for c in clusters) >= 1


def test_no_personal_data_is_in_any_tile(client: TestClient, centre: tuple[float, float]):
    for z in (9, 12, 15, 18):
        tile = _tile(centre, z)
        data = _get(client, f"/tiles/WebMercatorQuad/{z}/{tile.y}/{tile.x}").content
        assert data
        for secret in (*REPORTER.values(), SECRET_TEXT, "张三"):
            assert secret.encode() not in data, (z, secret)
        for name in ("reporter", "tracking_token", "description", "phone", "donor"):
            assert name.encode() not in data, (z, name)


def test_every_tile_property_is_a_public_column_or_one_the_tiles_work_out():
    for layer in registry.BUILTIN_LAYERS:
        vector.check_tile_names(layer)  # raises for a hidden or unknown name
        assert not set(layer.tile) & set(layer.hidden)
    leaky = registry.BUILTIN["incidents"]
    with pytest.raises(ValueError, match="hidden"):
        vector.check_tile_names(
            registry.Layer(**{**leaky.__dict__, "tile": (*leaky.tile, "reporter")})
        )


def test_a_scene_is_tiled_with_its_declared_properties_only(
    client: TestClient, centre: tuple[float, float]
):
    tile = _tile(centre, 16)
    answer = _get(client, f"/collections/benches/tiles/WebMercatorQuad/16/{tile.y}/{tile.x}")
    bench = _decode(answer.content)["benches"]["features"][0]
    assert bench["properties"] == {"id": bench["id"], "seats": 4, "material": "wood"}


def test_tiles_read_with_gdals_mvt_driver(
    client: TestClient, tmp_path: Path, centre: tuple[float, float]
):
    tile = _tile(centre, 16)
    data = _get(client, f"/tiles/WebMercatorQuad/16/{tile.y}/{tile.x}").content
    # GDAL takes a tile's place from its path, z/x/y.
    path = tmp_path / "16" / str(tile.x) / f"{tile.y}.pbf"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    names = {name for name, _ in pyogrio.list_layers(path)}
    assert {"buildings", "pipes", "incidents", "sensors"} <= names
    # CLIP=NO: GDAL keeps the features of the buffer too, as ST_AsMVT wrote them.
    meta, _, geometry, _ = pyogrio.raw.read(path, layer="buildings", CLIP="NO")
    assert len(geometry) == len(_decode(data)["buildings"]["features"])
    assert "height_m" in list(meta["fields"])
    bounds = shapely.total_bounds(shapely.from_wkb(geometry))
    west, south, east, north = matrix.lonlat_bounds("WebMercatorQuad", tile)
    # GDAL places the tile in EPSG:3857: its features lie around the tile.
    x0, y0 = TMS.xy(west, south)
    x1, y1 = TMS.xy(east, north)
    margin = (x1 - x0) * 0.1
    assert x0 - margin <= bounds[0] and bounds[2] <= x1 + margin
    assert y0 - margin <= bounds[1] and bounds[3] <= y1 + margin


def test_a_tiles_bytes_do_not_depend_on_the_order_its_layers_are_named(
    client: TestClient, centre: tuple[float, float]
):
    tile = _tile(centre, 15)
    one = _get(client, f"/tiles/WebMercatorQuad/15/{tile.y}/{tile.x}?layers=pipes,buildings")
    two = _get(client, f"/tiles/WebMercatorQuad/15/{tile.y}/{tile.x}?layers=buildings,pipes,pipes")
    assert one.content == two.content and one.headers["etag"] == two.headers["etag"]


def test_ogc_clients_choose_the_one_maps_layers_with_collections(
    client: TestClient, centre: tuple[float, float]
):
    # OGC API - Tiles' collections selection (OpenLayers' OGCVectorTile sends it): the same
    # tile as layers= gives, answered ahead of the routes or by them (with f=).
    tile = _tile(centre, 15)
    at = f"/tiles/WebMercatorQuad/15/{tile.y}/{tile.x}"
    ours = _get(client, f"{at}?layers=buildings,pipes")
    for query in ("collections=pipes,buildings", "collections=buildings,pipes&f=mvt"):
        theirs = _get(client, f"{at}?{query}")
        assert theirs.status_code == 200, (query, theirs.text)
        assert theirs.content == ours.content and theirs.headers["etag"] == ours.headers["etag"]
        assert set(_decode(theirs.content)) == {"buildings", "pipes"}
    both = _get(client, f"{at}?layers=pipes&collections=pipes")
    assert both.status_code == 400 and both.json()["parameter"] == "collections", both.text
    unknown = _get(client, f"{at}?collections=nope")
    assert unknown.status_code == 400 and "nope" in unknown.json()["detail"]
    doc = _get(client, "/tiles/WebMercatorQuad?collections=sensors").json()
    assert [layer["id"] for layer in doc["layers"]] == ["sensors"]
    # OpenLayers reads the dataset tileset's limits, then adds collections= to its tiles:
    # they are the one map's, whichever layers are chosen (empty where those have none).
    whole = _get(client, "/tiles/WebMercatorQuad").json()["tileMatrixSetLimits"]
    assert doc["tileMatrixSetLimits"] == whole
    z15 = next(limit for limit in whole if limit["tileMatrix"] == "15")
    everywhere = {(r, c) for r in range(z15["minTileRow"], z15["maxTileRow"] + 1)
                  for c in range(z15["minTileCol"], z15["maxTileCol"] + 1)}  # fmt: skip
    beyond = {}  # a layer: a tile of the one map beyond that layer's own extent
    for name in ("incidents", "sensors", "pipe_nodes", "pipes", "buildings"):
        own = _get(client, f"/collections/{name}/tiles/WebMercatorQuad").json()
        mine = next(limit for limit in own["tileMatrixSetLimits"] if limit["tileMatrix"] == "15")
        outside = sorted(
            (r, c) for r, c in everywhere
            if not (mine["minTileRow"] <= r <= mine["maxTileRow"]
                    and mine["minTileCol"] <= c <= mine["maxTileCol"])
        )  # fmt: skip
        if outside:
            beyond[name] = outside[0]
    assert beyond, "every layer spans the whole map: no tile to try"
    for name, (row, col) in beyond.items():
        chosen = _get(client, f"/tiles/WebMercatorQuad/15/{row}/{col}?collections={name}")
        assert chosen.status_code == 204, (name, chosen.text)
        alone = _get(client, f"/collections/{name}/tiles/WebMercatorQuad/15/{row}/{col}")
        assert alone.status_code == 404, name  # beyond the layer's own tileset
    item = next(link for link in doc["links"] if link["rel"] == "item")
    assert item["href"].endswith("{tileMatrix}/{tileRow}/{tileCol}?collections=sensors")
    conformance = _get(client, "/conformance").json()["conformsTo"]
    assert (
        "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/collections-selection" in conformance
    )


# --- HTTP -------------------------------------------------------------------------------


def _empty_within_limits(client: TestClient, layer: str) -> morecantile.Tile:
    """A z22 tile within a point layer's tileset limits that holds none of its points:
    the one at its bounding box's north-west corner (no point lies at both extremes)."""
    box = _get(client, f"/collections/{layer}/tiles/WebMercatorQuad").json()["boundingBox"]
    west, north = box["lowerLeft"][0], box["upperRight"][1]
    return TMS.tile(west + 1e-7, north - 1e-7, 22)


def test_an_empty_tile_is_204_and_one_outside_the_limits_404(client: TestClient):
    # OGC API - Tiles: 204 for an empty tile within its tileset's limits, 404 outside them.
    tile = _empty_within_limits(client, "sensors")
    for path in (f"/collections/sensors/tiles/WebMercatorQuad/22/{tile.y}/{tile.x}",
                 f"/tiles/WebMercatorQuad/22/{tile.y}/{tile.x}?layers=sensors"):  # fmt: skip
        answer = _get(client, path)
        assert answer.status_code == 204 and answer.content == b"", (path, answer.text)
    far = _get(client, "/tiles/WebMercatorQuad/16/0/0")
    assert far.status_code == 404 and "beyond the extent" in far.json()["detail"], far.text
    assert far.headers["content-type"] == "application/problem+json"
    # Below a layer's lowest zoom, over its features: within the limits, empty by design.
    below = _get(client, "/collections/buildings/tiles/WebMercatorQuad/3/3/6")
    assert below.status_code == 204  # buildings start at z8


def test_tile_addresses_ending_in_mvt_or_pbf_answer_the_same_tile(
    client: TestClient, centre: tuple[float, float]
):
    """Many clients ask for `{x}.mvt` or `{x}.pbf`: the same tile, headers and all."""
    tile = _tile(centre, 16)
    for path in (f"/tiles/WebMercatorQuad/16/{tile.y}/{tile.x}",
                 f"/collections/buildings/tiles/WebMercatorQuad/16/{tile.y}/{tile.x}"):  # fmt: skip
        plain = _get(client, path)
        assert plain.status_code == 200 and _decode(plain.content)["buildings"]["features"]
        for suffix in (".mvt", ".pbf"):
            suffixed = _get(client, path + suffix)
            assert suffixed.status_code == 200, (path + suffix, suffixed.text)
            assert suffixed.content == plain.content, path + suffix
            assert suffixed.headers["content-type"] == vector.MVT_TYPE
            assert suffixed.headers["etag"] == plain.headers["etag"]
            again = _get(client, path + suffix, **{"If-None-Match": plain.headers["etag"]})
            assert again.status_code == 304
    assert _get(client, "/tiles/WebMercatorQuad/16/0/0.pbf").status_code == 404  # as plain
    # The suffix is no way around the checks of the address, nor of the layer.
    for path, parameter in (("/tiles/WebMercatorQuad/3/0/8.mvt", "x"),
                            ("/tiles/WebMercatorQuad/3/0/NaN.pbf", "x"),
                            ("/tiles/WebMercatorQuad/3/-1/0.mvt", "y")):  # fmt: skip
        answer = _get(client, path)
        assert answer.status_code == 400 and answer.json()["parameter"] == parameter, path
    assert _get(client, "/collections/nope/tiles/WebMercatorQuad/3/0/0.mvt").status_code == 404
    assert _get(client, "/tiles/WebMercatorQuad/3/0/0.png").status_code == 400
    # One address per tile in the API's document.
    paths = client.get("/api").json()["paths"]
    assert not [p for p in paths if p.endswith((".mvt", ".pbf"))]


def test_etag_and_304(client: TestClient, centre: tuple[float, float]):
    tile = _tile(centre, 16)
    path = f"/collections/buildings/tiles/WebMercatorQuad/16/{tile.y}/{tile.x}"
    first = _get(client, path)
    tag = first.headers["etag"]
    assert tag.startswith('"') and tag == vector_etag(first.content)
    for header in (tag, f"W/{tag}", f'"nope", {tag}', "*"):
        again = _get(client, path, **{"If-None-Match": header})
        assert again.status_code == 304 and again.content == b"", header
        assert again.headers["etag"] == tag
    assert _get(client, path, **{"If-None-Match": '"other"'}).status_code == 200
    assert "no-cache" in first.headers["cache-control"]


def test_a_long_if_none_match_list_is_answered_and_only_an_absurd_one_refused(
    client: TestClient, warm: TestClient, centre: tuple[float, float]
):
    # Browsers send every ETag they hold for an address: a list of dozens is legitimate
    # (door test D9). Warm tiles (the memory front) and cold ones alike.
    tile = _tile(centre, 16)
    path = f"/collections/buildings/tiles/WebMercatorQuad/16/{tile.y}/{tile.x}"
    _warmed(warm, path)
    others = ", ".join(f'"{i:040x}"' for i in range(60))  # some 2,600 characters
    for each in (client, warm):
        tag = _get(each, path).headers["etag"]
        assert _get(each, path, **{"If-None-Match": f"{others}, {tag}"}).status_code == 304
        assert _get(each, path, **{"If-None-Match": f"{tag}, {others}"}).status_code == 304
        assert _get(each, path, **{"If-None-Match": others}).status_code == 200
        absurd = _get(each, path, **{"If-None-Match": others * 10})
        assert absurd.status_code == 400, absurd.status_code
        assert absurd.json()["parameter"] == "If-None-Match"


def vector_etag(data: bytes) -> str:
    from tiles.cache import etag_of

    return etag_of(data)


def test_gzip_when_the_client_takes_it(client: TestClient, centre: tuple[float, float]):
    tile = _tile(centre, 15)
    path = f"/tiles/WebMercatorQuad/15/{tile.y}/{tile.x}"
    plain = _get(client, path)
    zipped = client.get(path, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["vary"]
    # httpx inflates it as a client does; what came over the wire was smaller.
    assert zipped.content == plain.content
    assert int(zipped.headers["content-length"]) < len(plain.content) / 2
    assert gzip.decompress(gzip.compress(plain.content)) == plain.content
    refused = client.get(path, headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers
    named = client.get(path, headers={"Accept-Encoding": "*;q=0, gzip"})  # named beats *
    assert named.headers["content-encoding"] == "gzip"
    # The gzip representation has its own tag, and either tag is a 304.
    assert zipped.headers["etag"] != plain.headers["etag"]
    again = client.get(path, headers={"Accept-Encoding": "gzip",
                                      "If-None-Match": zipped.headers["etag"]})  # fmt: skip
    assert again.status_code == 304


def test_a_tile_rendered_again_unchanged_has_the_same_bytes(
    city_url: str, centre: tuple[float, float]
):
    # An ETag is the bytes': a render of unchanged data must give them again, also once
    # psycopg has prepared the statement and the data base plans it generically.
    tile = _tile(centre, 15)
    with psycopg.connect(city_url, autocommit=True) as conn:
        catalogue = registry.load(conn)
        every = [layer.name for layer in catalogue.feature_layers()]
        renders = {vector.render(conn, catalogue, every, tile) for _ in range(8)}
    assert len(renders) == 1


def test_a_tile_is_read_by_byte_ranges(client: TestClient, centre: tuple[float, float]):
    # GDAL's /vsicurl/ reads a remote file by ranges and gives up on a server without.
    # (Buildings: a tile of incidents changes as their due times pass.)
    tile = _tile(centre, 15)
    path = f"/tiles/WebMercatorQuad/15/{tile.y}/{tile.x}?layers=buildings,pipes"
    whole = _get(client, path)
    assert whole.headers["accept-ranges"] == "bytes"
    size = len(whole.content)
    part = _get(client, path, Range="bytes=0-99")
    assert part.status_code == 206 and part.content == whole.content[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{size}"
    tail = _get(client, path, Range="bytes=-10")
    assert tail.status_code == 206 and tail.content == whole.content[-10:]
    past = _get(client, path, Range=f"bytes={size}-")
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
    # Several ranges, another unit, or an If-Range of another version: the whole tile.
    for headers in ({"Range": "bytes=0-1,5-6"}, {"Range": "rows=0-1"},
                    {"Range": "bytes=0-1", "If-Range": '"old"'}):  # fmt: skip
        answer = _get(client, path, **headers)
        assert answer.status_code == 200 and answer.content == whole.content, headers


def test_odd_byte_ranges_are_answered_as_http_says(client: TestClient, centre: tuple[float, float]):
    tile = _tile(centre, 15)
    path = f"/tiles/WebMercatorQuad/15/{tile.y}/{tile.x}?layers=buildings,pipes"
    whole = _get(client, path)
    size, tag = len(whole.content), whole.headers["etag"]
    # No byte at all (a zero-length suffix) cannot be served: 416 (RFC 9110, 14.1.1).
    for asked in ("bytes=-0", f"bytes={size}-{size + 5}"):
        answer = _get(client, path, Range=asked)
        assert answer.status_code == 416, asked
        assert answer.headers["content-range"] == f"bytes */{size}", asked
    # A range that is no range (last before first, not digits, several): the whole tile,
    # as HTTP lets a server ignore what it does not serve; never 416, never a 500.
    for asked in ("bytes=5-2", f"bytes={size + 10}-2", b"bytes=\xb2-5",
                  b"bytes=1-\xb3", "bytes=0-1,5-6", "bytes=--1", "bytes=1", "bytes=a-b", "bytes=-",
                  "bytes=+1-2", "bytes= 0 - 1 ,"):  # fmt: skip
        answer = client.get(path, headers={"Accept-Encoding": "identity", "Range": asked})
        assert answer.status_code == 200 and answer.content == whole.content, asked
    assert _get(client, path, Range="bytes=0-0").content == whole.content[:1]
    assert _get(client, path, Range="bytes=0-1, ,").content == whole.content[:2]  # empty elements
    assert _get(client, path, Range=f"bytes=-{size * 2}").content == whole.content
    # If-Range is compared strongly: the current tag gives the part, a weak or stale one
    # (or a date, the tiles having no Last-Modified) the whole.
    assert _get(client, path, Range="bytes=0-9", **{"If-Range": tag}).status_code == 206
    for validator in (f"W/{tag}", '"stale"', "Wed, 21 Oct 2015 07:28:00 GMT"):
        answer = _get(client, path, Range="bytes=0-9", **{"If-Range": validator})
        assert answer.status_code == 200 and answer.content == whole.content, validator


def test_a_range_of_a_gzipped_tile_is_of_the_gzip_sent(
    client: TestClient, centre: tuple[float, float]
):
    # The range is of the representation sent (RFC 9110, 14.1.2): here the gzip, whose
    # bytes the client puts together and inflates; never a slice of the plain tile
    # labelled gzip, which no client can inflate.
    tile = _tile(centre, 15)
    path = f"/tiles/WebMercatorQuad/15/{tile.y}/{tile.x}?layers=buildings,pipes"
    plain = _get(client, path).content
    zipped = {"Accept-Encoding": "gzip"}

    def raw(**headers: str) -> tuple[int, dict[str, str], bytes]:
        with client.stream("GET", path, headers={**zipped, **headers}) as answer:
            return answer.status_code, dict(answer.headers), b"".join(answer.iter_raw())

    status, headers, whole = raw()
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert gzip.decompress(whole) == plain
    half = len(whole) // 2
    status, first_headers, first = raw(Range=f"bytes=0-{half - 1}")
    assert status == 206 and first_headers["content-encoding"] == "gzip"
    assert first_headers["content-range"] == f"bytes 0-{half - 1}/{len(whole)}"
    status, _, rest = raw(Range=f"bytes={half}-", **{"If-Range": first_headers["etag"]})
    assert status == 206 and gzip.decompress(first + rest) == plain
    # The identity tag does not stand for the gzip: the whole gzip, not a part.
    identity_tag = _get(client, path).headers["etag"]
    status, _, again = raw(Range="bytes=0-9", **{"If-Range": identity_tag})
    assert status == 200 and again == whole


def test_the_tile_matrix_set_reads_as_tms_2_and_1():
    # TMS 2.0 for today's clients, the 1.0 members beside for GDAL before 3.7 (Debian 12).
    document = matrix.matrix_set_document("WebMercatorQuad")
    assert document["id"] == document["identifier"] == "WebMercatorQuad"
    assert len(document["tileMatrices"]) == len(document["tileMatrix"])
    first, old = document["tileMatrices"][0], document["tileMatrix"][0]
    assert old["topLeftCorner"] == first["pointOfOrigin"] and old["identifier"] == "0"
    box = document["boundingBox"]  # 2.0's corners, which its schema requires, and 1.0's
    assert box["lowerCorner"] == box["lowerLeft"] and box["upperCorner"] == box["upperRight"]
    assert box["lowerLeft"][0] == pytest.approx(-20037508.342789244)
    assert document["supportedCRS"].endswith("EPSG/0/3857")


def test_impossible_addresses_and_unknown_names(client: TestClient):
    cases = {
        "/tiles/WebMercatorQuad/99999999999999999999/0/0": (400, "z"),
        "/tiles/WebMercatorQuad/23/0/0": (400, "z"),
        "/tiles/WebMercatorQuad/3/-1/0": (400, "y"),
        "/tiles/WebMercatorQuad/3/0/8": (400, "x"),
        "/tiles/WebMercatorQuad/3/0/NaN": (400, "x"),
        "/tiles/WebMercatorQuad/3/0/1e3": (400, "x"),
        "/tiles/WebMercatorQuad/3/1_0/0": (400, "y"),
        "/collections/buildings/tiles/WebMercatorQuad/3/0/inf": (400, "x"),
        "/tiles/WorldCRS84Quad/3/0/0": (404, None),
        "/tileMatrixSets/Nonsense": (404, None),
        "/collections/nope/tiles/WebMercatorQuad/3/0/0": (404, None),
        "/collections/nope/tiles": (404, None),
        "/collections/nope/tiles/WebMercatorQuad/tilejson.json": (404, None),
        "/tiles/WebMercatorQuad/3/0/0?layers=buildings,nope": (400, "layers"),
        "/tiles/WebMercatorQuad/3/0/0?layers=,,": (400, "layers"),
        "/tiles/WebMercatorQuad/3/0/0?layers=a%00b": (400, None),
        "/collections/build%00ings/tiles/WebMercatorQuad/3/0/0": (400, None),
    }
    for path, (status, parameter) in cases.items():
        answer = _get(client, path)
        assert answer.status_code == status, (path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json", path
        if parameter is not None:
            assert answer.json().get("parameter") == parameter, (path, answer.json())
    many = ",".join(f"n{i}" for i in range(10_000))  # under the URL length clients send
    answer = _get(client, f"/tiles/WebMercatorQuad/3/0/0?layers={many[:19_000]}")
    assert answer.status_code == 400 and "more" in answer.json()["detail"]
    assert len(answer.text) < 2000  # the message names a few, not ten thousand
    answer = _get(client, f"/tiles/WebMercatorQuad/3/0/0?layers={many}")
    assert answer.status_code == 400


def test_unknown_query_parameters_are_refused_naming_them(
    warm: TestClient, centre: tuple[float, float]
):
    # A typo (layerz=) answered with the defaults looks understood (door test D4); warm
    # tiles, answered ahead of the routes, are refused as the routes refuse them.
    tile = _tile(centre, 16)
    at = f"WebMercatorQuad/16/{tile.y}/{tile.x}"
    one, chosen = f"/collections/buildings/tiles/{at}", f"/tiles/{at}?layers=buildings"
    for path in (one, chosen):
        _warmed(warm, path)
    refused = {
        f"{one}?layerz=pipes": "layerz",
        f"{one}.mvt?zoom=3": "zoom",
        f"{chosen}&layer=pipes": "layer",
        f"/tiles/{at}?layerz=pipes": "layerz",
        f"/tiles/{at}.pbf?layerz=pipes": "layerz",
        "/tileMatrixSets?limit=5": "limit",
        "/tileMatrixSets/WebMercatorQuad?crs=4326": "crs",
        "/tiles?x=1": "x",
        "/tiles/WebMercatorQuad?layerz=pipes": "layerz",
        "/tiles/WebMercatorQuad/tilejson.json?layerz=pipes": "layerz",
        "/collections/buildings/tiles?x=1": "x",
        "/collections/buildings/tiles/WebMercatorQuad?x=1": "x",
        "/collections/buildings/tiles/WebMercatorQuad/tilejson.json?x=1": "x",
    }
    for path, name in refused.items():
        answer = _get(warm, path)
        assert answer.status_code == 400, (path, answer.status_code)
        assert f"unknown query parameter {name!r}" in answer.json()["detail"], path
    # What OGC clients send is taken: f, the format (GDAL repeats the query of the
    # address it was given on every request it makes).
    for path in (f"{one}?f=mvt", f"{chosen}&f=mvt", "/tileMatrixSets?f=json",
                 "/tileMatrixSets/WebMercatorQuad?f=json", "/tiles?f=json",
                 "/tiles/WebMercatorQuad?f=json", "/tiles/WebMercatorQuad/tilejson.json?f=json",
                 "/collections/buildings/tiles?f=json",
                 "/collections/buildings/tiles/WebMercatorQuad?f=json",
                 "/collections/buildings/tiles/WebMercatorQuad/tilejson.json?f=json"):  # fmt: skip
        assert _get(warm, path).status_code == 200, path
    # A format these are not served in is named.
    for path in (f"{one}?f=json", "/tiles/WebMercatorQuad/tilejson.json?f=html"):
        answer = _get(warm, path)
        assert answer.status_code == 400 and answer.json()["parameter"] == "f", path


def test_a_tile_number_is_plain_digits_only(warm: TestClient, centre: tuple[float, float]):
    # int() reads " 16", "+16", "016" and "١٦" as 16: one tile at several addresses,
    # each cached apart by clients and proxies (door test D7). Warm or not, refused.
    tile = _tile(centre, 16)
    one = "/collections/buildings/tiles/WebMercatorQuad"
    _warmed(warm, f"{one}/16/{tile.y}/{tile.x}")
    for z, y, x, named in (("%2016", tile.y, tile.x, "z"), ("+16", tile.y, tile.x, "z"),
                           ("016", tile.y, tile.x, "z"), (16, f"0{tile.y}", tile.x, "y"),
                           (16, tile.y, f"{tile.x}%20", "x"), (16, tile.y, f"+{tile.x}", "x"),
                           ("%D9%A1%D9%A6", tile.y, tile.x, "z"), ("00", 0, 0, "z")):  # fmt: skip
        for path in (f"{one}/{z}/{y}/{x}", f"{one}/{z}/{y}/{x}.mvt",
                     f"/tiles/WebMercatorQuad/{z}/{y}/{x}?layers=buildings"):  # fmt: skip
            answer = _get(warm, path)
            assert answer.status_code == 400, (path, answer.status_code)
            assert answer.json()["parameter"] == named, path
            assert "digits" in answer.json()["detail"], path
    assert _get(warm, f"{one}/0/0/0").status_code == 204  # a plain 0 is a number


PAGE = "https://map.example.org"  # a MapLibre or deck.gl page on another origin


def _preflight(client: TestClient, path: str, origin: str = PAGE, method: str = "GET"):
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                         "Access-Control-Request-Headers": "if-none-match, range"})  # fmt: skip


def test_map_pages_on_other_origins_read_the_public_tiles_and_documents(
    warm: TestClient, centre: tuple[float, float]
):
    # A page's fetch with Range or If-None-Match is preflighted; the answer was 405 and
    # the browser gave up before asking the tile (door test D11).
    tile = _tile(centre, 16)
    warm_tile = f"/collections/buildings/tiles/WebMercatorQuad/16/{tile.y}/{tile.x}"
    _warmed(warm, warm_tile)
    public = (warm_tile, f"{warm_tile}.pbf", f"/tiles/WebMercatorQuad/16/{tile.y}/{tile.x}",
              "/tiles/WebMercatorQuad/tilejson.json", "/tileMatrixSets/WebMercatorQuad",
              "/collections", "/collections/buildings", "/collections/buildings/items?limit=1",
              "/collections/buildings/tiles", "/")  # fmt: skip
    for path in public:
        asked = _preflight(warm, path)
        assert asked.status_code == 204, (path, asked.status_code, asked.text)
        assert asked.headers["access-control-allow-origin"] == "*", path
        assert {"GET", "HEAD"} <= set(asked.headers["access-control-allow-methods"].split(", "))
        assert {"if-none-match", "range"} <= set(
            asked.headers["access-control-allow-headers"].lower().replace(" ", "").split(",")
        )
        assert "access-control-allow-credentials" not in asked.headers
        answer = _get(warm, path, Origin=PAGE)
        assert answer.status_code in (200, 204), path
        assert answer.headers["access-control-allow-origin"] == "*", path
        assert "etag" in answer.headers["access-control-expose-headers"].lower(), path
        assert "access-control-allow-credentials" not in answer.headers
    # The memory front's answer is the route's, CORS headers and all.
    assert _get(warm, warm_tile).headers["x-tile-cache"] == "memory"
    assert _get(warm, warm_tile, Origin=PAGE).headers["access-control-allow-origin"] == "*"
    # A 400 of a public route is readable by the page that asked (it says what was wrong).
    bad = _get(warm, f"{warm_tile}?layerz=1", Origin=PAGE)
    assert bad.status_code == 400 and bad.headers["access-control-allow-origin"] == "*"
    # Staff routes and writes are not opened to other origins.
    for path, method in (("/keys", "GET"), ("/incidents", "POST"), (warm_tile, "DELETE")):
        refused = _preflight(warm, path, method=method)
        assert refused.status_code == 403, (path, method, refused.status_code)
        assert "access-control-allow-origin" not in refused.headers
    staff = warm.get("/keys", headers={"Origin": PAGE})
    assert staff.status_code == 401 and "access-control-allow-origin" not in staff.headers


def test_the_origins_allowed_are_a_setting(city_url: str, centre: tuple[float, float]):
    tile = _tile(centre, 16)
    path = f"/collections/buildings/tiles/WebMercatorQuad/16/{tile.y}/{tile.x}"
    settings = settings_for(
        make_data_dir("twin-tiles-"), api={"cors_origins": f"{PAGE}, https://b.example"}
    )
    with TestClient(create_app(settings, database_url=city_url)) as listed:
        asked = _preflight(listed, path)
        assert asked.status_code == 204 and asked.headers["access-control-allow-origin"] == PAGE
        assert "Origin" in asked.headers["vary"]
        answer = _get(listed, path, Origin=PAGE)
        assert answer.headers["access-control-allow-origin"] == PAGE
        assert "Origin" in answer.headers["vary"]  # a cache keeps one answer per origin
        other = _get(listed, path, Origin="https://elsewhere.example")
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
        assert "Origin" in _get(listed, path).headers["vary"]
        refused = _preflight(listed, path, origin="https://elsewhere.example")
        assert refused.status_code == 403 and "TWIN_CORS_ORIGINS" in refused.json()["detail"]
    settings = settings_for(make_data_dir("twin-tiles-"), api={"cors_origins": ""})
    with TestClient(create_app(settings, database_url=city_url)) as closed:
        answer = _get(closed, path, Origin=PAGE)
        assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
        assert _preflight(closed, path).status_code == 405


def test_links_are_made_from_a_host_header_only_when_it_is_one(client: TestClient):
    # Links and redirects are made from the Host a client sends (door test D12): one
    # that is no host[:port] is refused, never written into a document.
    for host in ("evil.example/x?a=", "a b", "example.org:99999", "[::zz]", "exa<mple>.org",
                 "example.org:80:80", "@evil.example", "évil.example"):  # fmt: skip
        answer = client.get("/tiles/WebMercatorQuad/tilejson.json",
                            headers={"Host": host.encode("utf-8")})  # fmt: skip
        assert answer.status_code == 400, (host, answer.status_code, answer.text[:200])
        assert answer.json()["parameter"] == "Host", host
    two = client.get("/tiles/WebMercatorQuad/tilejson.json",
                     headers=[("Host", "a.example"), ("Host", "b.example")])  # fmt: skip
    assert two.status_code == 400
    # A host name or address, with a port or not: the address the client reached us at.
    for host in ("map.example.org", "map.example.org:8443", "10.0.0.7:8000", "[::1]:8000",
                 "twin_api:8000", "localhost"):  # fmt: skip
        answer = client.get("/tiles/WebMercatorQuad/tilejson.json", headers={"Host": host})
        assert answer.status_code == 200, host
        assert answer.json()["tiles"][0].startswith(f"http://{host}/tiles/"), host
    # HTTP/1.1's empty Host (a target with no authority): the server's own address.
    assert client.get("/tiles", headers={"Host": ""}).status_code == 200


def test_with_a_public_url_every_link_and_redirect_starts_with_it(
    city_url: str, centre: tuple[float, float]
):
    # Behind a proxy, or to keep a forged Host out of every link (door test D12).
    public = "https://map.example.gov.cn/twin"
    settings = settings_for(make_data_dir("twin-tiles-"), api={"public_url": public + "/"})
    memory = TileCacheSettings(_env_file=None, tile_memory_mb=64, tile_cache_mb=0)  # type: ignore[call-arg]
    app = create_app(settings.model_copy(update={"tile_cache": memory}), database_url=city_url)
    forged = {"Host": "evil.example"}
    with TestClient(app) as c:
        template = c.get("/tiles/WebMercatorQuad/tilejson.json", headers=forged).json()["tiles"][0]
        assert template.startswith(f"{public}/tiles/WebMercatorQuad/{{z}}/"), template
        tileset = c.get("/collections/buildings/tiles/WebMercatorQuad", headers=forged).json()
        assert all(link["href"].startswith(public) for link in tileset["links"]), tileset["links"]
        items = c.get("/collections/buildings/items?limit=1", headers=forged).json()
        assert all(link["href"].startswith(public) for link in items["links"]), items["links"]
        moved = c.get("/collections/", headers=forged, follow_redirects=False)
        assert moved.status_code == 307 and moved.headers["location"] == f"{public}/collections"
        # The proxy may pass the path on with its prefix or without; the tiles are the
        # same, warm ones too.
        tile = _tile(centre, 16)
        path = f"/collections/buildings/tiles/WebMercatorQuad/16/{tile.y}/{tile.x}"
        _warmed(c, path)
        prefixed = _get(c, f"/twin{path}")
        assert prefixed.status_code == 200 and prefixed.headers["x-tile-cache"] == "memory"
        assert prefixed.content == _get(c, path).content
        assert c.get("/twin/collections").json()["links"][0]["href"].startswith(public)


def test_a_public_url_that_is_no_address_is_refused_at_start():
    for bad in ("map.example.org", "ftp://map.example.org", "https://", "https://a b/",
                "https://map.example.org/?x=1", "https://user@map.example.org"):  # fmt: skip
        with pytest.raises(ValueError, match="public_url"):
            settings_for(make_data_dir("twin-tiles-"), api={"public_url": bad})


# --- caps -------------------------------------------------------------------------------


def test_the_feature_cap_keeps_the_largest_buildings_and_says_so(
    city_url: str, centre: tuple[float, float]
):
    tile = _tile(centre, 15)
    with TestClient(create_app(_tiles_settings(tile_max_features=5), database_url=city_url)) as c:
        answer = _get(c, f"/collections/buildings/tiles/WebMercatorQuad/15/{tile.y}/{tile.x}")
    assert answer.headers["x-tile-truncated"] == "buildings"
    kept = {f["id"] for f in _decode(answer.content)["buildings"]["features"]}
    west, south, east, north = matrix.lonlat_bounds(
        "WebMercatorQuad", tile, vector.BUFFER / vector.EXTENT
    )
    with psycopg.connect(city_url) as conn:
        largest = conn.execute(
            "SELECT id FROM buildings WHERE geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326)"
            " ORDER BY ST_Area(geom) DESC, id LIMIT 5",
            (west, south, east, north),
        ).fetchall()
    assert kept == {r[0] for r in largest}


def test_the_byte_cap_holds(city_url: str, centre: tuple[float, float]):
    tile = _tile(centre, 15)
    with TestClient(create_app(_tiles_settings(tile_max_bytes=5000), database_url=city_url)) as c:
        answer = _get(c, f"/tiles/WebMercatorQuad/15/{tile.y}/{tile.x}")
        full = _get(c, f"/tiles/WebMercatorQuad/15/{tile.y}/{tile.x}?layers=units")
    assert answer.status_code == 200
    assert len(answer.content) <= 5000
    assert "buildings" in answer.headers["x-tile-truncated"]
    assert "pipes" in _decode(answer.content)  # fewer features, every layer
    assert "x-tile-truncated" not in full.headers


@pytest.fixture(scope="module")
def crowded(template_url: str) -> Iterator[str]:
    """A city with a scene of 200,000 points over the world."""
    name = "tiles_crowded"
    url = _clone(template_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        scenes.create_scene(conn, "dots", geometry_type="point", properties={"size": "integer"})
        conn.execute("DROP INDEX idx_scene_dots_geom")  # built after: much faster
        conn.execute(
            "INSERT INTO scene_dots (source_id, properties, geom) SELECT g::text,"
            " jsonb_build_object('size', g % 100), ST_SetSRID(ST_MakePoint(-180 + random()"
            " * 360, -80 + random() * 160), 4326) FROM generate_series(1, 200000) AS g"
        )
        conn.execute("CREATE INDEX idx_scene_dots_geom ON scene_dots USING gist (geom)")
        conn.execute("ANALYZE scene_dots")
    yield url
    _drop(template_url, name)


def test_a_zoom_0_tile_over_a_crowded_layer_is_within_the_caps_or_503(crowded: str):
    settings = _tiles_settings(tile_max_features=100, tile_max_bytes=20_000, tile_timeout_ms=5000)
    with TestClient(create_app(settings, database_url=crowded)) as c:
        answer = _get(c, "/tiles/WebMercatorQuad/0/0/0")
    if answer.status_code == 503:  # the machine was too slow for the time limit
        assert int(answer.headers["retry-after"]) > 0
        return
    assert answer.status_code == 200 and len(answer.content) <= 20_000
    dots = _decode(answer.content)["dots"]["features"]
    assert len(dots) <= 100 and sum(d["properties"]["count"] for d in dots) == 200_000


def test_a_tile_past_its_time_limit_is_503_with_retry_after(crowded: str):
    with psycopg.connect(crowded) as conn:
        catalogue = registry.load(conn)
        with pytest.raises(vector.TileTooHeavy, match="took longer than 1 ms"):
            vector.render_tile(conn, catalogue, ["dots"], matrix.Tile(0, 0, 0),
                               limits=vector.Limits(timeout_ms=1))  # fmt: skip
        # The connection is fine after it (the time limit was the tile's own).
        assert conn.execute("SELECT 1").fetchone() == (1,)
    settings = _tiles_settings(tile_timeout_ms=100)
    with TestClient(create_app(settings, database_url=crowded)) as c:
        answer = _get(c, "/tiles/WebMercatorQuad/0/0/0?layers=dots")
    # 200,000 points merged in 100 ms: not on this machine (nor, loaded, in 5 s above).
    assert answer.status_code == 503, answer.status_code
    assert answer.headers["retry-after"] and "TWIN_TILE_TIMEOUT_MS" in answer.json()["detail"]


def test_many_asking_a_tile_that_fails_get_its_answer_from_one_try(crowded: str):
    # A view opening asks one tile of many clients at once; the first asker makes it and
    # the others wait (single flight). When that making fails (past its time limit),
    # the waiters get the same 503 at once instead of each trying again: 20 tries of a
    # tile too heavy for its limit, on a data base slow already.
    app = create_app(_tiles_settings(tile_timeout_ms=100), database_url=crowded)
    tile_cache = app.state.tile_cache
    tries = []
    execute = tile_cache.execute

    def slow_execute(*args: object, **kwargs: object) -> object:
        tries.append(1)
        time.sleep(1.0)  # a busy data base: every asker arrives while it is being made
        return execute(*args, **kwargs)

    tile_cache.execute = slow_execute
    with serve_app(app) as base:

        def ask(_: int) -> tuple[int, str | None]:
            with httpx.Client(timeout=60) as http:
                answer = http.get(f"{base}/tiles/WebMercatorQuad/0/0/0?layers=dots")
                return answer.status_code, answer.headers.get("retry-after")

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(ask, range(20)))
    assert {status for status, _ in answers} == {503}, answers
    assert all(retry for _, retry in answers)
    assert len(tries) == 1, len(tries)


def test_cache_control_follows_the_layers(city_url: str, centre: tuple[float, float]):
    tile = _tile(centre, 15)
    with TestClient(create_app(_tiles_settings(tile_max_age_s=60), database_url=city_url)) as c:
        buildings = _get(c, f"/collections/buildings/tiles/WebMercatorQuad/15/{tile.y}/{tile.x}")
        composite = _get(c, f"/tiles/WebMercatorQuad/15/{tile.y}/{tile.x}")
    assert buildings.headers["cache-control"] == "public, max-age=60"
    # Incidents' overdue changes with the clock: clients must ask again.
    assert composite.headers["cache-control"] == "public, no-cache"


# --- documents --------------------------------------------------------------------------


def test_tilejson_documents_lead_to_tiles(client: TestClient, centre: tuple[float, float]):
    for path in ("/tiles/WebMercatorQuad/tilejson.json",
                 "/collections/buildings/tiles/WebMercatorQuad/tilejson.json",
                 "/tiles/WebMercatorQuad/tilejson.json?layers=pipes,sensors"):  # fmt: skip
        doc = _get(client, path).json()
        assert doc["tilejson"] == "3.0.0"
        west, south, east, north = doc["bounds"]
        assert west <= centre[0] <= east and south <= centre[1] <= north
        zoom = doc["center"][2]
        assert doc["minzoom"] <= zoom <= doc["maxzoom"] == matrix.MAX_ZOOM
        layers = {v["id"]: v for v in doc["vector_layers"]}
        tile = _tile(centre, 16)
        url = doc["tiles"][0].format(z=16, y=tile.y, x=tile.x).removeprefix("http://testserver")
        answer = _get(client, url)
        assert answer.status_code == 200, url
        assert set(_decode(answer.content)) <= set(layers)
        for name, decoded in _decode(answer.content).items():
            for feature in decoded["features"]:
                assert set(feature["properties"]) <= set(layers[name]["fields"]), name
    assert set(layers) == {"pipes", "sensors"}
    assert layers["pipes"]["minzoom"] == registry.BUILTIN["pipes"].tiling.min_zoom
    # The template carries the names, not what else the client wrote around them.
    messy = _get(client, "/tiles/WebMercatorQuad/tilejson.json?layers=%20pipes,%0Asensors,,pipes")
    assert messy.json()["tiles"][0].endswith("{z}/{y}/{x}?layers=pipes,sensors")


def test_tileset_documents_lead_to_tiles(client: TestClient, centre: tuple[float, float]):
    collection = _get(client, "/collections/buildings").json()
    link = next(k for k in collection["links"]
                if k["rel"] == "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector")  # fmt: skip
    tilesets = _get(client, link["href"].removeprefix("http://testserver")).json()
    [tileset_link] = [k for k in tilesets["tilesets"][0]["links"] if k["rel"] == "self"]
    tileset = _get(client, tileset_link["href"].removeprefix("http://testserver")).json()
    assert tileset["dataType"] == "vector"
    assert tileset["crs"] == "http://www.opengis.net/def/crs/EPSG/0/3857"
    assert tileset["tileMatrixSetURI"].endswith("/WebMercatorQuad")
    [item] = [k for k in tileset["links"] if k["rel"] == "item"]
    assert item["type"] == "application/vnd.mapbox-vector-tile" and item["templated"]
    assert "{tileMatrix}/{tileRow}/{tileCol}" in item["href"]
    tile = _tile(centre, 16)
    limits = {lim["tileMatrix"]: lim for lim in tileset["tileMatrixSetLimits"]}
    z16 = limits["16"]
    assert z16["minTileRow"] <= tile.y <= z16["maxTileRow"]
    assert z16["minTileCol"] <= tile.x <= z16["maxTileCol"]
    assert [int(z) for z in limits] == list(range(matrix.MAX_ZOOM + 1))
    # where its features start: the layer's own lowest zoom
    assert (
        int(tileset["layers"][0]["minTileMatrix"]) == registry.BUILTIN["buildings"].tiling.min_zoom
    )
    url = item["href"].format(tileMatrix=16, tileRow=tile.y, tileCol=tile.x)
    assert _get(client, url.removeprefix("http://testserver")).status_code == 200
    [layer] = tileset["layers"]
    assert layer["id"] == "buildings" and layer["geometryDimension"] == 2
    assert "height_m" in layer["propertiesSchema"]["properties"]
    scheme = next(k for k in tileset["links"] if k["rel"].endswith("tiling-scheme"))
    tms = _get(client, scheme["href"].removeprefix("http://testserver")).json()
    assert tms["id"] == "WebMercatorQuad" and len(tms["tileMatrices"]) > matrix.MAX_ZOOM


def test_each_tilesets_list_entry_carries_its_limits_as_ogcs_test_suite_reads_them(
    client: TestClient,
):
    # OGC's test suite (ets-ogcapi-tiles10) reads tileMatrixSetId and the first of the
    # tileMatrixSetLimits of each entry of a tilesets list, asks that tile, and the one
    # past its last row: a tile, then an error.
    for listed in ("/tiles", "/collections/buildings/tiles", "/collections/pipes/tiles"):
        [entry] = _get(client, listed).json()["tilesets"]
        assert entry["tileMatrixSetId"] == "WebMercatorQuad", listed
        self_link = next(k for k in entry["links"] if k["rel"] == "self")
        tileset = _get(client, self_link["href"].removeprefix("http://testserver")).json()
        assert entry["tileMatrixSetLimits"] == tileset["tileMatrixSetLimits"], listed
        assert tileset["tileMatrixSetId"] == "WebMercatorQuad", listed
        first = entry["tileMatrixSetLimits"][0]
        item = next(k for k in entry["links"] if k["rel"] == "item")["href"]
        ask = item.removeprefix("http://testserver").format(
            tileMatrix=first["tileMatrix"], tileCol=first["minTileCol"],
            tileRow=first["maxTileRow"])  # fmt: skip
        assert _get(client, ask).status_code in (200, 204), ask
        beyond = ask.rsplit("/", 2)[0] + f"/{first['maxTileRow'] + 1}/{first['minTileCol']}"
        assert _get(client, beyond).status_code in (400, 404), beyond


def test_the_one_map_tilesets_and_the_conformance(client: TestClient):
    landing = _get(client, "/").json()
    rels = {k["rel"]: k["href"] for k in landing["links"]}
    assert _get(client, rels["http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes"]
                .removeprefix("http://testserver")).json()["tileMatrixSets"][0]["id"] == "WebMercatorQuad"  # fmt: skip
    tilesets = _get(client, "/tiles").json()["tilesets"]
    assert [t["tileMatrixSetURI"].rsplit("/", 1)[1] for t in tilesets] == ["WebMercatorQuad"]
    one_map = _get(client, "/tiles/WebMercatorQuad").json()
    assert {layer["id"] for layer in one_map["layers"]} >= {"buildings", "incidents", "benches"}
    conformance = _get(client, "/conformance").json()["conformsTo"]
    for part in ("core", "tileset", "tilesets-list", "geodata-tilesets", "dataset-tilesets", "mvt"):
        assert f"http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/{part}" in conformance
