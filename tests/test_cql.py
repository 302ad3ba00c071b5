"""CQL2 filters through the real app: every input is a right answer or a clean 400."""

from __future__ import annotations

import json
import random
from urllib.parse import quote

import psycopg
import pytest
from fastapi.testclient import TestClient

ITEMS = "/collections/buildings/items"
POLYGON = "POLYGON((121.39 31.23, 121.41 31.23, 121.41 31.25, 121.39 31.25, 121.39 31.23))"
INTERNALS = ("Token(", "lark", "Function(", "Attribute", "psycopg", "SELECT", "Traceback",
             "__init__", "object is not", "ATTRIBUTE", "Unexpected token", "linearring",
             "LinearRing", "Exception", "coordinate tuples", "Self-intersection", "Too few",
             "GEOS", "shapely", "IllegalArgument", "point array")  # fmt: skip


def _get(client: TestClient, text: str, lang: str = "cql2-text", path: str = ITEMS):
    return client.get(f"{path}?limit=1&filter-lang={lang}&filter={quote(text)}")


def _matched(client: TestClient, text: str, lang: str = "cql2-text", path: str = ITEMS) -> int:
    answer = _get(client, text, lang, path)
    assert answer.status_code == 200, answer.text
    return answer.json()["numberMatched"]


def _count(conn: psycopg.Connection, where: str, table: str = "buildings") -> int:
    return conn.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]


def _json(document: object) -> str:
    return json.dumps(document)


def _nested_not(depth: int) -> str:
    return '{"op":"not","args":[' * depth + "true" + "]}" * depth


def _prop(name: str) -> dict[str, str]:
    return {"property": name}


def _point(lon: object, lat: object) -> dict[str, object]:
    return {"type": "Point", "coordinates": [lon, lat]}


