"""The 3D view (/view) in a real browser, with no internet: the app served by uvicorn over
the small demo city, Debian's headless Chromium driven by Playwright, every request that
is not to this machine refused (and recorded), and behind that a proxy that leads nowhere.

The page must draw the city (the buildings' pixels go when their toggle is cleared), show
no console error, ask nothing of any outside host, get every tile answered 200 or 204,
show a feature's properties as text in its tooltip, answer a click with the locate answer,
and reload the incidents when the change log says one came in. Staff isolate a burst with
the isolation tool: what goes dry, the valves to close and the buildings affected are drawn
over the map and summed up in the panel; a wrong key is told there; /view?burst=<id> draws
an open burst's isolation.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from tests.conftest import _clone, _drop
from tests.helpers import demo_water_mains, make_data_dir, serve_app, settings_for
from tiles.view import assets
from twin import changes

CHROMIUM = Path("/usr/bin/chromium")
KEY = {"X-API-Key": "view-key"}
VIEWPORT = {"width": 960, "height": 640}
LOAD_S = 300  # software WebGL on two shared cores: the first full draw can take a while
# A name no page may run: shown as text in the tooltip, never as markup.
HOSTILE_NAME = '<img src=x onerror="window.pwned=1"><script>window.pwned=1</script>'

# How many incidents the incidents layer holds in its loaded tiles (binary MVT content).
INCIDENTS_DRAWN = """(() => {
  const layer = window.oneMap.deck.layerManager.getLayers().find((l) => l.id === "incidents");
  return layer.state.tileset.tiles.reduce((n, tile) => n + (tile.content && tile.content.points
    ? tile.content.points.positions.value.length / tile.content.points.positions.size : 0), 0);
})()"""

browser_only = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed (make setup installs it: apt-get install chromium)",
)


@pytest.fixture(scope="module")
def view_url(template_url: str) -> Iterator[str]:
    """A copy of the demo for this module: the view's test adds an incident."""
    name = f"view_{threading.get_native_id()}"
    url = _clone(template_url, name)
    yield url
    _drop(template_url, name)


@pytest.fixture
def settings_url(fresh_url: str) -> tuple[Any, str]:
    return settings_for(make_data_dir("twin-view-")), fresh_url


@pytest.fixture(scope="module")
def server(view_url: str) -> Iterator[str]:
    """The real app served by uvicorn on a free loopback port."""
    settings = settings_for(make_data_dir("twin-view-"), api={"api_keys": {"view-key": "城运中心"}})
    with serve_app(create_app(settings, database_url=view_url)) as base:
        yield base


# --- the page and its files, without a browser -------------------------------------------


def test_the_page_names_no_outside_host(server: str):
    page = httpx.get(f"{server}/view")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    addresses = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert addresses, page.text[:500]
    assert all(a.startswith(("/", "data:")) for a in addresses), addresses
    assert "https://" not in page.text and "http://" not in page.text
    for address in addresses:
        if address.startswith("/"):
            assert httpx.get(f"{server}{address}").status_code == 200, address


def test_the_workers_are_served_and_match_the_bundle(server: str):
    assert assets.check() == []
    assert assets.bundle_loader_version("mvt") == assets.installed_version("@loaders.gl/mvt")
    worker = httpx.get(f"{server}/view/static/mvt-worker.js")
    assert worker.status_code == 200
    assert worker.headers["content-type"].startswith("text/javascript")
    assert "unpkg" not in worker.text
    terrain = httpx.get(f"{server}/view/static/terrain-worker.js")
    assert terrain.status_code == 200


