"""The notebooks in notebooks/ run top to bottom, as a user runs them, against the small
demo city with its history of incidents: a kernel on the venv's python, pointed at the
data base by TWIN_DATABASE_URL alone. Each test reads what the user sees in the outputs:
the tables, and the maps' pages (the deck.gl JSON inside each page, with nothing loaded
from outside hosts). A cell that raises fails the run (nbclient's CellExecutionError)."""

from __future__ import annotations

import html
import io
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import psycopg
import pytest
from nbclient import NotebookClient

from layers.demo.generate import DemoCity
from layers.demo.history import load_history
from tests.conftest import _clone, _drop
from twin.incidents import evaluation, intake

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ROAD = "铜川路"  # the road the planning notebook looks under (a road of the small demo)
# Two reports the test makes today, each in its own grid, of categories no open incident
# has nearby (so neither is fused into another).
TODAYS_REPORTS = (("SJ0101", "first"), ("BJ0101", "last"))


@dataclass
class Run:
    """A notebook after its run: its cells, and the moments it ran between."""

    cells: list[Any]
    started: datetime
    finished: datetime

    def output(self, source_start: str, mime: str = "text/html") -> str:
        """The ``mime`` output of the cell whose code begins with ``source_start``."""
        for cell in self.cells:
            if cell.cell_type == "code" and cell.source.startswith(source_start):
                for output in cell.outputs:
                    if mime in output.get("data", {}):
                        return output["data"][mime]
                raise AssertionError(f"the cell {source_start!r} shows no {mime}")
        raise AssertionError(f"no cell begins with {source_start!r}")

    def text(self, source_start: str) -> str:
        """What the cell printed."""
        for cell in self.cells:
            if cell.cell_type == "code" and cell.source.startswith(source_start):
                return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        raise AssertionError(f"no cell begins with {source_start!r}")

    def table(self, source_start: str) -> pd.DataFrame:
        return pd.read_html(io.StringIO(self.output(source_start)), index_col=0)[0]

    def pages(self) -> list[str]:
        """Every map's page, as the browser gets it (the iframe's srcdoc)."""
        found = []
        for cell in self.cells:
            for output in cell.get("outputs", []):
                shown = output.get("data", {}).get("text/html", "")
                found += [html.unescape(m) for m in re.findall(r'srcdoc="([^"]*)"', shown)]
        return found

    def decks(self) -> list[dict[str, Any]]:
        """Every map's deck, as deck.gl reads it from the page."""
        found = []
        for page in self.pages():
            start = page.index("jsonInput: ") + len("jsonInput: ")
            found.append(json.JSONDecoder().raw_decode(page, start)[0])
        return found

    def layers(self) -> dict[str, dict[str, Any]]:
        """Every layer drawn on the notebook's maps, by its id."""
        drawn: dict[str, dict[str, Any]] = {}
        for deck in self.decks():
            for layer in deck["layers"]:
                assert layer["id"] not in drawn
                drawn[layer["id"]] = layer
        return drawn


def _run(name: str, url: str) -> Run:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    with pytest.MonkeyPatch.context() as mp:
        for variable in [v for v in os.environ if v.startswith("TWIN_")]:
            mp.delenv(variable)  # the developer's own settings stay out of it
        mp.setenv("TWIN_DATABASE_URL", url)
        mp.setenv("JUPYTER_PREFER_ENV_PATH", "1")  # the venv's kernel, before a user's own
        started = datetime.now(UTC)
        NotebookClient(
            notebook, kernel_name="python3", timeout=300,
            resources={"metadata": {"path": str(NOTEBOOKS)}},  # as Jupyter starts it
        ).execute()  # fmt: skip
    return Run(notebook.cells, started, datetime.now(UTC))


@pytest.fixture(scope="module")
def city_url(template_url: str, small_city: DemoCity) -> Iterator[str]:
    """A private copy of the small demo with its three months of incidents up to now, and
    two reports of today."""
    url = _clone(template_url, "notebooks_module")
    with psycopg.connect(url) as conn:
        load_history(conn, small_city, seed=1)
        grids = conn.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p, code"
            " FROM jurisdictions WHERE level = 'grid' ORDER BY code) g"
        ).fetchall()
        for (category, end), (lon, lat) in zip(TODAYS_REPORTS, (grids[0], grids[-1]), strict=True):
            intake.report(conn, category_code=category, channel="hotline_12345", lon=lon,
                          lat=lat, description=f"test: the {end} grid")  # fmt: skip
        conn.commit()
    yield url
    _drop(template_url, "notebooks_module")


@pytest.fixture(scope="module")
def planning(city_url: str) -> Run:
    return _run("02_planning_map.ipynb", city_url)