TEXT_REFUSALS = [
    # the parser's internals never show; syntax errors say where and what was expected
    ("height_m >", "at the end"),
    ("height_m >> 5", "column 11"),
    ("name = 'x", "not closed"),
    ("name", "a comparison"),
    ("name IN (NULL)", "IS NULL"),
    ("floors = 1 AND (floors = 2", "')'"),
    ("T_AFTER(updated_at, TIMESTAMP('2020-01-01T00:00:00Z'))", "updated_at T_AFTER"),
    ("  ", "empty"),
    ("secret = 1", "secret"),
    ("a" * 5000 + " = 1", "at most 63 characters"),
    ("updated_at > TIMESTAMP('2020-01-01T00:00:00Z)", "a quote"),
    # functions: CASEI only on text, ACCENTI and unknown functions refused by name
    ("CASEI(floors) = casei('x')", "CASEI takes text"),
    ("ACCENTI(name) = accenti('x')", "ACCENTI"),
    ("pg_sleep(10) = 1", "pg_sleep() is not a function"),
    ("lower(name) = 'x'", "lower() is not a function"),
    # CQL2's array functions and the distance operators it does not have, refused by name
    ("A_CONTAINS(name,('a'))", "A_CONTAINS (array functions) is not supported"),
    ("a_overlaps(name, ('a', 'b'))", "A_OVERLAPS (array functions)"),
    ("A_EQUALS(name, 'a') = TRUE", "A_EQUALS (array functions)"),
    ("S_DWITHIN(geometry, POINT(121.4 31.2), 100, meters)", "S_DWITHIN is not part of CQL2"),
    ("DWITHIN(geometry, POINT(121.4 31.2), 100, meters)", "use S_INTERSECTS with a polygon"),
    ("name = 'A_CONTAINS(' AND floors >", "at the end"),  # inside quotes it is only text
    # arithmetic is not claimed: refused in plain words
    ("height_m + 1 > 5", "arithmetic"),
    ("height_m / 0 > 1", "arithmetic"),
    ("-height_m > 1", "arithmetic"),
    # geometries: in range, finite, and only against the geometry property
    (f"S_INTERSECTS(geometry, {POLYGON.replace('121.39 31.23', '200 100')})", "longitude 200"),
    ("S_INTERSECTS(geometry, POINT(121.4 100))", "latitude 100"),
    ("S_INTERSECTS(geometry, POINT(121.4 1e400))", "1e400"),
    ("S_INTERSECTS(geometry, BBOX(121, 31, 122, 1e400))", "1e400"),
    ("S_INTERSECTS(geometry, BBOX(121, 31, 122, nan))", "four numbers"),
    ("S_INTERSECTS(geometry, BBOX(121, 31, 122))", "four numbers"),
    ("S_INTERSECTS(geometry, BBOX(121, 32, 122, 31))", "southern edge"),
    ("S_INTERSECTS(geometry, BBOX(121, -95, 122, 31))", "latitude -95"),
    ("S_INTERSECTS(name, POINT(121.4 31.2))", "name is a string"),
    ("S_WITHIN(floors, geometry)", "floors is an integer"),
    ("S_INTERSECTS(geometry, 5)", "takes geometries"),
    ("S_INTERSECTS(geometry, SRID=3857;POINT(1 1))", "SRID=3857"),
    # rings and lines as CQL2 (Simple Features) has them, said in our words, not GEOS's
    (
        "S_INTERSECTS(geometry, POLYGON((0 0, 1 1)))",
        "the geometry (Polygon): the outer ring is not closed",
    ),
    (
        "S_INTERSECTS(geometry, POLYGON((121.4 31.2, 121.5 31.2, 121.4 31.2)))",
        "outer ring is not closed: a ring has four positions or more and ends where it starts",
    ),
    (
        "S_INTERSECTS(geometry, POLYGON((0 0, 3 0, 3 3, 0 0),(1 1, 2 1, 2 2, 1 2)))",
        "the geometry (Polygon): ring 1 (a hole) is not closed",
    ),
    (
        "S_INTERSECTS(geometry, MULTIPOLYGON(((0 0, 1 0, 1 1, 0 0)),((0 0, 1 0, 0 0))))",
        "(MultiPolygon): the outer ring of part 1 is not closed",
    ),
    (
        "S_INTERSECTS(geometry, GEOMETRYCOLLECTION(POINT(1 1),POLYGON((0 0, 1 0, 0 0))))",
        "member 1 of the collection: the geometry (Polygon): the outer ring",
    ),
    ("S_INTERSECTS(geometry, LINESTRING(121.4 31.2))", "line needs two positions or more"),
    ("S_INTERSECTS(geometry, LINESTRING(121.4 31.2, 121.4 31.2))", "all one point"),
    ("S_INTERSECTS(geometry, POLYGON((0 0, 1 1, 1 0, 0 1, 0 0)))", "its boundary crosses itself"),
    ("S_INTERSECTS(geometry, ENVELOPE(121 122 31 32))", "BBOX("),
    ("BBOX(geometry, 121, 31, 122, 32)", "S_INTERSECTS(geometry, BBOX"),
    ("geometry = 1", "S_INTERSECTS"),
    # types: both sides of a comparison are of one type
    ("height_m = name", "height_m is a number and name is a string"),
    ("name < floors", "name is a string and floors is an integer"),
    ("height_m > 'abc'", "height_m is a number"),
    ("'abc' < height_m", "height_m is a number"),
    ("name > 5", "name is a string"),
    ("height_estimated = 'yes'", "height_estimated is a boolean"),
    ("properties = 'x'", "several values"),
    ("updated_at > '2020-01-01'", "updated_at is a timestamp"),
    ("updated_at > TIMESTAMP('2020-13-01T00:00:00Z')", "not a date-time"),
    ("updated_at > TIMESTAMP('2020-01-01T00:00:00')", "time zone"),
    ("updated_at > DATE('2020-02-30')", "not a date"),
    ("updated_at T_MEETS TIMESTAMP('2020-01-01T00:00:00Z')", "T_MEETS"),
    ("updated_at T_AFTER INTERVAL('2020-01-01T00:00:00Z', '2021-01-01T00:00:00Z')", "T_DURING"),
    ("floors T_AFTER TIMESTAMP('2020-01-01T00:00:00Z')", "floors is an integer"),
    ("updated_at T_DURING INTERVAL('2020-13-01', '..')", "INTERVAL's start '2020-13-01'"),
    ("updated_at T_DURING INTERVAL('..', 'soon')", "INTERVAL's end 'soon' is not a date"),
    ("updated_at T_DURING INTERVAL('2020-01-01T00:00:00', '..')", "needs a time zone"),
    ("updated_at T_DURING DATE('2020-01-01')", "T_DURING takes an interval"),
    ("floors LIKE '1%'", "LIKE compares text"),
    ("name LIKE 5", "pattern"),
    ("name LIKE address", "pattern"),
    ("name LIKE '\\'", "backslash"),
    ("floors IN (1, 'a')", "floors is an integer; 'a' is not"),
    ("use IN ('office', 5)", "use is a string; 5 is not"),
    ("floors BETWEEN 'a' AND 'b'", "floors is an integer"),
    ("floors BETWEEN 1 AND 'b'", "'b' is not"),
    ("height_estimated BETWEEN FALSE AND TRUE", "BETWEEN takes"),
    # nothing reaches the data base that it cannot take
    ("name = 'a\x00b'", "NUL"),
    ("floors = 99999999999999999999999", "64-bit"),
    ("floors = -99999999999999999999999", "64-bit"),
    ("floors = " + "9" * 5000, "too many digits"),
    ("height_m > 1e400", "1e400"),
]