def test_the_bundle_is_cached_gzipped_and_revalidated(server: str):
    url = f"{server}/view/static/deckgl.js"
    plain = httpx.get(url, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert len(plain.content) > 1_000_000  # deck.gl, as pydeck ships it
    assert "immutable" in plain.headers["cache-control"]
    zipped = httpx.get(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == plain.content
    assert int(zipped.headers["content-length"]) < len(plain.content) / 2
    again = httpx.get(url, headers={"If-None-Match": plain.headers["etag"]})
    assert again.status_code == 304


def test_a_long_if_none_match_list_is_answered_and_only_an_absurd_one_refused(
    client: TestClient,
):
    # As on the tiles (door test D9): a browser sends every ETag it holds.
    path = "/view/static/one-map.js"
    tag = client.get(path).headers["etag"]
    others = ", ".join(f'"{i:040x}"' for i in range(60))
    assert client.get(path, headers={"If-None-Match": f"{others}, {tag}"}).status_code == 304
    assert client.get(path, headers={"If-None-Match": others}).status_code == 200
    absurd = client.get(path, headers={"If-None-Match": others * 10})
    assert absurd.status_code == 400 and absurd.json()["parameter"] == "If-None-Match"


@pytest.mark.parametrize(
    ("name", "status"),
    [("nope.js", 404), ("..%2F..%2Fpyproject.toml", 404), ("x" * 81, 400), ("a%00.js", 400)],
)
def test_only_the_views_own_files_are_served(server: str, name: str, status: int):
    answer = httpx.get(f"{server}/view/static/{name}")
    assert answer.status_code == status, answer.text
    assert "[build-system]" not in answer.text  # never a file of ours outside the list


def _deck(page: str) -> dict[str, Any]:
    found = re.search(r'<script id="deck-json" type="application/json">(.*?)</script>', page, re.S)
    assert found, page[:300]
    return json.loads(found.group(1))


def test_without_a_dem_the_view_has_no_terrain(settings_url: tuple[Any, str]):
    settings, url = settings_url
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM terrain_tiles")
        conn.execute("DELETE FROM layer_catalogue WHERE name = 'terrain'")
    with TestClient(create_app(settings, database_url=url)) as client:
        page = client.get("/view")
    assert page.status_code == 200
    kinds = {layer["id"]: layer["@@type"] for layer in _deck(page.text)["layers"]}
    assert "terrain" not in kinds and "TerrainLayer" not in kinds.values()
    assert kinds["buildings"] == "MVTLayer"
    assert 'data-layer="terrain"' not in page.text


def test_the_view_starts_over_the_city(server: str, view_url: str):
    view = _deck(httpx.get(f"{server}/view").text)["initialViewState"]
    with psycopg.connect(view_url) as conn:
        west, south, east, north = conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
            " FROM (SELECT ST_Extent(geom) AS e FROM buildings) AS b"
        ).fetchone()
    assert west < view["longitude"] < east and south < view["latitude"] < north
    assert 12 <= view["zoom"] <= 17 and view["pitch"] > 0


# --- the page in a browser -------------------------------------------------------------


@dataclass
class Visit:
    """What the browser saw and asked for."""

    page: Any
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    tiles: list[tuple[float, int, str]] = field(default_factory=list)  # (monotonic, status, url)


@pytest.fixture(scope="module")
def building(view_url: str) -> dict[str, Any]:
    """The tallest building of the demo, named with markup no page may run."""
    with psycopg.connect(view_url) as conn:
        row = conn.execute(
            "UPDATE buildings SET name = %s WHERE id = (SELECT id FROM buildings"
            " ORDER BY height_m DESC NULLS LAST LIMIT 1) RETURNING id, height_m,"
            " base_elevation_m, ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom))",
            (HOSTILE_NAME,),
        ).fetchone()
        district = conn.execute(
            "SELECT name FROM jurisdictions WHERE level = 'district' LIMIT 1"
        ).fetchone()[0]
    return {
        "id": row[0],
        "height": row[1],
        "base": row[2] or 0.0,
        "lon": row[3],
        "lat": row[4],
        "district": district,
    }


@pytest.fixture(scope="module")
def visit(server: str, building: dict[str, Any]) -> Iterator[Visit]:
    """The view opened in headless Chromium with the network cut off but for loopback,
    every layer's tiles loaded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
            # Anything the route below lets through goes to a proxy that is not there.
            proxy={"server": "http://127.0.0.1:9", "bypass": "127.0.0.1"},
        )  # fmt: skip
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        seen = Visit(page)

        def route(route: Any) -> None:
            url = route.request.url
            if url.startswith((server, "data:", "blob:")):
                route.continue_()
            else:
                seen.outside.append(url)
                route.abort()

        context.route("**/*", route)
        page.on("console", lambda m: m.type == "error" and seen.errors.append(m.text))
        page.on("pageerror", lambda e: seen.errors.append(f"page error: {e}"))
        page.on(
            "response",
            lambda r: "/tiles/" in r.url and seen.tiles.append((time.monotonic(), r.status, r.url)),
        )
        page.goto(f"{server}/view")
        page.wait_for_function(
            "() => window.oneMap && window.oneMap.deck.props.layers.every("
            "l => !l.props.visible || l.isLoaded)",
            timeout=LOAD_S * 1000,
            polling=500,
        )
        page.wait_for_timeout(1500)  # the last tiles drawn
        yield seen
        browser.close()


def _screen_point(visit: Visit, building: dict[str, Any]) -> tuple[float, float]:
    """Where on the screen the building's top is."""
    x, y = visit.page.evaluate(
        "([lon, lat, z]) => window.oneMap.deck.getViewports()[0].project([lon, lat, z]).slice(0, 2)",
        [building["lon"], building["lat"], building["base"] + building["height"] * 0.9],
    )
    assert 0 <= x < VIEWPORT["width"] and 0 <= y < VIEWPORT["height"], (x, y)
    return x, y


def _region(pixels: np.ndarray, x: float, y: float, half: int = 5) -> np.ndarray:
    """The pixels around (x, y) of an image's array (rows, columns, RGB)."""
    return pixels[int(y) - half : int(y) + half, int(x) - half : int(x) + half]


@browser_only
def test_the_view_draws_offline_with_no_error(visit: Visit, building: dict[str, Any], tmp_path):
    shot = tmp_path / "view.png"
    visit.page.screenshot(path=str(shot))
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    background = np.array([27, 31, 36])  # the page's ground colour, one-map.css
    drawn = float((np.abs(pixels - background).max(axis=2) > 12).mean())
    assert drawn > 0.2, f"only {drawn:.0%} of the screen drawn"
    assert visit.errors == [], visit.errors
    assert visit.outside == [], visit.outside
    statuses = {status for _, status, _ in visit.tiles}
    assert statuses <= {200, 204, 304}, [t for t in visit.tiles if t[1] not in (200, 204, 304)]
    answered = {
        re.search(r"/collections/(\w+)/", url).group(1) for _, s, url in visit.tiles if s == 200
    }
    assert {"buildings", "public_spaces", "pipes", "sensors"} <= answered, answered
    assert "terrain" in answered  # the demo's DEM is loaded: its terrain is drawn


@browser_only
def test_clearing_the_buildings_toggle_takes_them_off_the_screen(
    visit: Visit, building: dict[str, Any], tmp_path
):
    x, y = _screen_point(visit, building)
    before = tmp_path / "before.png"
    after = tmp_path / "after.png"
    visit.page.screenshot(path=str(before))
    box = visit.page.locator('input[data-layer="buildings"]')
    box.uncheck()
    visit.page.wait_for_timeout(1500)
    visit.page.screenshot(path=str(after))
    box.check()
    visit.page.wait_for_timeout(1500)
    a = _region(np.asarray(Image.open(before).convert("RGB"), dtype=int), x, y)
    b = _region(np.asarray(Image.open(after).convert("RGB"), dtype=int), x, y)
    changed = (np.abs(a - b).max(axis=2) > 20).mean()
    assert changed > 0.5, f"only {changed:.0%} of the building's pixels changed"


@browser_only
def test_a_tooltip_shows_the_features_properties_as_text(visit: Visit, building: dict[str, Any]):
    x, y = _screen_point(visit, building)
    visit.page.mouse.move(x, y)
    tooltip = visit.page.locator(".deck-tooltip")
    tooltip.wait_for(state="visible", timeout=20_000)
    text = tooltip.inner_text()
    assert "height_m" in text, text
    assert HOSTILE_NAME in text  # the markup is shown, as text
    assert tooltip.locator("img, script").count() == 0
    assert visit.page.evaluate("() => window.pwned") is None


@browser_only
def test_a_click_shows_the_locate_answer(visit: Visit, building: dict[str, Any]):
    x, y = _screen_point(visit, building)
    visit.page.mouse.click(x, y)
    panel = visit.page.locator("#locate")
    panel.wait_for(state="visible", timeout=20_000)
    text = panel.inner_text()
    assert "jurisdictions" in text, text
    assert building["district"] in text, text
    assert visit.errors == [], visit.errors


@browser_only
def test_a_new_incident_reloads_the_incidents_layer(
    server: str, visit: Visit, building: dict[str, Any]
):
    assert visit.page.evaluate(INCIDENTS_DRAWN) == 0
    answer = httpx.post(
        f"{server}/incidents",
        headers=KEY,
        json={
            "category": "SJ",
            "channel": "hotline_12345",
            "location": {"lon": building["lon"], "lat": building["lat"]},
        },
    )
    assert answer.status_code == 201, answer.text
    # The demo's copy has no incidents: the new one is the first in the layer's tiles.
    visit.page.wait_for_function(INCIDENTS_DRAWN + " > 0", timeout=90_000, polling=1000)
    assert "incidents updated" in visit.page.locator("#status").inner_text()
    assert visit.errors == [], visit.errors


# --- the isolation tool (staff) ------------------------------------------------------------

ROLES = {"isolated", "close", "closed", "building_isolated", "building_cut_off"}
ISOLATED_RGB = np.array([255, 40, 200])  # tiles.view.deck.ISOLATION_COLOURS["isolated"]
# The features the isolation layer holds: (role, sensitive).
ISOLATION_DRAWN = """(() => {
  const layer = window.oneMap.deck.props.layers.find((l) => l.id === "isolation");
  return (layer.props.data.features || []).map((f) => [f.properties.role, !!f.properties.sensitive]);
})()"""
# What the browser itself logs for any answer of 400 or more: not the page's doing, and
# no page can keep it from the console.
BROWSER_401 = "Failed to load resource: the server responded with a status of 401 (Unauthorized)"


def _isolate(server: str, pipe: int) -> dict[str, Any]:
    answer = httpx.post(f"{server}/network/water/isolate", json={"pipe": {"id": pipe}},
                        headers=KEY, timeout=60)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()


def _close_valves(view_url: str, valves: list[dict[str, Any]]) -> None:
    """Close valves as a field crew would have: their state, and the change log that says
    the network changed (the topology is built again)."""
    lons, lats = [v["lon"] for v in valves], [v["lat"] for v in valves]
    with psycopg.connect(view_url) as conn:
        conn.execute("UPDATE pipe_nodes SET state = 'closed' WHERE id = ANY(%s)",
                     ([v["id"] for v in valves],))  # fmt: skip
        changes.record(conn, "pipe_nodes", "edit", box=(min(lons), min(lats), max(lons), max(lats)),
                       features=len(valves), table="pipe_nodes")  # fmt: skip


@pytest.fixture(scope="module")
def isolation_case(server: str, view_url: str) -> dict[str, Any]:
    """A demo water main whose isolation has every role: valves to close, one closed
    already, buildings isolated (one a hospital) and buildings cut off. The demo's mains
    are in loops; a main with three valves is taken, the segment beyond one valve is left
    fed through it alone (its other valves closed: cut off when the main is isolated), and
    a second of the main's valves is closed already."""
    mains = demo_water_mains(view_url, 400)
    for pipe in mains:
        first = _isolate(server, pipe)
        if len(first["valves"]) < 3 or not first["buildings"] or first["total_length_m"] > 3000:
            continue
        mine = {p["id"] for p in first["isolated_pipes"]}
        for gate in first["valves"]:
            with psycopg.connect(view_url) as conn:
                beyond = [r[0] for r in conn.execute(
                    "SELECT id FROM pipes WHERE network = 'water' AND status = 'in_service'"
                    " AND ST_DWithin(geom::geography, ST_SetSRID(ST_MakePoint(%s, %s), 4326)"
                    "::geography, 2) ORDER BY id", (gate["lon"], gate["lat"]),
                ) if r[0] not in mine]  # fmt: skip
            if not beyond:
                continue
            other = _isolate(server, beyond[0])
            others = [v for v in other["valves"] if v["id"] != gate["id"]]
            if not others or not other["buildings"] or gate not in other["valves"]:
                continue
            _close_valves(view_url, others)
            _close_valves(view_url, [next(v for v in first["valves"] if v["id"] != gate["id"])])
            answer = _isolate(server, pipe)
            hospital = next(b["id"] for b in answer["buildings"] if b["part"] == "isolated")
            with psycopg.connect(view_url) as conn:
                conn.execute(
                    "UPDATE buildings SET name = '第一人民医院' WHERE id = %s", (hospital,)
                )
                lon, lat = conn.execute(
                    "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_LineInterpolatePoint("
                    "ST_LineMerge(geom), 0.5) AS p FROM pipes WHERE id = %s) AS m", (pipe,),
                ).fetchone()  # fmt: skip
            answer = _isolate(server, pipe)
            assert {f["properties"]["role"] for f in answer["map"]["features"]} == ROLES
            return {"pipe": pipe, "lon": lon, "lat": lat, "answer": answer}
    raise AssertionError("no demo water main whose isolation can be given every role")


ALL_LOADED = "() => window.oneMap.deck.props.layers.every(l => !l.props.visible || l.isLoaded)"


def _look_at(visit: Visit, view: dict[str, float]) -> dict[str, float]:
    """Move the camera to ``view`` (longitude and latitude, the rest kept), its tiles
    loaded; where it was."""
    was = visit.page.evaluate(
        """(view) => {
          const deck = window.oneMap.deck;
          const v = deck.getViewports()[0];
          const was = {longitude: v.longitude, latitude: v.latitude, zoom: v.zoom,
                       pitch: v.pitch, bearing: v.bearing, maxPitch: 85};
          deck.setProps({initialViewState: {...was, ...view}});
          return was;
        }""",
        view,
    )
    visit.page.wait_for_function(ALL_LOADED, timeout=LOAD_S * 1000, polling=500)
    visit.page.wait_for_timeout(1000)
    return was


def _isolated_pixels(visit: Visit, path: Path) -> int:
    visit.page.screenshot(path=str(path))
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=int)
    return int((np.abs(pixels - ISOLATED_RGB).max(axis=2) < 40).sum())