@pytest.fixture(scope="module")
def dispatch(city_url: str) -> Run:
    return _run("03_dispatch_day.ipynb", city_url)


@pytest.fixture(scope="module")
def core(city_url: str) -> Run:
    return _run("01_core_without_the_app.ipynb", city_url)


@pytest.fixture
def city(city_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(city_url, autocommit=True) as conn:
        yield conn


def _days_incidents(conn: psycopg.Connection, day: str) -> list[tuple[int, str | None, str]]:
    """The incidents of ``day`` (China Standard Time): id, unit name, status."""
    span = evaluation.period(day, day)
    return conn.execute(
        "SELECT i.id, u.name, i.status FROM incidents i LEFT JOIN units u ON u.code = i.unit_code"
        " WHERE i.reported_at >= %s AND i.reported_at < %s ORDER BY i.id",
        (span.start, span.end),
    ).fetchall()


def _overdue_at(conn: psycopg.Connection, now: datetime) -> set[int]:
    where = intake.OVERDUE_WHERE.as_string(conn)
    rows = conn.execute(f"SELECT id FROM incidents i WHERE {where}", intake.overdue_params(now))
    return {row[0] for row in rows}


def test_the_core_notebook_lists_the_inventory(core: Run, city: psycopg.Connection):
    assert core.text("import sys").strip() == sys.executable
    inventory = core.text("for layer in catalogue")
    count = city.execute("SELECT count(*) FROM buildings").fetchone()[0]
    assert re.search(rf"^buildings\s+MultiPolygon\s+{count:,}\s", inventory, re.MULTILINE)


@pytest.mark.parametrize("notebook", ["planning", "dispatch"])
def test_the_notebooks_run_on_the_venvs_python_and_their_maps_load_nothing_from_outside(
    notebook: str, request: pytest.FixtureRequest
):
    run: Run = request.getfixturevalue(notebook)
    assert run.text("import sys").strip() == sys.executable
    assert not [o for c in run.cells for o in c.get("outputs", []) if o.output_type == "error"]
    pages = run.pages()
    assert len(pages) == {"planning": 3, "dispatch": 1}[notebook]
    for page in pages:
        assert "createDeck(" in page
        # The page's own markup (the scripts' bodies aside: deck.gl inlined, the deck)
        # fetches no script, stylesheet or image.
        markup = re.sub(r"<script>.*?</script>", "", page, flags=re.DOTALL)
        assert "<script" not in markup
        assert not re.search(r"<link\b|\ssrc=|\shref=|@import|url\(", markup)
    for deck in run.decks():
        assert "mapStyle" not in deck and "mapProvider" not in deck  # no outside base map
        assert deck["layers"] and all(layer["data"] for layer in deck["layers"])


def test_buildings_stand_at_their_height_coloured_by_their_use(
    planning: Run, city: psycopg.Connection
):
    buildings = planning.layers()["buildings"]
    assert buildings["@@type"] == "GeoJsonLayer"
    assert buildings["extruded"] is True
    assert buildings["getElevation"] == "@@=properties.height_m"
    drawn = buildings["data"]["features"]
    stored = dict(city.execute("SELECT id, height_m FROM buildings").fetchall())
    assert {int(f["id"]): f["properties"]["height_m"] for f in drawn} == stored
    colours = {f["properties"]["use"]: tuple(f["properties"]["colour"]) for f in drawn}
    assert len(set(colours.values())) == len(colours) >= 5  # one colour per use
    by_use = planning.table("USE_COLOURS").set_index("use")
    assert by_use["buildings"].sum() == len(stored)
    assert by_use.loc["office", "tallest_m"] == round(
        city.execute("SELECT max(height_m) FROM buildings WHERE use = 'office'").fetchone()[0], 1
    )


def _grid_reports(conn: psycopg.Connection, since: datetime) -> dict[str, int]:
    rows = conn.execute(
        "SELECT j ->> 'code', count(*) FROM incidents i, jsonb_array_elements(i.jurisdictions) j"
        " WHERE j ->> 'level' = 'grid' AND i.reported_at >= %s GROUP BY 1",
        (since,),
    )
    return dict(rows.fetchall())


def test_hotspots_colour_each_grid_by_its_reports_of_the_last_30_days(
    planning: Run, city: psycopg.Connection
):
    layers = planning.layers()
    grids = layers["grids"]["data"]["features"]
    assert (
        len(grids)
        == city.execute("SELECT count(*) FROM jurisdictions WHERE level = 'grid'").fetchone()[0]
    )
    drawn = {g["properties"]["code"]: g["properties"]["reports"] for g in grids}
    # The notebook's 30 days began between the run's start and end, 30 days before.
    most = _grid_reports(city, planning.started - timedelta(days=30))
    least = _grid_reports(city, planning.finished - timedelta(days=30))
    for code, reports in drawn.items():
        assert least.get(code, 0) <= reports <= most.get(code, 0), code
    assert sum(drawn.values()) >= 20  # the demo's history is there, not an empty map
    hottest = max(drawn, key=drawn.__getitem__)
    alpha = {g["properties"]["code"]: g["properties"]["colour"][3] for g in grids}
    assert alpha[hottest] == max(alpha.values()) > min(alpha.values())
    table = planning.table("from twin.incidents import")
    assert table.iloc[0]["count"] == drawn[hottest]
    # Today's two reports are dots on the map.
    dots = {(round(d["lon"], 6), round(d["lat"], 6)) for d in layers["reports"]["data"]}
    for lon, lat in city.execute(
        "SELECT ST_X(geom), ST_Y(geom) FROM incidents WHERE description LIKE 'test:%'"
    ).fetchall():
        assert (round(lon, 6), round(lat, 6)) in dots


def test_the_pipes_under_a_street_are_drawn_at_their_depth_below_it(
    planning: Run, city: psycopg.Connection
):
    layers = planning.layers()
    road = layers["road"]["data"]["features"]
    assert [r["properties"]["name"] for r in road] == [ROAD]
    stored = city.execute(
        "SELECT p.id, p.network, p.depth_m FROM pipes p, public_spaces r"
        " WHERE r.kind = 'road' AND r.name = %s AND ST_Intersects(p.geom, r.geom)",
        (ROAD,),
    ).fetchall()
    assert len(stored) > 10
    pipes = layers["pipes"]["data"]
    assert len(pipes) == len(stored)
    assert sorted((p["network"], p["depth_m"]) for p in pipes) == sorted(
        (network, depth) for _, network, depth in stored
    )
    for pipe in pipes:
        assert {z for _, _, z in pipe["path"]} == {-pipe["depth_m"]}  # below the ground
    networks = {network for _, network, _ in stored}
    assert f"networks {', '.join(sorted(networks))}" in planning.text("import shapely")
    assert set(planning.table("import shapely")["network"]) == networks
    assert layers["pipe_nodes"]["data"]  # valves, manholes … under the road too
    for node in layers["pipe_nodes"]["data"]:  # hydrants stand on the ground (depth 0)
        assert node["position"][2] == -(node["depth_m"] or 0)
    assert any(node["position"][2] < 0 for node in layers["pipe_nodes"]["data"])


def test_the_days_incidents_are_listed_and_counted_per_unit(
    dispatch: Run, city: psycopg.Connection
):
    # The day the notebook took as today (it may have turned midnight since).
    day = re.match(r"(\d{4}-\d{2}-\d{2}): \d+ incidents reported", dispatch.text("from datetime"))
    assert day is not None
    assert day[1] in {
        d.date().isoformat()
        for d in (
            dispatch.started.astimezone(evaluation.ZONE),
            dispatch.finished.astimezone(evaluation.ZONE),
        )
    }
    todays = _days_incidents(city, day[1])
    assert len(todays) >= len(TODAYS_REPORTS)
    listed = dispatch.table("from datetime import")
    assert sorted(listed["id"]) == [i for i, _, _ in todays]
    per_unit = dispatch.table("per_unit = ").set_index("unit")
    assert per_unit.loc["total", "total"] == len(todays)
    for _, unit, status in todays:
        shown = unit or "(not dispatched 未派)"
        assert per_unit.loc[shown, status] >= 1
    figures = dispatch.table("figures = ")
    units = {unit for _, unit, _ in todays if unit}
    assert units <= set(figures["name"])
    assert figures["received"].sum() >= len([u for _, u, _ in todays if u])


def test_the_overdue_map_shows_the_work_overdue_now(dispatch: Run, city: psycopg.Connection):
    drawn = dispatch.layers()["overdue"]["data"]
    ids = {d["id"] for d in drawn}
    # Overdue when the cell ran: due times may pass while the notebook runs.
    assert _overdue_at(city, dispatch.started) <= ids <= _overdue_at(city, dispatch.finished)
    assert ids  # the demo's history leaves open work past its due time
    longest = max(drawn, key=lambda d: d["hours_overdue"])
    assert longest["radius"] == max(d["radius"] for d in drawn)
    assert longest["colour"][1] == 0  # the longest overdue is the reddest
    table = dispatch.table("now = datetime.now")
    assert set(table["id"]) == ids
    assert list(table["hours_overdue"]) == sorted(table["hours_overdue"], reverse=True)
    assert f"{len(ids)} incidents overdue now" in dispatch.text("now = datetime.now")