JSON_REFUSALS = [
    ("{bad", "cql2-json"),
    ('{"op": "=", "args": [{"property": "name"}, "x"]', "column"),
    ("5", "is an object"),
    ("[1]", "is an object"),
    ("null", "is an object"),
    ('"name = 1"', "is an object"),
    (_json({"op": "frob", "args": []}), "frob"),
    (_json({"op": 5, "args": []}), "op is the name"),
    (_json({"op": "=", "args": [1]}), "= takes 2 arguments, not 1"),
    (_json({"op": "between", "args": [_prop("floors"), 1]}), "between takes 3 arguments"),
    (_json({"op": "not", "args": [True, False]}), "not takes 1 argument"),
    (_json({"op": "and", "args": [True]}), "two or more"),
    (_json({"op": "=", "args": {"a": 1}}), "args must be a list"),
    (_json({"op": "in", "args": [_prop("floors"), []]}), "one or more values"),
    (_json({"op": "in", "args": [_prop("floors"), 3]}), "list of one or more values"),
    (_json({"op": "in", "args": [_prop("floors"), [1, "a"]]}), "floors is an integer"),
    (_json({"op": "=", "args": [_prop("name"), None]}), "isNull (at args[1])"),
    (_json({"op": "=", "args": [{"property": 5}, 1]}), "property name is text"),
    (_json({"foo": 1}), "keys foo"),
    (_json({"op": "+", "args": [_prop("height_m"), 1]}), "arithmetic"),
    (_json({"op": "a_equals", "args": [_prop("name"), ["a"]]}), "A_EQUALS (array functions)"),
    (
        _json({"op": "and", "args": [True, {"op": "a_contains", "args": [_prop("name"), ["a"]]}]}),
        "A_CONTAINS (array functions) is not supported (at args[1])",
    ),
    (
        _json({"op": "s_dwithin", "args": [_prop("geometry"), _point(121.4, 31.2), 100, "meters"]}),
        "S_DWITHIN is not part of CQL2; use S_INTERSECTS with a polygon",
    ),
    (_json({"op": "casei", "args": [_prop("name")]}), "not a condition"),
    (_json({"op": "accenti", "args": [_prop("name")]}), "ACCENTI"),
    (_json({"op": "=", "args": [_prop("height_m"), _prop("name")]}), "cannot be compared"),
    (_json({"op": "like", "args": [_prop("floors"), "1%"]}), "LIKE compares text"),
    (_json({"op": "=", "args": [_prop("updated_at"), "2020-01-01"]}), "timestamp"),
    (_json({"op": "t_after", "args": [_prop("updated_at"), {"timestamp": "soon"}]}), "date-time"),
    (_json({"op": "t_after", "args": [_prop("updated_at"), {"timestamp": 5}]}), "as text"),
    (
        _json({"op": "t_during", "args": [_prop("updated_at"), {"interval": ["..", "later"]}]}),
        "INTERVAL's end 'later'",
    ),
    (
        _json({"op": "t_during", "args": [_prop("updated_at"), {"interval": [5, ".."]}]}),
        "ends are dates, timestamps or '..'",
    ),
    (
        _json({"op": "t_during", "args": [_prop("updated_at"), {"interval": ["2020-01-01"]}]}),
        "two instants",
    ),
    ('{"op": "=", "args": [{"property": "height_m"}, NaN]}', "NaN"),
    ('{"op": "=", "args": [{"property": "height_m"}, -Infinity]}', "-Infinity"),
    ('{"op": "=", "args": [{"property": "height_m"}, 1e400]}', "1e400"),
    ('{"op": "=", "args": [{"property": "floors"}, 99999999999999999999999]}', "64-bit"),
    ('{"op": "=", "args": [{"property": "floors"}, ' + "9" * 5000 + "]}", "too many digits"),
    ('{"op": "=", "args": [{"property": "name"}, "a\\u0000b"]}', "NUL"),
    ('{"op": "=", "args": [{"property": "name"}, "a\\ud800b"]}', "Unicode"),
    (_nested_not(800), "nested more than 100"),
    ("[" * 5000 + "]" * 5000, "nested more than 100"),
    (_json({"op": "s_intersects", "args": [_prop("geometry"), _point(200, 31)]}), "longitude 200"),
    (_json({"op": "s_intersects", "args": [_prop("geometry"), _point("a", 31)]}), "two or three"),
    (_json({"op": "s_intersects", "args": [_prop("geometry"), _point(True, 31)]}), "two or three"),
    (
        _json({"op": "s_intersects", "args": [_prop("geometry"), {"bbox": [121, 31, 122]}]}),
        "four numbers",
    ),
    (
        _json({"op": "s_intersects", "args": [_prop("name"), _point(121.4, 31.2)]}),
        "name is a string",
    ),
    (
        _json(
            {
                "op": "s_intersects",
                "args": [
                    _prop("geometry"),
                    {"type": "Polygon", "coordinates": [[[121, 31], [122, 31]]]},
                ],
            }
        ),
        "the geometry (Polygon): the outer ring is not closed",
    ),
    (
        _json(
            {
                "op": "s_within",
                "args": [_prop("geometry"), {"type": "Polygon", "coordinates": [[1, 2, 3, 4]]}],
            }
        ),
        "position 1 is not a position",
    ),
    (
        _json(
            {
                "op": "s_within",
                "args": [_prop("geometry"), {"type": "Polygon", "coordinates": [1, 2]}],
            }
        ),
        "(Polygon): its coordinates are not nested as a Polygon's are",
    ),
    (
        _json(
            {
                "op": "s_within",
                "args": [_prop("geometry"), {"type": "MultiPoint", "coordinates": [1, 2]}],
            }
        ),
        "its coordinates are not a MultiPoint's",
    ),
    (
        _json(
            {
                "op": "s_within",
                "args": [_prop("geometry"), {"type": "Circle", "coordinates": [1, 2]}],
            }
        ),
        "'Circle' is not a geometry type",
    ),
    (
        _json(
            {
                "op": "s_intersects",
                "args": [_prop("geometry"), {"type": "Point", "coordinates": {"x": 1}}],
            }
        ),
        "coordinates",
    ),
]


