"""Import a provider's features into a layer: map fields, parse values, convert the CRS,
repair or reject geometries, and upsert by source id in one transaction.

Nothing is dropped silently: a feature that cannot be used is reported with its source
id and the reason, a value that cannot be read is kept in the feature's properties and
noted, and fields the schema has no column for are kept as properties.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg import sql

from layers import coverage
from layers.crs import SourceCRS, implausible, resolve_crs, to_storage
from layers.kinds import (
    DEFAULT_STOREY_HEIGHT_M,
    KINDS,
    STOREY_HEIGHT_M,
    LayerKind,
)
from layers.readers import FeatureFrame, read_features
from layers.terrain import sample_elevations, terrain_loaded
from layers.values import is_blank
from twin import catalogue
from twin.bulk import copy_table
from twin.errors import InvalidInput, NotFound
from twin.schema import SRID

Progress = Callable[[str, int, int], None]
_MULTI_OF = {3: 6}  # Polygon -> MultiPolygon; the tables hold polygons as multi


def storage_ewkb(wkb: bytes, srid: int) -> str | None:
    """Hex EWKB with ``srid`` for a 2D little-endian WKB, polygons wrapped as multi; or None."""
    if not wkb or wkb[0] != 1:
        return None  # big-endian: leave it to shapely
    geometry_type = int.from_bytes(wkb[1:5], "little")
    if geometry_type not in (1, 2, 3, 6):
        return None
    srid_hex = srid.to_bytes(4, "little").hex()
    if geometry_type in _MULTI_OF:
        multi = (_MULTI_OF[geometry_type] | 0x20000000).to_bytes(4, "little").hex()
        return f"01{multi}{srid_hex}01000000{wkb.hex()}"
    flagged = (geometry_type | 0x20000000).to_bytes(4, "little").hex()
    return f"01{flagged}{srid_hex}{wkb[5:].hex()}"


SIMPLE_TYPES = {"polygon": (3, 6), "line": (1,), "point": (0,)}  # shapely type ids
ELEVATED = {"buildings", "pipe_nodes", "sensors"}  # layers that take elevations from terrain
LAYER_WORDS = {
    "buildings": "a building footprint",
    "public_spaces": "a public space",
    "pipes": "a pipe",
    "pipe_nodes": "a pipe node",
    "sensors": "a sensor",
    "jurisdictions": "a jurisdiction",
    "units": "a unit",
}


@dataclass
class ImportOptions:
    """What the person importing says about the file."""

    dataset: str | None = None  # re-imports of one source use the same dataset name
    crs: str | None = None  # overrides (or supplies) the file's CRS
    layer: str | None = None  # the layer inside a multi-layer file
    mapping: dict[str, str] = field(default_factory=dict)  # schema field -> source field
    values: dict[str, str] = field(default_factory=dict)  # schema field -> value for all
    defaults: dict[str, str] = field(default_factory=dict)  # schema field -> value where missing
    provider: str | None = None
    owner_unit: str | None = None
    licence: str | None = None
    update_cadence: str | None = None


@dataclass
class Rejection:
    """A feature that was not imported, and why."""

    source_id: str
    reason: str


@dataclass
class ImportReport:
    """What an import did: the summary a person reads at the end."""

    layer: str
    dataset: str
    source: str
    source_crs: str | None = None
    read: int = 0
    inserted: int = 0
    updated: int = 0
    repaired: int = 0
    estimated_heights: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    coverage: dict[str, Any] | None = None
    related: list[ImportReport] = field(default_factory=list)  # e.g. the nodes of a network

    def summary(self) -> str:
        """One line per layer: read, inserted, updated, repaired, rejected."""
        return "\n".join([self._line(), *(r._line() for r in self.related)])

    def _line(self) -> str:
        return (
            f"{self.layer} from {self.source}: read {self.read:,}, inserted {self.inserted:,}, "
            f"updated {self.updated:,}, repaired {self.repaired:,}, "
            f"rejected {len(self.rejected):,}"
            + (f", heights estimated {self.estimated_heights:,}" if self.estimated_heights else "")
            + (f" (CRS {self.source_crs})" if self.source_crs else "")
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON answers."""
        return asdict(self)


