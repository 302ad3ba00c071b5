"""Evaluation (一网评效) and public sentiment (社情民意) over HTTP, for staff: every answer
as JSON, or as a CSV file for Excel (``format=csv`` or ``Accept: text/csv``). Thin: the
core (twin.incidents.evaluation, twin.incidents.sentiment) checks the values and counts;
this module reads the parameters and writes the file.

The CSV is UTF-8 with a byte order mark, so Excel in a Chinese office reads the names
right; a text cell beginning with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage
return) is written with a ``'`` before it, so a name or a word from a report is never
run as a formula (CSV injection). Numbers are written as numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response

from api.access import Evaluator, Heavy
from api.deps import FastJSON, KnownParameters, Plain, with_connection
from twin.errors import InvalidInput
from twin.incidents import evaluation, sentiment

router = APIRouter(tags=["evaluation"])
FORMATS = ("json", "csv")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_TYPE = "text/csv; charset=utf-8"

From = Annotated[str | None, Query(alias="from", max_length=64,
                                   description="a date (2026-11-01) or a date-time with its "
                                   "zone; default: 30 days before to")]  # fmt: skip
To = Annotated[str | None, Query(max_length=64, description="a date (the whole day) or a "
                                 "date-time with its zone; default: now")]  # fmt: skip
Format = Annotated[str | None, Query(max_length=10, description="json (default) or csv")]
Level = Annotated[str, Query(max_length=40, description="city, district, street, grid or "
                             "community")]  # fmt: skip


def _cell(value: Any) -> Any:
    """A value as a CSV cell: text guarded against formulas, lists joined, times as RFC
    3339, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The rows under a header of ``columns``, as CSV text starting with a byte order
    mark (Excel then reads UTF-8)."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([_cell(c) for c in columns])
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()


def _wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        if fmt not in FORMATS:
            raise InvalidInput(f"format {fmt[:10]!r} is not one of {', '.join(FORMATS)}",
                               option="format")  # fmt: skip
        return fmt == "csv"
    return "text/csv" in request.headers.get("accept", "")


def _answer(
    request: Request,
    fmt: str | None,
    name: str,
    span: evaluation.Period,
    found: dict[str, Any],
    table: Callable[[dict[str, Any]], tuple[Sequence[str], Iterable[Sequence[Any]]]],
) -> Response:
    """``found`` as JSON, or the CSV of ``table(found)`` as a download named after the
    answer and its period."""
    if not _wants_csv(request, fmt):
        return FastJSON(found)
    columns, rows = table(found)
    first, last = span.start.date().isoformat(), span.end.date().isoformat()
    filename = f"{name}-{first}-{last}.csv"
    return Response(
        csv_text(columns, rows).encode("utf-8"),
        media_type=CSV_TYPE,
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"},
    )


def _plain(columns: Sequence[str], key: str) -> Callable[[dict[str, Any]], Any]:
    def table(found: dict[str, Any]) -> tuple[Sequence[str], Iterable[Sequence[Any]]]:
        return columns, ([r[c] for c in columns] for r in found[key])

    return table


@router.get("/evaluation/units", dependencies=[Heavy, KnownParameters],
            summary="Evaluation per unit over a period, ranked (evaluators)")  # fmt: skip
async def evaluate_units(
    request: Request, caller: Evaluator, start: From = None, to: To = None, format: Format = None
) -> Response:
    """Per unit, for the work orders reported from ``from`` to ``to``: received,
    dispatched automatically (by rule, owner, escalation) and by hand, reassigned and the
    dispatch accuracy, on-time rates (resolution and response), median hours to accept
    and to close, reopen rate, overdue now, supervised, and the rank (``ranking`` says
    by what). 400 naming a parameter that cannot be read."""
    span = evaluation.period(start, to)
    found = await with_connection(request, evaluation.units, span,
                                  scope=caller.jurisdiction_code)  # fmt: skip
    answer = {**span.as_dict(), "ranking": evaluation.RANKING, "units": found,
              "count": len(found)}  # fmt: skip
    return _answer(request, format, "evaluation-units", span, answer,
                   _plain(evaluation.UNIT_COLUMNS, "units"))  # fmt: skip


@router.get("/evaluation/jurisdictions", dependencies=[Heavy, KnownParameters],
            summary="Evaluation per jurisdiction of a level over a period, ranked (evaluators)")  # fmt: skip
async def evaluate_jurisdictions(
    request: Request,
    caller: Evaluator,
    start: From = None,
    to: To = None,
    level: Level = "street",
    within: Annotated[
        str | None,
        Query(max_length=100, description="only the jurisdictions inside this one (its code)"),
    ] = None,
    format: Format = None,
) -> Response:
    """The figures of ``/evaluation/units`` per jurisdiction of ``level`` (street by
    default), for the work orders reported in each, ranked among them."""
    span = evaluation.period(start, to)
    found = await with_connection(request, evaluation.jurisdictions, span, level=level,
                                  within=within, scope=caller.jurisdiction_code)  # fmt: skip
    answer = {**span.as_dict(), "level": level, "within": within,
              "ranking": evaluation.RANKING, "jurisdictions": found, "count": len(found)}  # fmt: skip
    return _answer(request, format, f"evaluation-{level}", span, answer,
                   _plain(evaluation.JURISDICTION_COLUMNS, "jurisdictions"))  # fmt: skip