def _assert_refused(answer, words: str) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    detail = answer.json()["detail"]
    assert words in detail, detail
    assert not any(bad in detail for bad in INTERNALS), detail


@pytest.mark.parametrize(("text", "words"), TEXT_REFUSALS)
def test_bad_cql2_text_is_a_clean_400(client: TestClient, text: str, words: str):
    _assert_refused(_get(client, text), words)


@pytest.mark.parametrize(("text", "words"), JSON_REFUSALS)
def test_bad_cql2_json_is_a_clean_400(client: TestClient, text: str, words: str):
    _assert_refused(_get(client, text, "cql2-json"), words)


@pytest.mark.parametrize("lang", ["CQL2-JSON", "ecql", "x" * 300])
def test_only_the_two_filter_languages_are_read(client: TestClient, lang: str):
    _assert_refused(_get(client, "floors = 1", lang), "use cql2-text or cql2-json")


def test_the_draft_name_cql_text_is_read_as_cql2_text(client: TestClient, conn: psycopg.Connection):
    # GDAL 3.6 sends filter-lang=cql-text, the draft's name for the same language.
    answer = _get(client, "floors = 1", "cql-text")
    assert answer.json()["numberMatched"] == _count(conn, "floors = 1")


def test_an_empty_filter_selects_everything(client: TestClient, conn: psycopg.Connection):
    everything = client.get(f"{ITEMS}?limit=1&filter=").json()["numberMatched"]
    assert everything == _count(conn, "TRUE")