def _on_screen_point(visit: Visit, lon: float, lat: float) -> tuple[float, float] | None:
    """Where (lon, lat) is drawn at the isolation's height, if it is clear of the panel."""
    x, y = visit.page.evaluate(
        "([lon, lat]) => window.oneMap.deck.getViewports()[0].project("
        "[lon, lat, JSON.parse(document.getElementById('view-config').textContent)"
        ".isolation.z]).slice(0, 2)",
        [lon, lat],
    )
    panel = visit.page.locator("#panel").bounding_box()
    inside = 10 < x < VIEWPORT["width"] - 10 and 10 < y < VIEWPORT["height"] - 10
    under_panel = x < panel["x"] + panel["width"] + 10 and y < panel["y"] + panel["height"] + 10
    return (x, y) if inside and not under_panel else None


@browser_only
def test_staff_isolate_a_burst_and_see_it_drawn_over_the_map(
    visit: Visit, isolation_case: dict[str, Any], tmp_path
):
    page, answer = visit.page, isolation_case["answer"]
    errors_before = len(visit.errors)
    if page.locator("#locate").is_visible():
        page.locator("#locate-close").click()
    # The burst in the middle of the screen, clear of the panel.
    was = _look_at(visit, {"longitude": isolation_case["lon"], "latitude": isolation_case["lat"]})
    before = _isolated_pixels(visit, tmp_path / "before.png")
    if page.locator("#isolation-tool").get_attribute("open") is None:
        page.locator("#isolation-tool summary").click()
    page.select_option("#iso-network", "water")
    page.fill("#iso-key", KEY["X-API-Key"])
    page.check("#iso-on")
    # The key is kept in this tab only, never in the address.
    assert page.evaluate("() => sessionStorage.getItem('oneMap.apiKey')") == KEY["X-API-Key"]
    assert KEY["X-API-Key"] not in page.url

    done = page.evaluate("([lon, lat]) => window.twinIsolate(lon, lat)",
                         [isolation_case["lon"], isolation_case["lat"]])  # fmt: skip
    assert done == {"status": 200, "drawn": len(answer["map"]["features"])}, done
    drawn = page.evaluate(ISOLATION_DRAWN)
    assert {role for role, _ in drawn} == ROLES, drawn
    assert any(sensitive for role, sensitive in drawn if role == "building_isolated")

    summary = page.locator("#iso-summary").inner_text()
    pipe = answer["burst"]["pipe"]
    assert f"pipe {pipe['source_id']} (id {pipe['id']})" in summary, summary
    assert f"Valves to close 需关阀门\n{len(answer['valves'])}" in summary, summary
    assert f"Buildings 影响楼宇\n{answer['building_count']}" in summary, summary
    households = "not known 未知" if answer["households"] is None else answer["households"]
    assert f"Households 户数\n{households}" in summary, summary
    assert f"Isolated pipes 停水管段\n{answer['isolated_pipe_count']}" in summary, summary
    assert f"{round(answer['total_length_m']):,} m" in summary, summary
    assert all(v["source_id"] in summary for v in answer["valves"])

    # The canvas draws it: the isolated pipes' colour is on the screen, over what was there.
    page.wait_for_timeout(1500)
    shown = _isolated_pixels(visit, tmp_path / "drawn.png")
    assert shown > before + 200, (before, shown)

    # A valve to close says so in its tooltip.
    places = [_on_screen_point(visit, v["lon"], v["lat"]) for v in answer["valves"]]
    x, y = next(p for p in places if p)
    page.mouse.move(x, y)
    tooltip = page.locator(".deck-tooltip")
    tooltip.wait_for(state="visible", timeout=20_000)
    assert "valve to close" in tooltip.inner_text(), tooltip.inner_text()
    page.mouse.move(5, VIEWPORT["height"] - 5)

    page.click("#iso-clear")
    assert page.evaluate(ISOLATION_DRAWN) == []
    assert page.locator("#iso-summary").inner_text() == ""
    page.wait_for_timeout(1500)
    assert _isolated_pixels(visit, tmp_path / "cleared.png") < before + 50
    _look_at(visit, was)
    assert visit.errors[errors_before:] == [], visit.errors