CHANGE_COLUMNS = ("count", "previous", "change", "change_pct")


def _categories_table(found: dict[str, Any]) -> tuple[Sequence[str], Iterable[Sequence[Any]]]:
    columns = ("code", "name", *CHANGE_COLUMNS, *found["buckets"])
    rows = ([c["code"], c["name"], *(c[k] for k in CHANGE_COLUMNS), *c["series"]]
            for c in found["categories"])  # fmt: skip
    return columns, rows


@router.get("/sentiment/categories", dependencies=[Heavy, KnownParameters],
            summary="Reports per category per day or week, against the period before (evaluators)")  # fmt: skip
async def sentiment_categories(
    request: Request,
    caller: Evaluator,
    start: From = None,
    to: To = None,
    interval: Annotated[str, Query(max_length=10, description="day or week")] = "day",
    format: Format = None,
) -> Response:
    """Each category's reports in the period (``count``), in the period of the same
    length before (``previous``), the change, and the counts per ``buckets`` (``series``;
    a week begins on Monday); the CSV has a column per bucket."""
    span = evaluation.period(start, to)
    found = await with_connection(
        request, sentiment.categories, span, interval=interval, scope=caller.jurisdiction_code
    )
    return _answer(request, format, f"sentiment-categories-{interval}", span, found,
                   _categories_table)  # fmt: skip


@router.get("/sentiment/words", dependencies=[Heavy, KnownParameters],
            summary="Hot words of the reports' descriptions (evaluators)")  # fmt: skip
async def sentiment_words(
    request: Request,
    caller: Evaluator,
    start: From = None,
    to: To = None,
    limit: Annotated[int, Query(ge=1, le=sentiment.MAX_WORDS), Plain] = 50,
    min_reports: Annotated[
        int,
        Query(
            ge=sentiment.MIN_REPORTS_FLOOR,
            le=1_000_000,
            description="a word fewer reports use is left out",
        ),
        Plain,
    ] = 3,
    format: Format = None,
) -> Response:
    """The words of the descriptions (Chinese word segmentation), each with the reports
    that use it now and in the period before, the most used first."""
    span = evaluation.period(start, to)
    found = await with_connection(request, sentiment.words, span, limit=limit, scope=caller.jurisdiction_code,
                                  min_reports=min_reports)  # fmt: skip
    return _answer(request, format, "sentiment-words", span, found,
                   _plain(("word", *CHANGE_COLUMNS), "words"))  # fmt: skip


@router.get("/sentiment/hotspots", dependencies=[Heavy, KnownParameters],
            summary="Reports per jurisdiction of a level, against the period before (evaluators)")  # fmt: skip
async def sentiment_hotspots(
    request: Request,
    caller: Evaluator,
    start: From = None,
    to: To = None,
    level: Level = "grid",
    limit: Annotated[int, Query(ge=1, le=sentiment.MAX_LIMIT), Plain] = 50,
    format: Format = None,
) -> Response:
    """The jurisdictions of ``level`` (the grids by default) with the most reports in the
    period, with the period before and the change, and a point inside each for the map."""
    span = evaluation.period(start, to)
    found = await with_connection(
        request, sentiment.hotspots, span, level=level, limit=limit, scope=caller.jurisdiction_code
    )
    return _answer(request, format, f"sentiment-hotspots-{level}", span, found,
                   _plain(("code", "name", *CHANGE_COLUMNS, "lon", "lat"), "hotspots"))  # fmt: skip


CLUSTER_COLUMNS = ("category_code", "category_name", "status", "reports", "previous", "lon",
                   "lat", "radius_m", "first_at", "last_at", "incident_ids")  # fmt: skip


def _clusters_table(found: dict[str, Any]) -> tuple[Sequence[str], Iterable[Sequence[Any]]]:
    rows = ([c["category"]["code"], c["category"]["name"],
             *(c[k] for k in CLUSTER_COLUMNS[2:])] for c in found["clusters"])  # fmt: skip
    return CLUSTER_COLUMNS, rows


@router.get("/sentiment/clusters", dependencies=[Heavy, KnownParameters],
            summary="Emerging clusters of reports: new or grown (evaluators)")  # fmt: skip
async def sentiment_clusters(
    request: Request,
    caller: Evaluator,
    start: Annotated[
        str | None, Query(alias="from", max_length=64, description="default: 7 days before to")
    ] = None,
    to: To = None,
    eps_m: Annotated[
        float,
        Query(
            ge=sentiment.EPS_M[0],
            le=sentiment.EPS_M[1],
            description="DBSCAN's eps: metres between neighbours",
        ),
        Plain,
    ] = 150.0,
    min_reports: Annotated[
        int, Query(ge=3, le=10_000, description="DBSCAN's minpoints"), Plain
    ] = 5,
    format: Format = None,
) -> Response:
    """Clusters of reports of one category (DBSCAN: each within ``eps_m`` of another,
    ``min_reports`` at least) in the period, the last 7 days by default, that are new or
    grew against the period before it."""
    span = sentiment.default_cluster_period(start, to)
    found = await with_connection(request, sentiment.clusters, span, eps_m=eps_m, scope=caller.jurisdiction_code,
                                  min_reports=min_reports)  # fmt: skip
    return _answer(request, format, "sentiment-clusters", span, found, _clusters_table)