def test_casei_matches_sql_lower(client: TestClient, conn: psycopg.Connection):
    expected = _count(conn, "lower(use) = lower('OFFICE')")
    assert expected > 0 and _count(conn, "use = 'OFFICE'") == 0  # the case really differs
    assert _matched(client, "CASEI(use) = casei('OFFICE')") == expected
    as_json = {"op": "=", "args": [{"op": "casei", "args": [_prop("use")]},
                                   {"op": "casei", "args": ["OfFiCe"]}]}  # fmt: skip
    assert _matched(client, _json(as_json), "cql2-json") == expected
    several = _count(conn, "lower(use) IN ('office', 'residential')")
    text = "casei(use) IN (CASEI('Office'), CASEI('RESIDENTIAL'))"
    assert _matched(client, text) == several > expected
    like = _count(conn, "lower(use) LIKE lower('%FFIC%')")
    assert _matched(client, "CASEI(use) LIKE CASEI('%FFIC%')") == like == expected


def test_standard_json_between_and_like_match_sql(client: TestClient, conn: psycopg.Connection):
    expected = _count(conn, "floors BETWEEN 3 AND 6")
    between = {"op": "between", "args": [_prop("floors"), 3, 6]}
    assert (
        _matched(client, _json(between), "cql2-json")
        == expected
        == _matched(client, "floors BETWEEN 3 AND 6")
    )
    assert 0 < expected < _count(conn, "TRUE")
    assert _matched(client, "floors BETWEEN 6 AND 3") == 0  # low above high: nothing, no error
    like = {"op": "like", "args": [_prop("address"), "%号"]}
    assert _matched(client, _json(like), "cql2-json") == _count(conn, "address LIKE '%号'") > 0


def test_property_to_property_and_literal_forms(client: TestClient, conn: psycopg.Connection):
    expected = _count(conn, "height_m > base_elevation_m")
    assert _matched(client, "height_m > base_elevation_m") == expected > 0
    assert _matched(client, "50 < height_m") == _count(conn, "height_m > 50") > 0
    assert _matched(client, "floors > 2.5") == _count(conn, "floors > 2.5") > 0
    assert _matched(client, "name <> 'it''s'") == _count(conn, "name <> 'it''s'") > 0
    # A doubled quote is a quote inside the text: the rest stays text, never SQL.
    injection = "name LIKE '%'' OR ''1''=''1' OR name LIKE '%'';--'"
    texts = ["%' OR '1'='1", "%';--"]
    by_sql = conn.execute(
        "SELECT count(*) FROM buildings WHERE name LIKE %s OR name LIKE %s", texts
    ).fetchone()[0]
    assert _matched(client, injection) == by_sql == 0
    long_text = "x" * 19_000  # a long literal is only a value that matches nothing
    assert _matched(client, f"name = '{long_text}'") == 0