def import_file(
    conn: psycopg.Connection,
    layer: str,
    path: Path | str,
    options: ImportOptions | None = None,
    *,
    progress: Progress | None = None,
) -> ImportReport:
    """Read ``path`` and import it into ``layer`` (a built-in kind or a scene)."""
    options = options or ImportOptions()
    kind = layer_kind(conn, layer)
    dataset = options.dataset or Path(path).stem
    if Path(path).suffix.lower() == ".inp":
        from layers.epanet import import_epanet

        if kind.name not in ("pipes", "pipe_nodes"):
            raise InvalidInput(
                f"an EPANET file holds a water network: import it into pipes, not {layer}"
            )
        return import_epanet(conn, Path(path), options, dataset=dataset, progress=progress)
    if progress is not None:
        progress(f"read {Path(path).name}", 0, 1)
    frame = read_features(path, layer=options.layer)
    if progress is not None:
        progress(f"read {Path(path).name}", 1, 1)
    return import_frame(conn, kind, frame, options, dataset=dataset, progress=progress)


def layer_kind(conn: psycopg.Connection, layer: str) -> LayerKind:
    """The import target called ``layer``: a built-in kind or a registered scene."""
    if layer in KINDS:
        return KINDS[layer]
    from layers.scenes import scene_kind  # scenes are rows of the catalogue

    try:
        return scene_kind(conn, layer)
    except NotFound:
        names = ", ".join(KINDS)
        raise NotFound(
            f"no layer {layer!r} to import into (built-in: {names}; or a scene)"
        ) from None


def import_frame(
    conn: psycopg.Connection,
    kind: LayerKind,
    frame: FeatureFrame,
    options: ImportOptions,
    *,
    dataset: str,
    progress: Progress | None = None,
) -> ImportReport:
    """Import features already read; one transaction, so a failure changes nothing."""
    report = ImportReport(layer=kind.name, dataset=dataset, source=frame.source, read=len(frame))
    if len(frame) == 0:
        report.notes.append("the file holds no features")
        return report
    source_crs = _source_crs(frame, options)
    report.source_crs = source_crs.name if source_crs else None
    reasons = np.full(len(frame), None, dtype=object)

    geoms, repaired_why = _prepare_geometries(kind, frame, source_crs, reasons)
    columns = _map_fields(kind, frame, options, reasons, report)
    keys = _source_keys(kind, frame, columns, reasons, report.notes)
    if "floors" in columns and "height_m" in columns:
        report.estimated_heights = _estimate_heights(columns, reasons)
    for i, why in enumerate(repaired_why):
        if why is not None and reasons[i] is None:
            columns["properties"][i]["_geometry_repaired"] = why

    with conn.transaction():
        _check_references(conn, kind, columns, reasons)
        keep = np.array([r is None for r in reasons])
        report.rejected = [Rejection(str(keys[i]), str(reasons[i])) for i in np.flatnonzero(~keep)]
        report.repaired = int(sum(1 for i, w in enumerate(repaired_why) if w and keep[i]))
        if keep.any():
            rows = {name: _take(values, keep) for name, values in columns.items()}
            rows["geom"] = geoms[keep]
            rows["dataset"] = [dataset] * int(keep.sum())  # every layer table has one
            report.inserted, report.updated = _upsert(conn, kind, rows, progress)
        _update_catalogue(conn, kind, options, report)
        if kind.name in ELEVATED and keep.any() and terrain_loaded(conn):
            filled = sample_elevations(conn).get(kind.name, 0)
            report.notes.append(f"{filled:,} elevations taken from the terrain")
        if kind.name == "jurisdictions" and keep.any():
            codes = [str(c) for c in _take(columns["code"], keep)]
            report.coverage = coverage.check(conn, codes)
    return report


# -- CRS and geometry --------------------------------------------------------------------------


def _source_crs(frame: FeatureFrame, options: ImportOptions) -> SourceCRS | None:
    if options.crs:
        return resolve_crs(options.crs)
    if frame.crs:
        return resolve_crs(frame.crs)
    present = ~shapely.is_missing(frame.geoms)
    if not present.any():
        return None
    # No CRS stated: only plain longitude/latitude is a safe guess, and only if it fits.
    wgs84 = resolve_crs("EPSG:4326")
    if all(r is None for r in implausible(frame.geoms, wgs84)):
        return wgs84
    x, y = shapely.get_coordinates(frame.geoms[present][:1])[0]
    raise InvalidInput(
        f"{frame.source} does not say its CRS and its coordinates ({x:.6g}, {y:.6g}) are "
        "not longitude/latitude: give it with --crs (e.g. --crs EPSG:4549)"
    )