@browser_only
def test_a_wrong_key_is_told_in_the_panel_and_locate_works_with_the_tool_off(
    visit: Visit, building: dict[str, Any]
):
    page = visit.page
    errors_before = len(visit.errors)
    if page.locator("#isolation-tool").get_attribute("open") is None:
        page.locator("#isolation-tool summary").click()
    page.fill("#iso-key", "not-a-key")
    page.check("#iso-on")
    x, y = _screen_point(visit, building)
    page.mouse.click(x, y)  # a real click, with the tool on
    error = page.locator("#iso-summary .error")
    error.wait_for(state="visible", timeout=20_000)
    assert "401" in error.inner_text() and "valid X-API-Key" in error.inner_text()
    assert page.evaluate(ISOLATION_DRAWN) == []
    assert not page.locator("#locate").is_visible()  # the click isolated; it did not locate
    # Nothing from the page; only the browser's own line for the answer it received.
    assert visit.errors[errors_before:] == [BROWSER_401], visit.errors

    page.uncheck("#iso-on")
    page.mouse.click(x, y)
    page.locator("#locate").wait_for(state="visible", timeout=20_000)
    assert building["district"] in page.locator("#locate").inner_text()
    page.fill("#iso-key", KEY["X-API-Key"])
    assert visit.errors[errors_before:] == [BROWSER_401], visit.errors


