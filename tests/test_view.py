"""The 3D view (/view) in a real browser, with no internet: the app served by uvicorn over
the small demo city, Debian's headless Chromium driven by Playwright, every request that
is not to this machine refused (and recorded), and behind that a proxy that leads nowhere.

The page must draw the city (the buildings' pixels go when their toggle is cleared), show
no console error, ask nothing of any outside host, get every tile answered 200 or 204,
show a feature's properties as text in its tooltip, answer a click with the locate answer,
and reload the incidents when the change log says one came in.
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
from tests.helpers import make_data_dir, serve_app, settings_for
from tiles.view import assets

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