def _prepare_geometries(
    kind: LayerKind, frame: FeatureFrame, source: SourceCRS | None, reasons: np.ndarray
) -> tuple[np.ndarray, list[str | None]]:
    geoms = np.asarray(frame.geoms, dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if not kind.geometry_optional:
        _reject(reasons, missing, "no geometry (empty, missing or unreadable)")
    present = ~missing
    if source is not None and present.any():
        wrong = implausible(geoms, source)
        bad = np.array([w is not None for w in wrong]) & present
        if bad.sum() > 0.5 * present.sum():
            i = int(np.flatnonzero(bad)[0])
            x, y = shapely.get_coordinates(geoms[i : i + 1])[0]
            hint = (
                " (these look like metres: is the file projected? give --crs)"
                if source.is_geographic and max(abs(x), abs(y)) > 1000
                else " (give the right CRS with --crs)"
            )
            raise InvalidInput(
                f"coordinates of {frame.source} cannot be in {source.name}: "
                f"e.g. ({x:.6g}, {y:.6g}) is {wrong[i]}{hint}"
            )
        for i in np.flatnonzero(bad):
            _reject_one(reasons, i, f"coordinates {wrong[i]}")
        present &= ~bad
    out = np.full(len(geoms), None, dtype=object)
    if present.any():
        flat = geoms[present]
        if shapely.has_z(flat).any():
            flat = shapely.force_2d(flat)
        out[present] = to_storage(flat, source, SRID) if source is not None else flat
    repaired: list[str | None] = [None] * len(geoms)
    # The common case, vectorised: already the right type, valid, not degenerate.
    types = shapely.get_type_id(out)
    simple = present & np.isin(types, SIMPLE_TYPES[kind.family])
    simple[simple] &= shapely.is_valid(out[simple])
    if kind.family == "polygon":
        degenerate = simple & (shapely.area(out) == 0)
    elif kind.family == "line":
        degenerate = simple & (shapely.length(out) == 0)
    else:
        degenerate = np.zeros(len(out), dtype=bool)
    for i in np.flatnonzero(degenerate):
        what = "polygon (zero area)" if kind.family == "polygon" else f"{kind.family} (zero length)"
        _reject_one(reasons, i, f"degenerate {what}")
        out[i] = None
    simple &= ~degenerate
    passed = np.zeros(len(out), dtype=bool)
    if frame.wkb is not None and source is not None and source.is_storage(SRID):
        # Unchanged geometries go to COPY as the file's own WKB with the SRID written in:
        # no shapely round trip, which is most of an import's time at a million features.
        for i in np.flatnonzero(simple):
            ewkb = storage_ewkb(frame.wkb[i], SRID)
            if ewkb is not None:
                out[i] = ewkb
                passed[i] = True
    if kind.family == "polygon":
        singles = simple & ~passed & (types == 3)  # Polygon -> MultiPolygon, one part each
        out[singles] = shapely.multipolygons(out[singles], indices=np.arange(singles.sum()))
    # The rest one by one: repair, take parts of the right type, or reject with a reason.
    for i in np.flatnonzero(present & ~simple):
        geom, why, repair = _fit_family(kind, out[i])
        if why is not None:
            _reject_one(reasons, i, why)
            out[i] = None
        else:
            out[i] = geom
            repaired[i] = repair
    return out, repaired


def _fit_family(kind: LayerKind, geom: Any) -> tuple[Any, str | None, str | None]:
    """The geometry as the layer stores it, a reason to reject it, and what was repaired."""
    repair = None
    if kind.family != "point" and not shapely.is_valid(geom):
        repair = shapely.is_valid_reason(geom)
        geom = shapely.make_valid(geom)
    what = LAYER_WORDS.get(kind.name, f"a feature of {kind.name}")
    if kind.family == "polygon":
        parts = _parts(geom, ("Polygon",))
        if not parts:
            return None, f"a {geom.geom_type} cannot be {what} (it needs a polygon)", None
        result = shapely.MultiPolygon(parts)
        if result.area == 0:
            return None, "degenerate polygon (zero area)", None
        return result, None, repair
    if kind.family == "line":
        parts = _parts(geom, ("LineString",))
        if not parts:
            return None, f"a {geom.geom_type} cannot be {what} (it needs a line)", None
        merged = shapely.line_merge(shapely.MultiLineString(parts)) if len(parts) > 1 else parts[0]
        if merged.geom_type != "LineString":
            return None, f"{len(parts)} separate lines cannot be one {kind.name[:-1]}", None
        if merged.length == 0:
            return None, "degenerate line (zero length)", None
        return merged, None, repair
    parts = _parts(geom, ("Point",))
    if len(parts) != 1:
        return None, f"a {geom.geom_type} cannot be {what} (it needs one point)", None
    return parts[0], None, None


def _parts(geom: Any, types: tuple[str, ...]) -> list[Any]:
    if geom.geom_type in types:
        return [geom]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _parts(g, types) if not p.is_empty]
    return []