@browser_only
def test_zooming_out_over_the_city_with_the_pointer_on_a_feature_draws_without_error(
    visit: Visit, building: dict[str, Any]
):
    # The pointer rests on a building (hovered, highlighted) while the wheel takes the view
    # out to the whole world: every layer's tiles merge, then stop at its lowest zoom and
    # extent, the terrain's below the zoom worth drawing. deck.gl's highlight look-up by MVT
    # feature id threw here, and empty terrain tiles broke the TerrainLayer.
    page = visit.page
    errors_before, tiles_before = len(visit.errors), len(visit.tiles)
    x, y = _screen_point(visit, building)
    page.mouse.move(x, y)  # hovered: the layer keeps it while the view changes
    page.evaluate("""async () => {
      const deck = window.oneMap.deck, v = deck.getViewports()[0];
      for (let zoom = v.zoom - 1; zoom > 1; zoom -= 1) {
        deck.setProps({ initialViewState: { longitude: v.longitude, latitude: v.latitude,
                                            zoom, pitch: v.pitch, bearing: v.bearing } });
        await new Promise((done) => setTimeout(done, 400));
      }
    }""")
    page.wait_for_timeout(2500)
    assert page.evaluate("() => window.oneMap.deck.getViewports()[0].zoom") < 3
    assert visit.errors[errors_before:] == [], visit.errors[errors_before:][:3]
    asked = visit.tiles[tiles_before:]
    assert asked, "zooming out asked for no tile"
    assert {status for _, status, _ in asked} <= {200, 204, 304}, [t for t in asked if t[1] >= 400][
        :3
    ]