def test_temporal_filters_match_sql(client: TestClient, conn: psycopg.Connection):
    middle = conn.execute(
        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY latest_at) FROM sensors"
    ).fetchone()[0]
    stamp = middle.isoformat()
    sensors = "/collections/sensors/items"
    after = _count(conn, f"latest_at > '{stamp}'", "sensors")
    assert _matched(client, f"latest_at T_AFTER TIMESTAMP('{stamp}')", path=sensors) == after
    assert _matched(client, f"latest_at > timestamp('{stamp}')", path=sensors) == after
    upto = _count(conn, f"latest_at <= '{stamp}'", "sensors")
    interval = f"INTERVAL('2000-01-01T00:00:00Z', '{stamp}')"
    assert _matched(client, f"latest_at T_INTERSECTS {interval}", path=sensors) == upto
    during = {"op": "t_during", "args": [_prop("latest_at"), {"interval": ["2000-01-01", stamp]}]}
    assert _matched(client, _json(during), "cql2-json", sensors) == upto - _count(
        conn, f"latest_at = '{stamp}'", "sensors"
    )  # T_DURING is strictly inside
    open_end = {"op": "t_intersects", "args": [_prop("latest_at"), {"interval": [stamp, ".."]}]}
    assert _matched(client, _json(open_end), "cql2-json", sensors) == _count(
        conn, f"latest_at >= '{stamp}'", "sensors"
    )