# -- fields ----------------------------------------------------------------------------------


def _normal(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def _map_fields(
    kind: LayerKind,
    frame: FeatureFrame,
    options: ImportOptions,
    reasons: np.ndarray,
    report: ImportReport,
) -> dict[str, list[Any]]:
    n = len(frame)
    known = {f.name for f in kind.fields}
    for target in (*options.mapping, *options.values, *options.defaults):
        if target not in known:
            raise InvalidInput(
                f"{kind.name} has no field {target!r} (its fields: {', '.join(sorted(known))})"
            )
    by_normal = {_normal(name): name for name in frame.fields}
    used: set[str] = set()
    sources: dict[str, list[str]] = {}
    for f in kind.fields:
        if f.name in options.mapping:
            column = options.mapping[f.name]
            if column not in frame.fields:
                raise InvalidInput(
                    f"the mapping {f.name}={column} names a field {frame.source} does not have "
                    f"(it has: {', '.join(frame.fields) or 'no fields'})"
                )
            sources[f.name] = [column]
            used.add(column)
    for f in kind.fields:
        if f.name in sources or f.name in options.values:
            continue
        found = [by_normal[_normal(s)] for s in f.synonyms if _normal(s) in by_normal]
        found = [c for c in dict.fromkeys(found) if c not in used]
        if found:
            sources[f.name] = found
            used.update(found)

    columns: dict[str, list[Any]] = {}
    kept_columns = {
        name: [_json_safe(v) for v in frame.fields[name]]
        for name in frame.fields
        if name not in used
    }
    # A blank says nothing: each feature keeps only the values it has.
    properties: list[dict[str, Any]] = (
        [
            {name: v for name, v in zip(kept_columns, row, strict=True) if v is not None}
            for row in zip(*kept_columns.values(), strict=True)
        ]
        if kept_columns
        else [{} for _ in range(n)]
    )
    unreadable: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for f in kind.fields:
        if f.name in options.values:
            try:
                fixed = f.parse(options.values[f.name])
            except ValueError as exc:
                raise InvalidInput(f"--set {f.name}={options.values[f.name]}: {exc}") from exc
            columns[f.name] = [fixed] * n
            continue
        found = np.full(n, None, dtype=object)
        for column in sources.get(f.name, []):
            raw = frame.fields[column]
            parsed, unread, reason = _parse_column(f.parse, raw)
            empty = _is_none(found)
            bad = unread & empty
            if bad.any():
                what = f"{column} -> {f.name}"
                unreadable[what] += int(bad.sum())
                examples.setdefault(what, reason or "")
                # Keep what we could not read, beside (never over) the field itself.
                kept = f"{column}_raw" if column in known else column
                for i in np.flatnonzero(bad):
                    properties[i][kept] = _json_safe(raw[i])
            take = empty & ~unread & ~_is_none(parsed)
            found[take] = parsed[take]
        values: list[Any] = found.tolist()
        if f.name in options.defaults:
            try:
                fallback = f.parse(options.defaults[f.name])
            except ValueError as exc:
                raise InvalidInput(f"--default {f.name}={options.defaults[f.name]}: {exc}") from exc
            values = [fallback if v is None else v for v in values]
        if f.name in kind.defaults:
            values = [kind.defaults[f.name] if v is None else v for v in values]
        if f.required:
            hint = (
                f"map a field with --map {f.name}=FIELD, or fill gaps with --default {f.name}=VALUE"
            )
            for i in range(n):
                if values[i] is None:
                    _reject_one(reasons, i, f"no {f.name} ({hint})")
        columns[f.name] = values
    for what, count in unreadable.items():
        report.notes.append(
            f"{count:,} values of {what} not understood (kept in properties), e.g. {examples[what]}"
        )
    if kind.fields_in_properties:
        for f in kind.fields:
            if f.name == "source_id":
                continue
            for i, value in enumerate(columns.pop(f.name)):
                if value is not None:
                    properties[i][f.name] = value
    mapped = ", ".join(f"{t}<-{'/'.join(s)}" for t, s in sources.items())
    report.notes.append(f"fields mapped: {mapped or 'none'}")
    columns["properties"] = properties  # type: ignore[assignment]
    return columns


def _parse_column(
    parse: Callable[[Any], Any], raw: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Each value parsed (None when blank), where it could not be read, and the first reason.

    Provider data repeats itself ("6", "apartments", "DN300"): pandas' factorize finds the
    distinct values in C, each is parsed once, and the results are spread back.
    """
    try:
        codes, distinct = pd.factorize(np.asarray(raw, dtype=object), use_na_sentinel=True)
    except TypeError:  # unhashable values (JSON lists): parse one by one
        codes, distinct = np.arange(len(raw)), np.asarray(raw, dtype=object)
    parsed = np.empty(len(distinct) + 1, dtype=object)  # the extra last slot: blank (-1)
    failed = np.zeros(len(distinct) + 1, dtype=bool)
    reason = None
    for i, value in enumerate(distinct):
        if is_blank(value):
            continue
        try:
            parsed[i] = parse(value)
        except ValueError as exc:
            failed[i] = True
            reason = reason or str(exc)
    return parsed[codes], failed[codes], reason


def _is_none(values: np.ndarray) -> np.ndarray:
    """Where an object array holds None, in C rather than a Python loop."""
    return np.equal(values, None)


def _source_keys(
    kind: LayerKind,
    frame: FeatureFrame,
    columns: dict[str, list[Any]],
    reasons: np.ndarray,
    notes: list[str],
) -> list[Any]:
    """The key each feature is matched on when re-imported; duplicates are rejected."""
    key_field = kind.key[-1]
    if key_field == "source_id":
        ids = columns.get("source_id") or [None] * len(frame)
        if all(i is None for i in ids):
            notes.append(
                "no source id field found: features are matched by their row in the file, so a "
                "re-import of a reordered file updates the wrong features; give --map source_id=FIELD"
            )
        keys = [
            str(ids[i]) if ids[i] is not None else str(frame.fids[i]) for i in range(len(frame))
        ]
        columns["source_id"] = keys
    else:
        keys = [
            str(k) if k is not None else f"#{frame.fids[i]}"
            for i, k in enumerate(columns[key_field])
        ]
        if "source_id" not in columns:
            columns["source_id"] = [str(k) for k in columns[key_field]]
    eligible = np.array([r is None for r in reasons], dtype=bool)
    if not pd.Series(keys)[eligible].duplicated().any():
        return keys  # the usual case, found in C
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if reasons[i] is not None:
            continue
        if key in first:
            _reject_one(
                reasons, i, f"duplicate {key_field} {key!r} (first at feature {first[key] + 1})"
            )
        else:
            first[key] = i
    return keys


def _estimate_heights(columns: dict[str, list[Any]], reasons: np.ndarray) -> int:
    heights, floors = columns["height_m"], columns["floors"]
    uses = columns.get("use") or [None] * len(heights)
    estimated = [False] * len(heights)
    count = 0
    for i, height in enumerate(heights):
        if height is None and floors[i] and reasons[i] is None:
            per_floor = STOREY_HEIGHT_M.get(uses[i] or "", DEFAULT_STOREY_HEIGHT_M)
            heights[i] = round(floors[i] * per_floor, 1)
            estimated[i] = True
            count += 1
    columns["height_estimated"] = estimated
    return count


def _check_references(
    conn: psycopg.Connection, kind: LayerKind, columns: dict[str, list[Any]], reasons: np.ndarray
) -> None:
    """Parents and jurisdictions named by features must exist, in the file or the data base."""
    if kind.name == "jurisdictions":
        wanted, own = columns["parent_code"], set(columns["code"])
        message = "parent jurisdiction {!r} is neither in the file nor in the data base"
    elif kind.name == "units":
        wanted, own = columns["jurisdiction_code"], set()
        message = "jurisdiction {!r} is not in the data base (import jurisdictions first)"
    else:
        return
    asked = sorted({str(c) for c in wanted if c is not None} - own)
    existing = {
        r[0] for r in conn.execute("SELECT code FROM jurisdictions WHERE code = ANY(%s)", (asked,))
    }
    for i, code in enumerate(wanted):
        if code is not None and code not in own and code not in existing:
            _reject_one(reasons, i, message.format(code))


# -- writing -----------------------------------------------------------------------------------


def _dataset_present(conn: psycopg.Connection, kind: LayerKind, rows: dict[str, Any]) -> bool:
    dataset = rows["dataset"][0] if len(rows["dataset"]) else ""
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE dataset = %s)").format(
        sql.Identifier(kind.table)
    )
    return bool(conn.execute(query, (dataset,)).fetchone()[0])  # type: ignore[index]


def _upsert(
    conn: psycopg.Connection,
    kind: LayerKind,
    rows: dict[str, Any],
    progress: Progress | None,
) -> tuple[int, int]:
    """COPY into a staging table, then insert or update by the kind's key; (inserted, updated)."""
    table_columns = catalogue.table_columns(conn, kind.table)
    columns = [c for c in rows if c in table_columns]
    table = sql.Identifier(kind.table)
    names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    total = len(rows["geom"])
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(f"import {kind.name}", done, total)

    if kind.key == ("dataset", "source_id") and not _dataset_present(conn, kind, rows):
        # A dataset seen for the first time: nothing to match, so COPY straight in (the
        # file's own duplicates were rejected already). Half the work of staging.
        copy_table(conn, kind.table, {c: rows[c] for c in columns}, progress=advance)
        return total, 0
    # Only the loaded columns, without the table's constraints: checked on the way in.
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE import_stage ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA"
        ).format(names, table)
    )
    copy_table(conn, "import_stage", {c: rows[c] for c in columns}, progress=advance)
    updates = [c for c in columns if c not in kind.key]
    if "updated_at" in table_columns:
        updates_sql = sql.SQL(", ").join(
            [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates]
            + [sql.SQL("updated_at = now()")]
        )
    else:
        updates_sql = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates
        )
    counts = conn.execute(
        sql.SQL(
            """
            WITH written AS (
                INSERT INTO {table} ({names}) SELECT {names} FROM import_stage
                ON CONFLICT ({key}) DO UPDATE SET {updates}
                RETURNING (xmax = 0) AS inserted
            )
            SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
            FROM written
            """
        ).format(
            table=table,
            names=names,
            key=sql.SQL(", ").join(sql.Identifier(k) for k in kind.key),
            updates=updates_sql,
        )
    ).fetchone()
    conn.execute("DROP TABLE import_stage")
    return int(counts[0]), int(counts[1])  # type: ignore[index]