@browser_only
def test_view_burst_draws_an_open_bursts_isolation_once_a_key_is_given(
    server: str, visit: Visit, isolation_case: dict[str, Any]
):
    # After the incidents' test: a burst opens incidents of its own.
    opened = httpx.post(f"{server}/network/water/bursts", json={"pipe": {"id": isolation_case["pipe"]}},
                        headers=KEY, timeout=60)  # fmt: skip
    assert opened.status_code == 201, opened.text
    burst = opened.json()["id"]
    page = visit.page.context.new_page()  # another tab: its own sessionStorage, no key yet
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    try:
        page.goto(f"{server}/view?burst={burst}")
        summary = page.locator("#iso-summary")
        page.wait_for_function(
            "() => document.getElementById('iso-summary').textContent.includes('paste a staff')",
            timeout=LOAD_S * 1000,
        )
        page.fill("#iso-key", KEY["X-API-Key"])
        page.press("#iso-key", "Enter")
        page.wait_for_function(ISOLATION_DRAWN + ".length > 0", timeout=60_000, polling=250)
        assert {role for role, _ in page.evaluate(ISOLATION_DRAWN)} == ROLES
        text = summary.inner_text()
        assert f"Burst {burst} 爆管 (open), water" in text, text
        assert f"Valves to close 需关阀门\n{len(isolation_case['answer']['valves'])}" in text
        assert KEY["X-API-Key"] not in page.url
        assert errors == [], errors
    finally:
        page.close()
