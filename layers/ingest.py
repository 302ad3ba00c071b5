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
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from itertools import compress
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from psycopg import sql

from layers import coverage
from layers.datasets import forget_emptied_datasets, record_dataset, refuse_control
from layers.kinds import (
    DEFAULT_STOREY_HEIGHT_M,
    KINDS,
    STOREY_HEIGHT_M,
    LayerKind,
)
from layers.readers import (
    Column,
    FeatureFrame,
    FeatureReader,
    is_none,
    no_coordinates,
    open_features,
    read_features,
)
from layers.terrain import sample_elevations, terrain_loaded
from layers.values import BLANK_WORDS, NUL, as_given, is_blank, parse_text, refuse_nul
from twin import catalogue, changes, registry
from twin.bulk import CopyStream, arrow_offsets, copy_stream, ewkb
from twin.crs import (
    SourceCRS,
    axes,
    first_bad_coordinate,
    implausible,
    non_finite,
    off_the_globe,
    resolve_crs,
    to_storage,
)
from twin.errors import InvalidInput, NotFound
from twin.schema import SRID

Progress = Callable[[str, int, int], None]
_BLANK_WORDS = pa.array(sorted(BLANK_WORDS), pa.string())


def storage_ewkb(wkb: pa.Array, take: np.ndarray, srid: int) -> tuple[pa.Array, np.ndarray]:
    """EWKB with ``srid`` for 2D little-endian WKB, polygons wrapped as multi.

    Returns the EWKB (a binary array, null where not made) and where it was made: among
    ``take``, the points, lines, polygons and multipolygons GDAL wrote in the usual byte
    order; anything else is left to shapely. Works on whole arrays at once: each
    feature's header is put in front of the file's own bytes.
    """
    n = len(wkb)
    offsets = arrow_offsets(wkb)
    data = wkb.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1].astype(np.int64)
    usable = take & (np.diff(offsets) >= 9) & np.asarray(wkb.is_valid(), dtype=bool)
    kind = np.zeros(n, dtype=np.int64)
    at = starts[usable]
    little = raw[at] == 1
    kind[usable] = np.where(
        little,
        raw[at + 1].astype(np.int64) | raw[at + 2].astype(np.int64) << 8
        | raw[at + 3].astype(np.int64) << 16 | raw[at + 4].astype(np.int64) << 24,
        0,
    )  # fmt: skip
    made = usable & np.isin(kind, (1, 2, 3, 6))
    if not made.any():
        return pa.nulls(n, pa.binary()), made
    srid_bytes = srid.to_bytes(4, "little")
    # A polygon keeps its own WKB inside a one-part multipolygon; the others get the SRID
    # flag and the SRID written into their own header (its first 5 bytes).
    polygon_header = b"\x01" + (6 | 0x20000000).to_bytes(4, "little") + srid_bytes + b"\x01\0\0\0"
    polygons = kind == 3
    if (polygons | ~made).all():
        made_ewkb = pc.binary_join_element_wise(polygon_header, wkb, b"")
    else:
        headers = pa.array(
            [b"\x01" + (t | 0x20000000).to_bytes(4, "little") + srid_bytes for t in (1, 2, 6)]
            + [polygon_header]
        )
        header_of = np.select([kind == 1, kind == 2, kind == 6], [0, 1, 2], 3)
        body = pc.if_else(pa.array(polygons), wkb, pc.binary_slice(wkb, 5, 2**31 - 1))
        made_ewkb = pc.binary_join_element_wise(headers.take(pa.array(header_of)), body, b"")
    if made.all():
        return made_ewkb, made
    return pc.if_else(pa.array(made), made_ewkb, pa.scalar(None, pa.binary())), made