def _update_catalogue(
    conn: psycopg.Connection, kind: LayerKind, options: ImportOptions, report: ImportReport
) -> None:
    metadata = {
        name: value
        for name, value in (
            ("provider", options.provider),
            ("owner_unit", options.owner_unit),
            ("licence", options.licence),
            ("update_cadence", options.update_cadence),
            ("source_crs", report.source_crs),
        )
        if value
    }
    if metadata:
        catalogue.update_layer_metadata(conn, kind.name, **metadata)
    catalogue.refresh_layer_statistics(conn, kind.name)


# -- small helpers -----------------------------------------------------------------------------


def _reject(reasons: np.ndarray, mask: np.ndarray, why: str) -> None:
    for i in np.flatnonzero(mask):
        _reject_one(reasons, i, why)


def _reject_one(reasons: np.ndarray, i: int, why: str) -> None:
    if reasons[i] is None:  # the first reason is the one reported
        reasons[i] = why


def _take(values: list[Any] | np.ndarray, keep: np.ndarray) -> list[Any]:
    if keep.all():
        return list(values)
    return [v for v, k in zip(values, keep, strict=True) if k]


def _json_safe(value: Any) -> Any:
    """A value JSON can hold: numpy scalars unwrapped, NaN as null, dates as ISO text."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str) and not value.strip():
        return None
    return value


def group_rejections(report: ImportReport, limit: int = 20) -> list[str]:
    """Rejections as lines for a person: each reason with its first source ids."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for r in report.rejected:
        by_reason[r.reason].append(r.source_id)
    lines = []
    for reason, ids in sorted(by_reason.items(), key=lambda item: -len(item[1]))[:limit]:
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5:,} more" if len(ids) > 5 else "")
        lines.append(f"{len(ids):,} rejected: {reason}: {shown}")
    return lines