def test_dates_in_intervals_and_as_instants_are_whole_days_in_utc(
    client: TestClient, conn: psycopg.Connection
):
    # The day (in UTC) most sensors last reported on: the filters below must split the rows.
    day = conn.execute(
        "SELECT (latest_at AT TIME ZONE 'UTC')::date FROM sensors GROUP BY 1 "
        "ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()[0]
    start, after = f"'{day}T00:00:00Z'::timestamptz", f"'{day}T00:00:00Z'::timestamptz + '1 day'"
    sensors = "/collections/sensors/items"

    def matched(text: str, lang: str = "cql2-text") -> int:
        return _matched(client, text, lang, sensors)

    on_day = _count(conn, f"latest_at >= {start} AND latest_at < {after}", "sensors")
    before, later = (
        _count(conn, f"latest_at {w}", "sensors") for w in (f"< {start}", f">= {after}")
    )
    assert on_day > 0 and before + later > 0  # the day is a part of the rows, not all
    # A DATE instant is its whole day, for every operator that takes an instant.
    assert matched(f"latest_at T_INTERSECTS DATE('{day}')") == on_day
    assert matched(f"latest_at T_EQUALS DATE('{day}')") == on_day
    assert matched(f"latest_at T_AFTER DATE('{day}')") == later
    assert matched(f"latest_at T_BEFORE DATE('{day}')") == before
    as_json = {"op": "t_intersects", "args": [_prop("latest_at"), {"date": str(day)}]}
    assert matched(_json(as_json), "cql2-json") == on_day
    # A TIMESTAMP instant is that instant.
    stamp = conn.execute("SELECT min(latest_at) FROM sensors").fetchone()[0].isoformat()
    at_stamp = _count(conn, f"latest_at = '{stamp}'", "sensors")
    assert matched(f"latest_at T_INTERSECTS TIMESTAMP('{stamp}')") == at_stamp > 0
    # Dates as an interval's bounds: from the start of the first day to the end of the last.
    assert matched(f"latest_at T_INTERSECTS INTERVAL('{day}', '{day}')") == on_day
    assert matched(f"latest_at T_DURING INTERVAL('{day}', '{day}')") == _count(
        conn, f"latest_at > {start} AND latest_at < {after}", "sensors"
    )
    assert matched(f"latest_at T_DURING INTERVAL('..', '{day}')") == before + on_day
    assert matched(f"latest_at T_INTERSECTS INTERVAL('{day}', '..')") == on_day + later
    everything = _count(conn, "latest_at IS NOT NULL", "sensors")
    assert matched("latest_at T_DURING INTERVAL('..', '..')") == everything
    assert matched("latest_at T_DURING INTERVAL('2000-01-01', '2099-12-31')") == everything
    open_start = {"op": "t_during", "args": [_prop("latest_at"), {"interval": ["..", str(day)]}]}
    assert matched(_json(open_start), "cql2-json") == before + on_day
    noon = f"{day}T12:00:00Z"  # a date and a timestamp mix
    assert matched(f"latest_at T_INTERSECTS INTERVAL('{day}', '{noon}')") == _count(
        conn, f"latest_at >= {start} AND latest_at <= '{noon}'", "sensors"
    )


def test_spatial_filters_match_sql(client: TestClient, conn: psycopg.Connection):
    box = "121.39, 31.23, 121.40, 31.24"
    expected = _count(conn, f"ST_Intersects(geom, ST_MakeEnvelope({box}, 4326))")
    assert _matched(client, f"s_intersects(geometry, bbox({box}))") == expected > 0
    six = {"op": "s_intersects", "args": [_prop("geometry"),
                                          {"bbox": [121.39, 31.23, 0, 121.40, 31.24, 100]}]}  # fmt: skip
    assert _matched(client, _json(six), "cql2-json") == expected
    inside = _count(conn, f"ST_Within(geom, ST_GeomFromText('{POLYGON}', 4326))")
    assert _matched(client, f"S_WITHIN(geometry, {POLYGON})") == inside > 0
    across = "S_INTERSECTS(geometry, BBOX(170, -10, -170, 10))"  # across the antimeridian
    assert _matched(client, across) == 0
    assert _matched(client, "S_INTERSECTS(geometry, BBOX(121, 31, -170, 32))") == _count(
        conn, "TRUE"
    )  # from 121°E eastward over 180° to 170°W holds the whole city


def test_long_chains_and_deep_parentheses_are_answered(
    client: TestClient, conn: psycopg.Connection
):
    chain = " OR ".join(f"floors = {i}" for i in range(1000))
    assert _matched(client, chain) == _count(conn, "floors BETWEEN 0 AND 999")
    deep = "(" * 3000 + "floors = 6" + ")" * 3000
    assert _matched(client, deep) == _count(conn, "floors = 6") > 0
    terms = [{"op": "=", "args": [_prop("floors"), i]} for i in range(300)]
    assert _matched(client, _json({"op": "or", "args": terms}), "cql2-json") == _count(
        conn, "floors BETWEEN 0 AND 299"
    )
    assert _matched(client, _nested_not(40), "cql2-json") == _count(conn, "TRUE")


# -- a small seeded fuzzer: whatever it sends is answered 200 or a clean 400 -------------------

_PROPERTIES = ["name", "use", "floors", "height_m", "height_estimated", "updated_at",
               "geometry", "properties", "nope", '"name"']  # fmt: skip
_VALUES = ["'x'", "''", "'a''b'", "'%'", "'\x00'", "0", "-1", "2.5", "1e308", "1e400",
           "99999999999999999999", "TRUE", "NULL", "TIMESTAMP('2020-01-01T00:00:00Z')",
           "DATE('2020-01-01')", "POINT(121.4 31.2)", "POINT(200 95)", "BBOX(121,31,122,32)",
           "CASEI('X')", "casei(name)", "f(1)", "INTERVAL('2020-01-01T00:00:00Z','..')"]  # fmt: skip
_OPERATORS = ["=", "<>", "<", ">=", "LIKE", "NOT LIKE", "T_AFTER", "T_DURING", "+", "IS"]


def _random_text(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if depth < 3 and roll < 0.3:
        joint = rng.choice([" AND ", " OR "])
        return "(" + _random_text(rng, depth + 1) + joint + _random_text(rng, depth + 1) + ")"
    if depth < 3 and roll < 0.4:
        return "NOT (" + _random_text(rng, depth + 1) + ")"
    lhs = rng.choice(_PROPERTIES + _VALUES[:3])
    if roll < 0.5:
        return f"{lhs} IN ({', '.join(rng.choices(_VALUES, k=rng.randint(1, 3)))})"
    if roll < 0.6:
        return f"{lhs} BETWEEN {rng.choice(_VALUES)} AND {rng.choice(_VALUES)}"
    if roll < 0.7:
        spatial = rng.choice(["S_INTERSECTS", "S_WITHIN", "s_contains"])
        return f"{spatial}({rng.choice(_PROPERTIES)}, {rng.choice(_VALUES)})"
    return f"{lhs} {rng.choice(_OPERATORS)} {rng.choice(_VALUES + _PROPERTIES)}"


def _mutate(rng: random.Random, text: str) -> str:
    """Cut, duplicate or replace a few characters: broken input, as a careless client sends."""
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        if not chars:
            break
        at = rng.randrange(len(chars))
        chars[at : at + 1] = rng.choice([[], [chars[at]] * 2, [rng.choice("()',\"=%\\ 9-.e[]{}:")]])
    return "".join(chars)


_JSON_LEAVES: list[object] = [
    {"property": "name"}, {"property": "floors"}, {"property": "geometry"},
    {"property": "updated_at"}, {"property": 1}, "x", "", 0, -1, 2.5, 1e308, True, None, [],
    [1, "a"], {"timestamp": "2020-01-01T00:00:00Z"}, {"date": "2020-02-30"},
    {"interval": ["2020-01-01", ".."]}, {"bbox": [121, 31, 122, 32]}, {"bbox": [1, 2]},
    {"type": "Point", "coordinates": [121.4, 31.2]}, {"type": "Point", "coordinates": [1]},
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}, {"op": "casei", "args": ["X"]},
]  # fmt: skip
_JSON_OPS = ["=", "<>", "<", "like", "in", "between", "isNull", "not", "and", "or",
             "s_intersects", "s_within", "t_after", "t_during", "casei", "+", "frob", "a_equals"]  # fmt: skip


def _random_json(rng: random.Random, depth: int = 0) -> object:
    if depth > 3 or rng.random() < 0.3:
        return rng.choice(_JSON_LEAVES)
    args = [_random_json(rng, depth + 1) for _ in range(rng.choice([0, 1, 2, 2, 2, 3]))]
    return {"op": rng.choice(_JSON_OPS), "args": args}


def test_fuzzed_filters_are_answered_or_refused_cleanly(client: TestClient):
    rng = random.Random(9)
    cases = []
    for _ in range(150):
        text = _random_text(rng)
        cases.append((text if rng.random() < 0.6 else _mutate(rng, text), "cql2-text"))
    for _ in range(150):
        document = json.dumps(_random_json(rng))
        cases.append((document if rng.random() < 0.7 else _mutate(rng, document), "cql2-json"))
    for text, lang in cases:
        answer = _get(client, text, lang)
        assert answer.status_code in (200, 400), (text, answer.text)
        if answer.status_code == 400:
            detail = answer.json()["detail"]
            assert (
                detail.startswith("filter")
                or "is not a queryable" in detail
                or "'filter' holds a NUL" in detail
            ), (text, detail)
            assert not any(bad in detail for bad in INTERNALS), (text, detail)