SIMPLE_TYPES = {"polygon": (3, 6), "line": (1,), "point": (0,)}  # shapely type ids
ELEVATED = {"buildings", "pipe_nodes", "sensors"}  # layers that take elevations from terrain
# Layers whose features name others in the same file (parents, jurisdictions): read whole,
# so those names can be checked against the file and the data base before writing.
WHOLE_FILE = {"jurisdictions", "units"}
BULK_LOAD_MIN = 100_000  # features: a first load this large builds indexes after its rows
NO_SOURCE_ID = (
    "no source id field found: features are matched by their row in the file, so a "
    "re-import of a reordered file updates the wrong features; give --map source_id=FIELD "
    "(mapping over HTTP)"
)
# The options a person gives, as the CLI names them (HTTP calls them by their own name).
OPTION_FLAGS = {
    "dataset": "--dataset (dataset over HTTP)", "crs": "--crs (crs over HTTP)",
    "layer": "--layer (layer over HTTP)", "source": "the file's name",
    "provider": "--provider (provider over HTTP)", "owner_unit": "--owner (owner_unit over HTTP)",
    "licence": "--licence (licence over HTTP)",
    "update_cadence": "--cadence (update_cadence over HTTP)",
}  # fmt: skip
MAX_VALUE_DEPTH = 32  # lists and objects in a value nested deeper than this are refused
MAX_REFUSALS_NAMED = 5  # features a refused request body names in its message
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
    source: str | None = None  # the file's name in messages and the inventory (an upload's)
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
    # schema field -> values emptied because they were placeholders (无, N/A, -, null …)
    emptied: dict[str, int] = field(default_factory=dict)
    coverage: dict[str, Any] | None = None
    related: list[ImportReport] = field(default_factory=list)  # e.g. the nodes of a network

    @property
    def parts(self) -> tuple[ImportReport, ...]:
        """This report and those of the layers imported with it (a network's nodes)."""
        return (self, *self.related)

    @property
    def stored(self) -> int:
        """Features inserted or updated, over every part."""
        return sum(p.inserted + p.updated for p in self.parts)

    def summary(self) -> str:
        """One line per layer: read, inserted, updated, repaired, rejected."""
        return "\n".join([self._line(), *(r._line() for r in self.related)])

    def _line(self) -> str:
        return (
            f"{self.layer} from {self.source} (dataset {self.dataset}): read {self.read:,}, "
            f"inserted {self.inserted:,}, "
            f"updated {self.updated:,}, repaired {self.repaired:,}, "
            f"rejected {len(self.rejected):,}"
            + (f", heights estimated {self.estimated_heights:,}" if self.estimated_heights else "")
            + (f" (CRS {self.source_crs})" if self.source_crs else "")
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON answers."""
        return asdict(self)


def default_dataset(file_name: str, layer: str | None) -> str:
    """The dataset a file's features belong to when none is named: the file's name, and the
    layer read from it (two layers of one GeoPackage are two datasets, not one)."""
    stem = Path(file_name).stem
    return f"{stem}:{layer}" if layer else stem


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
    check_options(options)
    kind = layer_kind(conn, layer)
    dataset = options.dataset or default_dataset(Path(path).name, options.layer)
    refuse_nul("the dataset (the file's name)", dataset)
    if Path(path).suffix.lower() == ".inp":
        from layers.epanet import import_epanet

        if kind.name not in ("pipes", "pipe_nodes"):
            raise InvalidInput(
                f"an EPANET file holds a water network: import it into pipes, not {layer}"
            )
        return import_epanet(conn, Path(path), options, dataset=dataset, progress=progress)
    if kind.name in WHOLE_FILE:
        frame = read_features(path, layer=options.layer, name=options.source)
        return import_frame(conn, kind, frame, options, dataset=dataset, progress=progress)
    with open_features(path, layer=options.layer, name=options.source) as reader:
        return import_batches(conn, kind, reader, options, dataset=dataset, progress=progress)


def import_frame(
    conn: psycopg.Connection,
    kind: LayerKind,
    frame: FeatureFrame,
    options: ImportOptions,
    *,
    dataset: str,
    progress: Progress | None = None,
    all_or_nothing: bool = False,
) -> ImportReport:
    """Import features already read; one transaction, so a failure changes nothing.

    ``all_or_nothing`` (a request body from another system): a feature that cannot be
    stored as sent (a coordinate that is no number or off the globe, a NUL character)
    refuses the whole request with InvalidInput naming it, rather than being rejected
    while the rest is stored."""
    reader = FeatureReader(frame.source, frame.crs, len(frame), iter([frame]))
    return import_batches(
        conn, kind, reader, options, dataset=dataset, progress=progress,
        all_or_nothing=all_or_nothing,
    )  # fmt: skip


def check_options(options: ImportOptions) -> None:
    """InvalidInput for an option the data base cannot store (a NUL character), or an
    inventory name holding a control character, naming it: before any feature is read."""
    names = ("dataset", "provider", "owner_unit", "licence", "update_cadence")
    for name, flag in OPTION_FLAGS.items():  # refuse_control refuses NUL too
        (refuse_control if name in names else refuse_nul)(flag, getattr(options, name))
    for name, flag in (("mapping", "--map"), ("values", "--set"), ("defaults", "--default")):
        for target, value in getattr(options, name).items():
            refuse_nul(f"{flag} ({name} over HTTP)", target)
            refuse_nul(f"{flag} {target}= ({name} over HTTP)", value)


def import_batches(
    conn: psycopg.Connection,
    kind: LayerKind,
    reader: FeatureReader,
    options: ImportOptions,
    *,
    dataset: str,
    progress: Progress | None = None,
    all_or_nothing: bool = False,
) -> ImportReport:
    """Import a file a batch at a time, all in one transaction: a failure changes nothing.

    Each batch is checked, mapped and sent down one COPY while the server stores the
    one before; features are matched by source id across the whole file. For
    ``all_or_nothing`` see ``import_frame``.
    """
    check_options(options)
    refuse_nul("the dataset", dataset)
    report = ImportReport(layer=kind.name, dataset=dataset, source=reader.source)
    batches = (frame for frame in reader if len(frame))
    first = next(batches, None)
    if first is None:
        report.notes.append("the file holds no features")
        return report
    if first.plain_table and not kind.geometry_optional:
        raise InvalidInput(no_coordinates(first))
    source_crs = _source_crs(first, options)
    report.source_crs = source_crs.name if source_crs else None
    if options.crs and source_crs is not None:
        stated = _other_stated_crs(first.crs, source_crs)
        if stated:
            report.notes.append(
                f"the file says its CRS is {stated}; {source_crs.name} was used, as given"
            )
    plan = _FieldPlan(kind, first, options)
    seen: dict[str, int] = {}  # source key -> feature number, for duplicates across batches
    step = f"import {kind.name}"
    with conn.transaction(), ThreadPoolExecutor(1, thread_name_prefix="validity") as checker:
        batch = _prepare_batch(
            kind, first, source_crs, plan, seen, report, start=0, checker=checker,
            all_or_nothing=all_or_nothing,
        )  # fmt: skip
        _check_references(conn, kind, batch.columns, batch.reasons)  # one batch: see WHOLE_FILE
        bounds = np.array([np.inf, np.inf, -np.inf, -np.inf])  # of what was written
        with _LayerWriter(conn, kind, dataset, reader.count) as writer:
            while True:
                writer.write(batch.rows(report, dataset))
                bounds = _widen(bounds, batch.geoms[batch.keep])
                if progress is not None:
                    progress(step, report.read, max(reader.count or 0, report.read))
                frame = next(batches, None)
                if frame is None:
                    if progress is not None and writer.rebuilds:
                        progress("build the spatial index", 0, 1)  # the last, quiet step
                    break
                batch = _prepare_batch(
                    kind, frame, source_crs, plan, seen, report, start=report.read,
                    checker=checker, all_or_nothing=all_or_nothing,
                )  # fmt: skip
        if progress is not None and writer.rebuilds:
            progress("build the spatial index", 1, 1)
        report.inserted, report.updated = writer.inserted, writer.updated
        report.notes.extend(plan.notes())
        report.emptied = dict(plan.emptied)
        if writer.written:  # a file that stored nothing leaves the inventory as it was
            _update_catalogue(conn, kind, options, report, bounds if writer.direct else None)
        if kind.name in ELEVATED and writer.written and terrain_loaded(conn):
            filled = sample_elevations(conn, [registry.BUILTIN[kind.name]]).get(kind.name, 0)
            report.notes.append(f"{filled:,} elevations taken from the terrain")
        if kind.name == "jurisdictions" and writer.written:
            codes = [str(c) for c in _take(batch.columns["code"], batch.keep)]
            report.coverage = coverage.check(conn, codes)
    return report


@dataclass
class _Batch:
    """One batch of features checked and mapped, with why some cannot be imported."""

    columns: dict[str, Any]
    geoms: np.ndarray  # in the storage CRS; shapely geometries or None
    from_file: pa.Array | None  # EWKB made straight from the file's WKB, where it could be
    reasons: np.ndarray  # None, or why the feature is rejected
    keys: list[str]
    repaired: dict[int, str]  # feature -> what was repaired in its geometry

    @property
    def keep(self) -> np.ndarray:
        return is_none(self.reasons)

    def rows(self, report: ImportReport, dataset: str) -> dict[str, Any]:
        """The rows to write; rejections and repairs are added to ``report``."""
        keep = self.keep
        report.rejected.extend(
            Rejection(str(self.keys[i]), str(self.reasons[i])) for i in np.flatnonzero(~keep)
        )
        report.repaired += sum(1 for i in self.repaired if keep[i])
        rows = {name: _take(values, keep) for name, values in self.columns.items()}
        rows["geom"] = _geometry_column(self.geoms, self.from_file).filter(pa.array(keep))
        rows["dataset"] = pa.array([dataset], pa.string()).take(np.zeros(int(keep.sum()), int))
        return rows


def _prepare_batch(
    kind: LayerKind,
    frame: FeatureFrame,
    source_crs: SourceCRS | None,
    plan: _FieldPlan,
    seen: dict[str, int],
    report: ImportReport,
    *,
    start: int,
    checker: ThreadPoolExecutor,
    all_or_nothing: bool = False,
) -> _Batch:
    report.read += len(frame)
    # GEOS checks validity without holding the GIL: in a thread, while fields are mapped.
    validity = checker.submit(shapely.is_valid, frame.geoms)
    unstorable = _unstorable_values(frame)
    field_reasons = np.full(len(frame), None, dtype=object)
    columns = plan.map(frame, field_reasons)
    reasons = np.full(len(frame), None, dtype=object)
    geoms, from_file, repaired = _prepare_geometries(
        kind, frame, source_crs, reasons, validity.result(), unstorable
    )
    if all_or_nothing and not is_none(unstorable).all():
        _refuse_whole(frame, unstorable, start)
    unset = is_none(reasons)  # a geometry's reason comes first: it is checked first
    reasons[unset] = unstorable[unset]
    unset = is_none(reasons)
    reasons[unset] = field_reasons[unset]
    keys = _source_keys(kind, frame, columns, reasons, report.notes, seen, start)
    if "floors" in columns and "height_m" in columns:
        report.estimated_heights += _estimate_heights(columns, reasons)
    for i, why in repaired.items():
        if reasons[i] is None:
            columns["properties"][i]["_geometry_repaired"] = why
    return _Batch(columns, geoms, from_file, reasons, keys, repaired)


def _unstorable_values(frame: FeatureFrame) -> np.ndarray:
    """For each feature, why one of its values can never be stored (None if all can): a
    NUL character, which PostgreSQL's text and jsonb refuse, in a value, a field's name or
    the feature's id; lists and objects nested deeper than MAX_VALUE_DEPTH."""
    reasons = np.full(len(frame), None, dtype=object)
    for name, column in frame.fields.items():
        if NUL in name:
            given = ~is_none(np.asarray(_python_values(column), dtype=object))
            why = f"field name {name!r} holds a NUL character (\\0), which cannot be stored"
            _reject(reasons, given, why)
            continue
        for i, why in _unstorable_in(column):
            _reject_one(reasons, i, f"{name}: {why}")
    for i, (given_id, properties) in (frame.written_nul or {}).items():
        # Values GDAL cut at a NUL, as the file writes them (see readers.nul_features).
        for name, value in properties.items():
            if NUL in name:
                why = f"field name {name!r} holds a NUL character (\\0), which cannot be stored"
            else:
                why = _unstorable(value, 0)
                why = why and f"{name}: {why}"
            if why:
                _reject_one(reasons, i, why)
        if isinstance(given_id, str) and NUL in given_id:
            _reject_one(reasons, i, "its id holds a NUL character (\\0), which cannot be stored")
    fids = frame.fids
    if fids.dtype == object and NUL in "".join(f for f in fids if isinstance(f, str)):
        for i, fid in enumerate(fids):
            if isinstance(fid, str) and NUL in fid:
                _reject_one(
                    reasons, i, "its id holds a NUL character (\\0), which cannot be stored"
                )
    return reasons


def _unstorable_in(column: Column) -> list[tuple[int, str]]:
    """(feature, why) for each value of a column that cannot be stored."""
    if isinstance(column, pa.Array):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            found = pc.fill_null(pc.match_substring(column, NUL), False)
            at = np.flatnonzero(np.asarray(found, dtype=bool))
            return [(int(i), _NUL_VALUE) for i in at]
        if not (pa.types.is_nested(column.type) or pa.types.is_binary(column.type)):
            return []  # numbers, booleans, dates: nothing to refuse
        column = np.asarray(column.to_pylist(), dtype=object)
    texts = [v for v in column if isinstance(v, str)]
    nested = any(isinstance(v, dict | list | bytes) for v in column)
    if not nested and NUL not in "".join(texts):  # the usual case, found in C
        return []
    found = []
    for i, value in enumerate(column):
        why = _unstorable(value, 0)
        if why is not None:
            found.append((i, why))
    return found


_NUL_VALUE = "its value holds a NUL character (\\0), which cannot be stored"


def _unstorable(value: Any, depth: int) -> str | None:
    if isinstance(value, str):
        return _NUL_VALUE if NUL in value else None
    if isinstance(value, bytes):
        return _NUL_VALUE if b"\0" in value else None
    if isinstance(value, dict | list):
        if depth >= MAX_VALUE_DEPTH:
            return f"its value nests lists or objects more than {MAX_VALUE_DEPTH} deep"
        if isinstance(value, dict):
            for key in value:
                if NUL in str(key):
                    return "a key in its value holds a NUL character (\\0), which cannot be stored"
        for inner in value.values() if isinstance(value, dict) else value:
            why = _unstorable(inner, depth + 1)
            if why is not None:
                return why
    return None


def _refuse_whole(frame: FeatureFrame, unstorable: np.ndarray, start: int) -> None:
    """InvalidInput naming the features of a request body that cannot be stored."""
    bad = np.flatnonzero(~is_none(unstorable))
    named = [
        f"{frame.labels[i] if frame.labels else f'feature {start + i + 1} ({frame.fids[i]})'}: "
        f"{unstorable[i]}"
        for i in bad[:MAX_REFUSALS_NAMED]
    ]
    more = f"; and {len(bad) - MAX_REFUSALS_NAMED:,} more" if len(bad) > MAX_REFUSALS_NAMED else ""
    raise InvalidInput(
        f"{frame.source}: nothing was stored: {len(bad):,} of {len(frame):,} features cannot be"
        f" stored as sent: {'; '.join(named)}{more}"
    )


def _widen(bounds: np.ndarray, geoms: np.ndarray) -> np.ndarray:
    """``bounds`` (xmin, ymin, xmax, ymax) grown to take in ``geoms``."""
    if not len(geoms):
        return bounds
    box = shapely.total_bounds(geoms)
    return np.concatenate([np.fmin(bounds[:2], box[:2]), np.fmax(bounds[2:], box[2:])])


def _geometry_column(geoms: np.ndarray, from_file: pa.Array | None) -> pa.Array:
    """EWKB for every feature: made from the file's WKB, or by shapely for the rest."""
    if from_file is None:
        made = np.zeros(len(geoms), dtype=bool)
        from_file = pa.nulls(len(geoms), pa.binary())
    else:
        made = np.asarray(from_file.is_valid(), dtype=bool)
    rest = ~made & ~is_none(geoms)
    if not rest.any():
        return from_file
    encoded = pa.array(ewkb(geoms[rest]), pa.binary())
    return pc.replace_with_mask(from_file, pa.array(rest), encoded)


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


# -- CRS and geometry --------------------------------------------------------------------------


def _source_crs(frame: FeatureFrame, options: ImportOptions) -> SourceCRS | None:
    if options.crs:
        return resolve_crs(options.crs)
    if frame.crs:
        return resolve_crs(frame.crs)
    present = ~shapely.is_missing(frame.geoms) & ~shapely.is_empty(frame.geoms)
    if not present.any():
        return None
    # No CRS stated: only plain longitude/latitude is a safe guess, and only if most
    # features fit it (the few that do not are rejected one by one, with the reason).
    # Each feature is judged by its first coordinate: a wrong CRS moves all of them, a bad
    # vertex only itself (one feature with one vertex at latitude 95 is not a CRS question).
    wgs84 = resolve_crs("EPSG:4326")
    firsts = _first_points(frame.geoms)
    wrong = ~is_none(implausible(firsts, wgs84)) & present
    if wrong.sum() <= 0.5 * present.sum():
        return wgs84
    i = int(np.flatnonzero(wrong)[0])
    x, y = shapely.get_coordinates(firsts[i : i + 1])[0]
    raise InvalidInput(
        f"{frame.source} does not say its CRS and its coordinates (e.g. {_xy(x, y)}) are "
        "not longitude/latitude: give it with --crs (crs over HTTP), e.g. --crs EPSG:4549"
    )


def _first_points(geoms: np.ndarray) -> np.ndarray:
    """Each geometry's first coordinate as a point (None where it has none)."""
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    which, starts = np.unique(index, return_index=True)
    firsts = np.full(len(geoms), None, dtype=object)
    firsts[which] = shapely.points(coords[starts])
    return firsts


def _xy(x: float, y: float) -> str:
    """A coordinate pair as a person reads it: no exponents, no trailing noise."""
    return f"{x:.10g}, {y:.10g}" if max(abs(x), abs(y)) < 1e10 else f"{x:.6g}, {y:.6g}"


def _other_stated_crs(stated: str | None, used: SourceCRS) -> str | None:
    """The CRS the file states, when it is not the one used (given over it)."""
    if not stated:
        return None
    try:
        own = resolve_crs(stated)
    except InvalidInput:
        return None
    if own.crs is not None and used.crs is not None:
        same = own.crs.equals(used.crs, ignore_axis_order=True)
    else:
        same = own.name == used.name
    return None if same else own.name


def _prepare_geometries(
    kind: LayerKind,
    frame: FeatureFrame,
    source: SourceCRS | None,
    reasons: np.ndarray,
    valid_as_read: np.ndarray | None = None,
    unstorable: np.ndarray | None = None,
) -> tuple[np.ndarray, pa.Array | None, dict[int, str]]:
    """Geometries in the storage CRS and of the layer's type, EWKB straight from the
    file where nothing needed changing, and what was repaired; rejections go to ``reasons``,
    and those of coordinates the data base must never hold (no number, off the globe)
    to ``unstorable`` as well, when given: a request body is refused for them.
    """
    geoms = np.asarray(frame.geoms, dtype=object)
    if unstorable is None:
        unstorable = np.full(len(geoms), None, dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if frame.geometry_reasons is not None:  # coordinates the reader could not take
        unread = ~is_none(frame.geometry_reasons)
        for i in np.flatnonzero(unread):
            _reject_one(unstorable, i, frame.geometry_reasons[i])
            _reject_one(reasons, i, frame.geometry_reasons[i])
    if not kind.geometry_optional:
        _reject(reasons, missing, "no geometry (empty, missing or unreadable)")
    present = ~missing
    if present.any():
        # NaN or infinite coordinates: GEOS finds them invalid, so only those are looked at.
        valid = valid_as_read if valid_as_read is not None else shapely.is_valid(geoms)
        bad_numbers = non_finite(geoms, source, ~present | valid)
        for i in np.flatnonzero(~is_none(bad_numbers)):
            _reject_one(unstorable, i, bad_numbers[i])
            _reject_one(reasons, i, bad_numbers[i])
        present &= is_none(bad_numbers)
    if source is not None and present.any():
        wrong = implausible(geoms, source)
        bad = ~is_none(wrong) & present
        # The file is in another CRS when most features' first coordinates are off; a
        # feature with one bad vertex is rejected alone (see _source_crs).
        firsts = implausible(_first_points(geoms), source)
        if (~is_none(firsts) & present).sum() > 0.5 * present.sum():
            i = int(np.flatnonzero(~is_none(firsts) & present)[0])
            x, y = shapely.get_coordinates(geoms[i : i + 1])[0]
            stated = _other_stated_crs(frame.crs, source)
            if stated:
                hint = f" (the file itself says {stated}: leave out --crs, or crs over HTTP)"
            elif source.is_geographic and max(abs(x), abs(y)) > 1000:
                hint = (
                    " (these look like metres: is the file projected? give --crs, or crs over HTTP)"
                )
            elif source.is_geographic and abs(x) <= 90 and abs(y) <= 180:
                hint = " (are longitude and latitude swapped? x is longitude, y latitude)"
            else:
                hint = " (give the right CRS with --crs, or crs over HTTP)"
            raise InvalidInput(
                f"coordinates of {frame.source} cannot be in {source.name}: "
                f"e.g. ({_xy(x, y)}): {wrong[i]}{hint}"
            )
        names = axes(source)
        for i in np.flatnonzero(bad):
            if source.is_geographic:
                where = first_bad_coordinate(geoms[i], names)
            else:  # the first vertex outside the CRS's area, once in longitude/latitude
                one = geoms[i : i + 1]
                where = off_the_globe(to_storage(shapely.force_2d(one), source, SRID), source, one)[
                    0
                ]
            why = f"coordinates cannot be in {source.name}: {where or wrong[i]}"
            _reject_one(unstorable, i, why)
            _reject_one(reasons, i, why)
        present &= ~bad
    out = np.full(len(geoms), None, dtype=object)
    unchanged = source is None or source.is_storage(SRID)
    if present.any():
        flat = geoms[present]
        if shapely.has_z(flat).any():
            flat = shapely.force_2d(flat)
            unchanged = False
        out[present] = to_storage(flat, source, SRID) if source is not None else flat
    if source is not None and not unchanged and present.any():
        # Every vertex, once in longitude/latitude: on the globe, and (for a projected
        # CRS) within the area it is defined for.
        lost = off_the_globe(out[present], source, geoms[present])
        at = np.flatnonzero(present)[~is_none(lost)]
        for i, why in zip(at, lost[~is_none(lost)], strict=True):
            _reject_one(unstorable, i, f"coordinates cannot be in {source.name}: {why}")
            _reject_one(reasons, i, f"coordinates cannot be in {source.name}: {why}")
            out[i] = None
        present[at] = False
    repaired: dict[int, str] = {}
    # The common case, vectorised: already the right type, valid, not degenerate.
    types = shapely.get_type_id(out)
    simple = present & np.isin(types, SIMPLE_TYPES[kind.family])
    if unchanged and valid_as_read is not None:  # checked already, on the same geometries
        simple &= valid_as_read
    else:
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
    from_file = None
    passed = np.zeros(len(out), dtype=bool)
    if frame.wkb is not None and source is not None and source.is_storage(SRID):
        # Unchanged geometries go to COPY as the file's own WKB with the SRID written in:
        # no shapely round trip, which is most of an import's time at a million features.
        from_file, passed = storage_ewkb(frame.wkb, simple, SRID)
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
            if repair is not None:
                repaired[int(i)] = repair
    return out, from_file, repaired


def _fit_family(kind: LayerKind, geom: Any) -> tuple[Any, str | None, str | None]:
    """The geometry as the layer stores it, a reason to reject it, and what was repaired."""
    repair = None
    given = geom.geom_type
    if kind.family != "point" and not shapely.is_valid(geom):
        repair = shapely.is_valid_reason(geom)
        geom = shapely.make_valid(geom)
    what = LAYER_WORDS.get(kind.name, f"a feature of {kind.name}")
    if kind.family == "polygon":
        parts = _parts(geom, ("Polygon",))
        if not parts and given in ("Polygon", "MultiPolygon"):
            # Repair left lines or points of it: it enclosed nothing.
            return None, "degenerate polygon (zero area)", None
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


class _FieldPlan:
    """Which source fields fill which schema fields, decided once from the first batch,
    and what could not be read, counted over every batch."""

    def __init__(self, kind: LayerKind, frame: FeatureFrame, options: ImportOptions) -> None:
        self.kind = kind
        known = {f.name for f in kind.fields}
        for target in (*options.mapping, *options.values, *options.defaults):
            if target not in known:
                raise InvalidInput(
                    f"{kind.name} has no field {target!r} (its fields: {', '.join(sorted(known))})"
                )
        by_normal = {_normal(name): name for name in frame.fields}
        used: set[str] = set()
        self.sources: dict[str, list[str]] = {}
        for f in kind.fields:
            if f.name in options.mapping:
                column = options.mapping[f.name]
                if column not in frame.fields:
                    raise InvalidInput(
                        f"the mapping {f.name}={column} names a field {frame.source} does not "
                        f"have (it has: {', '.join(frame.fields) or 'no fields'})"
                    )
                self.sources[f.name] = [column]
                used.add(column)
        for f in kind.fields:
            if f.name in self.sources or f.name in options.values:
                continue
            found = [by_normal[_normal(s)] for s in f.synonyms if _normal(s) in by_normal]
            found = [c for c in dict.fromkeys(found) if c not in used]
            if found:
                self.sources[f.name] = found
                used.update(found)
        self.kept = [name for name in frame.fields if name not in used]
        self.fixed: dict[str, Any] = {}
        self.fallback: dict[str, Any] = {}
        for name, text in options.values.items():
            try:
                self.fixed[name] = kind.field(name).parse(text)
            except ValueError as exc:
                raise InvalidInput(f"--set {name}={text} (values over HTTP): {exc}") from exc
        for name, text in options.defaults.items():
            try:
                self.fallback[name] = kind.field(name).parse(text)
            except ValueError as exc:
                raise InvalidInput(f"--default {name}={text} (defaults over HTTP): {exc}") from exc
        self.unreadable: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.derived: Counter[str] = Counter()  # values the file lacked, taken from another
        # Placeholders read as no value (无, N/A, -, null …): by source -> field, by field.
        self.placeholders: Counter[str] = Counter()
        self.placeholder_words: dict[str, dict[str, None]] = {}
        self.emptied: Counter[str] = Counter()

    def map(self, frame: FeatureFrame, reasons: np.ndarray) -> dict[str, Any]:
        """The schema's columns for one batch; unmapped fields go to ``properties``."""
        kind, n = self.kind, len(frame)
        known = {f.name for f in kind.fields}
        kept_columns = {
            name: [_json_safe(v) for v in _python_values(frame.fields[name])] for name in self.kept
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
        columns: dict[str, Any] = {}
        for f in kind.fields:
            if f.name in self.fixed:
                columns[f.name] = [self.fixed[f.name]] * n
                continue
            found = np.full(n, None, dtype=object)
            unread_why = np.full(n, None, dtype=object)  # why a value the file has is unread
            for column in self.sources.get(f.name, []):
                raw = frame.fields[column]
                parsed, why, placeholder = _parse_column(f.parse, raw)
                emptied = placeholder & is_none(found)
                if emptied.any():
                    what = f"{column} -> {f.name}"
                    self.placeholders[what] += int(emptied.sum())
                    self.emptied[f.name] += int(emptied.sum())
                    words = self.placeholder_words.setdefault(what, {})
                    for i in np.flatnonzero(emptied)[:100]:
                        words.setdefault(str(_value_at(raw, int(i))).strip(), None)
                unread = ~is_none(why)
                empty = is_none(found)
                bad = unread & empty
                if bad.any():
                    what = f"{column} -> {f.name}"
                    self.unreadable[what] += int(bad.sum())
                    self.examples.setdefault(what, why[np.flatnonzero(bad)[0]])
                    # Keep what we could not read, beside (never over) the field itself.
                    kept = f"{column}_raw" if column in known else column
                    for i in np.flatnonzero(bad):
                        properties[i][kept] = _json_safe(as_given(_value_at(raw, int(i))))
                    first = bad & is_none(unread_why)
                    unread_why[first] = why[first]
                take = empty & ~unread & ~is_none(parsed)
                found[take] = parsed[take]
            # Gaps are filled from what the feature says of itself first (a sensor's unit
            # from its kind), then by the person's --default, then by the schema's default.
            if f.name in kind.defaults_from and kind.defaults_from[f.name][0] in columns:
                basis, table = kind.defaults_from[f.name]
                gaps = np.flatnonzero(is_none(found))
                derived = [table.get(v) for v in np.asarray(columns[basis], dtype=object)[gaps]]
                found[gaps] = derived
                self.derived[f"{f.name} from {basis}"] += sum(bool(d) for d in derived)
            if f.name in self.fallback:
                found[is_none(found)] = self.fallback[f.name]
            if f.name in kind.defaults:
                found[is_none(found)] = kind.defaults[f.name]
            if f.required:
                missing = is_none(found)
                # A value the file has but that means nothing here: say so, not "no value".
                for i in np.flatnonzero(missing & ~is_none(unread_why)):
                    _reject_one(reasons, i, f"{f.name} {unread_why[i]}")
                hint = (
                    f"map a field with --map {f.name}=FIELD, fill gaps with --default "
                    f"{f.name}=VALUE or give all one with --set {f.name}=VALUE; mapping, "
                    "defaults, values over HTTP"
                )
                _reject(reasons, missing, f"no {f.name} ({hint})")
            columns[f.name] = found
        if kind.fields_in_properties:
            for f in kind.fields:
                if f.name == "source_id":
                    continue
                for i, value in enumerate(columns.pop(f.name)):
                    if value is not None:
                        properties[i][f.name] = value
        columns["properties"] = properties
        return columns

    def notes(self) -> list[str]:
        """What a person should know about the fields, over the whole file."""
        lines = [
            f"{count:,} values of {what} not understood (kept in properties), "
            f"e.g. {self.examples[what]}"
            for what, count in self.unreadable.items()
        ]
        lines += [
            f"{count:,} values of {what} emptied: placeholders for no value "
            f"({', '.join(list(self.placeholder_words[what])[:5])})"
            for what, count in self.placeholders.items()
        ]
        lines += [f"{count:,} {what}" for what, count in self.derived.items() if count]
        mapped = ", ".join(f"{t}<-{'/'.join(s)}" for t, s in self.sources.items())
        return [*lines, f"fields mapped: {mapped or 'none'}"]


def _python_values(column: Column) -> list[Any]:
    return column.to_pylist() if isinstance(column, pa.Array) else list(column)


def _value_at(column: Column, i: int) -> Any:
    return column[i].as_py() if isinstance(column, pa.Array) else column[i]


def _parse_column(
    parse: Callable[[Any], Any], raw: Column
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each value parsed (None when blank), why each could not be read (None if it was),
    and where a placeholder (无, N/A, -, null …) was read as no value.

    Provider data repeats itself ("6", "apartments", "DN300"): pandas' factorize finds the
    distinct values in C, each is parsed once, and the results are spread back.
    """
    if parse is parse_text and isinstance(raw, pa.Array) and pa.types.is_string(raw.type):
        # Text (names, ids: often all distinct) is only trimmed: done in Arrow, not per value.
        trimmed = pc.utf8_trim_whitespace(raw)
        blank = pc.is_in(pc.utf8_lower(trimmed), value_set=_BLANK_WORDS)
        parsed = pc.if_else(pc.fill_null(blank, True), None, trimmed)
        placeholder = pc.fill_null(pc.and_(blank, pc.greater(pc.utf8_length(trimmed), 0)), False)
        return (
            parsed.to_numpy(zero_copy_only=False),
            np.full(len(raw), None, dtype=object),
            np.asarray(placeholder, dtype=bool),
        )
    if isinstance(raw, pa.Array):  # Arrow finds the distinct values faster still
        try:
            encoded = pc.dictionary_encode(raw)
            codes = pc.fill_null(encoded.indices, -1).to_numpy()
            distinct = encoded.dictionary.to_pylist()
        except pa.ArrowNotImplementedError:  # nested values (lists): as Python values
            raw = np.asarray(raw.to_pylist(), dtype=object)
    if not isinstance(raw, pa.Array):
        try:
            codes, distinct = pd.factorize(np.asarray(raw, dtype=object), use_na_sentinel=True)
        except TypeError:  # unhashable values (JSON lists): parse one by one
            codes, distinct = np.arange(len(raw)), np.asarray(raw, dtype=object)
    parsed = np.empty(len(distinct) + 1, dtype=object)  # the extra last slot: blank (-1)
    why = np.empty(len(distinct) + 1, dtype=object)
    placeholder = np.zeros(len(distinct) + 1, dtype=bool)
    for i, value in enumerate(distinct):
        if is_blank(value):
            placeholder[i] = not isinstance(value, str) or bool(value.strip())
            continue
        try:
            parsed[i] = parse(value)
        except ValueError as exc:
            why[i] = str(exc)
    placeholder[-1] = False  # None, or nothing at all: not a value emptied
    emptied = placeholder[codes]
    if not isinstance(raw, pa.Array):  # NaN given as a value (JSON's NaN): emptied too
        given = np.asarray(raw, dtype=object)
        emptied |= np.asarray(pd.isna(given), dtype=bool) & ~is_none(given)
    return parsed[codes], why[codes], emptied


def _source_keys(
    kind: LayerKind,
    frame: FeatureFrame,
    columns: dict[str, Any],
    reasons: np.ndarray,
    notes: list[str],
    seen: dict[str, int],
    start: int,
) -> list[str]:
    """The key each feature is matched on when re-imported; duplicates are rejected.

    ``seen`` holds the keys of earlier batches (key -> feature number from 0), ``start``
    is this batch's first feature number.
    """
    key_field = kind.key[-1]
    if key_field == "source_id":
        ids = columns.get("source_id")
        ids = np.full(len(frame), None, dtype=object) if ids is None else np.asarray(ids)
        given = ~is_none(ids)
        if not given.any() and not frame.ids_given and NO_SOURCE_ID not in notes:
            notes.append(NO_SOURCE_ID)
        keys = np.where(given, ids, frame.fids).tolist()  # ids are text: parse_text
        columns["source_id"] = keys
    else:
        keys = [
            str(k) if k is not None else f"#{frame.fids[i]}"
            for i, k in enumerate(columns[key_field])
        ]
        if "source_id" not in columns:
            columns["source_id"] = [str(k) for k in columns[key_field]]
    eligible = is_none(reasons)
    numbers = range(start, start + len(keys))
    # The usual case, found in C: no key twice in the batch, none from an earlier batch.
    if eligible.all():
        batch = dict(zip(keys, numbers, strict=True))
    else:
        batch = dict(zip(compress(keys, eligible), compress(numbers, eligible), strict=True))
    if len(batch) == int(eligible.sum()) and seen.keys().isdisjoint(batch):
        seen.update(batch)
        return keys
    for i, key in enumerate(keys):
        if reasons[i] is not None:
            continue
        if key in seen:
            _reject_one(
                reasons, i, f"duplicate {key_field} {key!r} (first at feature {seen[key] + 1})"
            )
        else:
            seen[key] = start + i
    return keys


def _estimate_heights(columns: dict[str, Any], reasons: np.ndarray) -> int:
    """Heights from floors where a building has none, marked as estimated; how many."""
    heights = np.asarray(columns["height_m"], dtype=object)
    floors = np.asarray(columns["floors"], dtype=object)
    need = is_none(heights) & ~is_none(floors) & is_none(reasons)
    need[need] &= floors[need] != 0
    uses = columns.get("use")
    if need.any():
        use = pd.Series(np.asarray(uses, dtype=object)[need] if uses is not None else None,
                        index=np.arange(int(need.sum())), dtype=object)  # fmt: skip
        per_floor = use.map(STOREY_HEIGHT_M).fillna(DEFAULT_STOREY_HEIGHT_M).to_numpy(float)
        # Levels as given (3.5 for a half storey), not the whole floors they count as.
        levels = np.array([getattr(f, "exact", f) for f in floors[need]], dtype=float)
        estimated = np.round(levels * per_floor, 1)
        heights[need] = estimated.tolist()
    columns["height_m"] = heights
    columns["height_estimated"] = need
    return int(need.sum())


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


def _dataset_present(conn: psycopg.Connection, kind: LayerKind, dataset: str) -> bool:
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE dataset = %s)").format(
        sql.Identifier(kind.table)
    )
    return bool(conn.execute(query, (dataset,)).fetchone()[0])  # type: ignore[index]


class _LayerWriter:
    """Where an import's rows go, a batch at a time, through one COPY.

    A dataset seen for the first time has nothing to match, so its rows go straight into
    the layer's table (the file's own duplicates were rejected already): half the work
    of staging. Otherwise they are staged and then inserted or updated by the kind's key
    when the block ends.

    A large first load into a layer that holds (almost) nothing yet builds the table's
    spatial index after the rows are in, as ogr2ogr and pg_restore do: a sorted build is
    several times cheaper than keeping a GiST index current row by row. The layer is
    locked while that import runs, which for an empty layer costs nobody.
    """

    def __init__(
        self, conn: psycopg.Connection, kind: LayerKind, dataset: str, expected: int | None
    ) -> None:
        self.conn, self.kind = conn, kind
        self.table_columns = catalogue.table_columns(conn, kind.table)
        self.direct = kind.key == ("dataset", "source_id") and not _dataset_present(
            conn, kind, dataset
        )
        self.names: list[str] = []
        self.written = self.inserted = self.updated = 0
        self._copy = ExitStack()
        self._stream: CopyStream | None = None
        self._rebuild: list[sql.Composable] = []
        if (
            self.direct
            and expected is not None
            and expected >= BULK_LOAD_MIN
            and self._holds_few(expected // 10)
        ):
            self._set_indexes_aside()

    @property
    def rebuilds(self) -> bool:
        """Whether indexes were set aside, to be built when the rows are in."""
        return bool(self._rebuild)

    def _holds_few(self, limit: int) -> bool:
        """Whether the table holds at most ``limit`` rows (counting no further)."""
        query = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT %s) AS head").format(
            sql.Identifier(self.kind.table)
        )
        return int(self.conn.execute(query, (limit + 1,)).fetchone()[0]) <= limit  # type: ignore[index]

    def _set_indexes_aside(self) -> None:
        """Drop the plain secondary indexes (the spatial one above all), remembering the
        server's own definitions to build them again at the end, in the same transaction:
        a failure brings them back. Keys and unique constraints stay and guard the data."""
        rows = self.conn.execute(
            """
            SELECT index.relname, pg_get_indexdef(i.indexrelid)
            FROM pg_index i JOIN pg_class index ON index.oid = i.indexrelid
            WHERE i.indrelid = %s::regclass AND NOT i.indisprimary AND NOT i.indisunique
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
            """,
            (self.kind.table,),
        ).fetchall()
        for index, definition in rows:
            self.conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index)))
            self._rebuild.append(sql.SQL(definition))  # the server's own text

    def __enter__(self) -> _LayerWriter:
        return self

    def write(self, rows: dict[str, Any]) -> None:
        """Send one batch of rows (columns the table lacks are left out)."""
        if self._stream is None:
            self.names = [c for c in rows if c in self.table_columns]
            target = self.kind.table
            if not self.direct:
                # Only the loaded columns, without the table's constraints: checked on the
                # way in.
                target = "import_stage"
                self.conn.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE import_stage ON COMMIT DROP AS "
                        "SELECT {} FROM {} WITH NO DATA"
                    ).format(self._names(), sql.Identifier(self.kind.table))
                )
            self._stream = self._copy.enter_context(copy_stream(self.conn, target, self.names))
        self.written += self._stream.write(rows)

    def __exit__(self, *exc: object) -> None:
        self._copy.close()  # the COPY ends: the server has every row
        if exc[0] is not None or self._stream is None:
            return
        if self.direct:
            self.inserted = self.written
        else:
            self.inserted, self.updated = self._merge()
        if self._rebuild:
            # Sorting for the index build wants memory (at least 512 MB; more if set).
            self.conn.execute(
                "SELECT set_config('maintenance_work_mem', greatest(pg_size_bytes("
                "current_setting('maintenance_work_mem')), 512 * 1024 * 1024) / 1024 || 'kB',"
                " true)"
            )
            for statement in self._rebuild:
                self.conn.execute(statement)

    def _names(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(c) for c in self.names)

    def _merge(self) -> tuple[int, int]:
        """Insert or update the staged rows by the kind's key; (inserted, updated)."""
        updates = [
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
            for c in self.names
            if c not in self.kind.key
        ]
        if "updated_at" in self.table_columns:
            updates.append(sql.SQL("updated_at = now()"))
        counts = self.conn.execute(
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
                table=sql.Identifier(self.kind.table),
                names=self._names(),
                key=sql.SQL(", ").join(sql.Identifier(k) for k in self.kind.key),
                updates=sql.SQL(", ").join(updates),
            )
        ).fetchone()
        self.conn.execute("DROP TABLE import_stage")
        return int(counts[0]), int(counts[1])  # type: ignore[index]


def _update_catalogue(
    conn: psycopg.Connection,
    kind: LayerKind,
    options: ImportOptions,
    report: ImportReport,
    added_bounds: np.ndarray | None,
) -> None:
    """Record the import in the data inventory: the dataset's entry, and the layer's (which
    shows the latest import's terms); ``added_bounds`` when the import only added features
    (so the layer's count and extent grow without a scan)."""
    inventory = {name: getattr(options, name) for name in catalogue.INVENTORY_FIELDS}
    record_dataset(
        conn, kind.name, report.dataset, source=report.source, source_crs=report.source_crs,
        features=report.inserted if added_bounds is not None else None, **inventory,
    )  # fmt: skip
    metadata = {**inventory, "source_crs": report.source_crs}
    catalogue.update_layer_metadata(conn, kind.name, **{k: v for k, v in metadata.items() if v})
    if report.updated and "dataset" not in kind.key:
        # Matched across datasets: the features updated may have left theirs empty.
        for gone in forget_emptied_datasets(conn, kind.name, report.dataset):
            report.notes.append(
                f"dataset {gone!r} holds no features any more (this import took them over):"
                " it left the inventory"
            )
    if added_bounds is None or not np.isfinite(added_bounds).all():
        changes.record(
            conn, kind.name, "import", box=changes.WHOLE_LAYER, dataset=report.dataset,
            features=report.inserted + report.updated, table=kind.table,
        )  # fmt: skip
    else:
        bounds = tuple(float(b) for b in added_bounds)
        changes.record(
            conn, kind.name, "import", box=bounds, dataset=report.dataset,  # type: ignore[arg-type]
            features=report.inserted, added_only=True, table=kind.table,
        )  # fmt: skip


# -- small helpers -----------------------------------------------------------------------------


def _reject(reasons: np.ndarray, mask: np.ndarray, why: str) -> None:
    for i in np.flatnonzero(mask):
        _reject_one(reasons, i, why)


def _reject_one(reasons: np.ndarray, i: int, why: str) -> None:
    if reasons[i] is None:  # the first reason is the one reported
        reasons[i] = why


def _take(values: list[Any] | np.ndarray, keep: np.ndarray) -> list[Any] | np.ndarray:
    if isinstance(values, np.ndarray):
        return values if keep.all() else values[keep]
    if keep.all():
        return values
    return list(compress(values, keep))


def _json_safe(value: Any, depth: int = 0) -> Any:
    """A value JSON can hold: numpy scalars unwrapped, NaN and infinity as null (inside
    lists and objects too), dates as ISO text."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | dict) and depth >= MAX_VALUE_DEPTH:
        return None  # its feature is rejected (see _unstorable)
    if isinstance(value, list):
        return [_json_safe(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
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
