"""Incident categories and the responsibility list from a city's files: CSV (UTF-8 or
GB18030, as every CSV is read) or JSON (a list of objects), columns as the core names
them. Each row that cannot be used is reported with why; the others are stored, in one
transaction; a file that stores nothing is NothingStored, and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from layers.datasets import refuse_control
from layers.ingest.report import ImportReport, Rejection, check_stored, default_dataset
from layers.readers import check_path
from layers.readers.tables import CSV_SUFFIXES, read_csv
from twin.errors import InvalidInput
from twin.incidents import categories, responsibilities
from twin.incidents.rows import Stored

# What ``twin import`` takes besides layers, and the columns each file has.
TABLES: dict[str, tuple[str, ...]] = {
    "categories": categories.COLUMNS,
    "responsibilities": responsibilities.COLUMNS,
}
SUFFIXES = (*sorted(CSV_SUFFIXES), ".json")


def read_rows(path: Path, *, source: str | None = None) -> list[dict[str, Any]]:
    """The rows of a CSV or JSON file, as dicts of column -> value (None where blank)."""
    check_path(path)
    name = source or path.name
    suffix = Path(name).suffix.lower() or path.suffix.lower()
    raw = path.read_bytes()
    if suffix in CSV_SUFFIXES:
        frame = read_csv(raw, name)
        columns = list(frame.fields)
        return [{c: frame.fields[c][i] for c in columns} for i in range(len(frame.fids))]
    if suffix != ".json":
        raise InvalidInput(f"{name}: send a CSV or a JSON file ({', '.join(SUFFIXES)})")
    try:
        document = json.loads(raw)
    except RecursionError as exc:
        raise InvalidInput(f"{name} nests lists or objects too deep to read") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{name}: byte {exc.start + 1:,} is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{name} is not JSON (line {exc.lineno:,}, column {exc.colno:,}: {exc.msg})"
        ) from exc
    if not isinstance(document, list):
        raise InvalidInput(f"{name} must hold a JSON list of objects, one per row")
    return document


def _import(
    conn: psycopg.Connection,
    table: str,
    store: Callable[..., Stored],
    path: Path,
    *,
    dataset: str | None,
    source: str | None,
) -> ImportReport:
    name = source or path.name
    dataset = dataset or default_dataset(name, None)
    refuse_control("the dataset", dataset, option="dataset")
    rows = read_rows(path, source=name)
    report = ImportReport(layer=table, dataset=dataset, source=name, read=len(rows))
    columns = TABLES[table]
    ignored = sorted({str(k)[:40] for r in rows if isinstance(r, dict) for k in r} - set(columns))
    if ignored:
        report.notes.append(
            f"columns not taken (ignored): {', '.join(ignored[:10])}; {table} takes "
            + ", ".join(columns)
        )
    kept: list[dict[str, Any]] = []
    numbers: list[int] = []
    for n, row in enumerate(rows, start=1):
        if isinstance(row, dict):
            kept.append({k: v for k, v in row.items() if k in columns})
            numbers.append(n)
        else:
            report.rejected.append(Rejection(f"row {n}", "not an object of columns and values"))
    with conn.transaction():
        stored = store(conn, kept, dataset=dataset)
        report.inserted, report.updated = stored.inserted, stored.updated
        report.notes.extend(stored.notes)
        report.rejected.extend(
            Rejection(f"row {numbers[r.row - 1]} ({r.key})", r.reason) for r in stored.rejected
        )
        check_stored(report)  # nothing stored: NothingStored, and the transaction rolls back
    return report


def import_categories(
    conn: psycopg.Connection,
    path: Path,
    *,
    dataset: str | None = None,
    source: str | None = None,
) -> ImportReport:
    """Import a categories file (``code, name, parent_code, asset_layers, attach_radius_m,
    response_hours, resolve_hours, priority`` and optionally ``fusion_radius_m,
    fusion_hours``): upserted by code; the report says each row rejected and why."""
    return _import(conn, "categories", categories.store, path, dataset=dataset, source=source)


def import_responsibilities(
    conn: psycopg.Connection,
    path: Path,
    *,
    dataset: str | None = None,
    source: str | None = None,
) -> ImportReport:
    """Import a responsibility list (``category_code, jurisdiction_code, asset_owner,
    unit_code`` and optionally ``note``): upserted by category, jurisdiction and owner."""
    return _import(
        conn, "responsibilities", responsibilities.store, path, dataset=dataset, source=source
    )


IMPORTERS: dict[str, Callable[..., ImportReport]] = {
    "categories": import_categories,
    "responsibilities": import_responsibilities,
}


def importer(name: str) -> Callable[..., ImportReport] | None:
    """The import of ``categories`` or ``responsibilities``; None for a layer's name."""
    return IMPORTERS.get(name)
