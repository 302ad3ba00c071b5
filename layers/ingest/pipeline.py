"""The import pipeline: a file's features, a batch at a time, checked, mapped and written
in one transaction, with the kind's own steps at their moments (see LayerKind), and the
inventory brought up to date at the end. It knows no file formats: see layers.ingest.files.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import shapely
from psycopg import sql

from layers.datasets import forget_emptied_datasets, record_dataset
from layers.ingest.fields import FieldPlan
from layers.ingest.geometry import (
    geometry_column,
    other_stated_crs,
    prepare_geometries,
    source_crs,
    widen,
)
from layers.ingest.keys import check_references, source_keys
from layers.ingest.reasons import take
from layers.ingest.report import (
    ImportOptions,
    ImportReport,
    Progress,
    Rejection,
    check_options,
    check_stored,
)
from layers.ingest.storable import refuse_whole, unstorable_values
from layers.ingest.writer import LayerWriter
from layers.kinds import LayerKind
from layers.readers import FeatureFrame, FeatureReader, is_none, no_coordinates
from layers.terrain import sample_elevations, terrain_loaded
from layers.values import refuse_nul
from twin import catalogue, changes
from twin.crs import SourceCRS
from twin.errors import InvalidInput


def import_frame(
    conn: psycopg.Connection,
    kind: LayerKind,
    frame: FeatureFrame,
    options: ImportOptions,
    *,
    dataset: str,
    progress: Progress | None = None,
    all_or_nothing: bool = False,
    refuse_empty: bool = True,
) -> ImportReport:
    """Import features already read; one transaction, so a failure changes nothing.

    ``all_or_nothing`` (a request body from another system): a feature that cannot be
    stored as sent (a coordinate that is no number or off the globe, a NUL character)
    refuses the whole request with InvalidInput naming it, rather than being rejected
    while the rest is stored. For ``refuse_empty`` see ``import_batches``."""
    reader = FeatureReader(frame.source, frame.crs, len(frame), iter([frame]))
    return import_batches(
        conn, kind, reader, options, dataset=dataset, progress=progress,
        all_or_nothing=all_or_nothing, refuse_empty=refuse_empty,
    )  # fmt: skip


def import_batches(
    conn: psycopg.Connection,
    kind: LayerKind,
    reader: FeatureReader,
    options: ImportOptions,
    *,
    dataset: str,
    progress: Progress | None = None,
    all_or_nothing: bool = False,
    refuse_empty: bool = True,
) -> ImportReport:
    """Import a file a batch at a time, all in one transaction: a failure changes nothing.

    Each batch is checked, mapped and sent down one COPY while the server stores the
    one before; features are matched by source id across the whole file. An import that
    stores no feature raises NothingStored (with its report), unless not ``refuse_empty``:
    a caller importing several layers as one (an EPANET network) checks the whole itself.
    For ``all_or_nothing`` see ``import_frame``.
    """
    check_options(options)
    refuse_nul("the dataset", dataset, option="dataset")
    report = ImportReport(layer=kind.name, dataset=dataset, source=reader.source)
    batches = (frame for frame in reader if len(frame))
    first = next(batches, None)
    if first is None:
        report.notes.append("the file holds no features")
        if refuse_empty:
            check_stored(report)
        return report
    if first.plain_table and not kind.geometry_optional:
        raise InvalidInput(no_coordinates(first))
    crs = source_crs(first, options)
    report.source_crs = crs.name if crs else None
    if options.crs and crs is not None:
        stated = other_stated_crs(first.crs, crs)
        if stated:
            report.notes.append(f"the file says its CRS is {stated}; {crs.name} was used, as given")
    plan = FieldPlan(kind, first, options)
    seen: dict[str, int] = {}  # source key -> feature number, for duplicates across batches
    stored_keys: list[str] = []  # for the kind's after_write step, if it has one
    step = f"import {kind.name}"
    with conn.transaction(), ThreadPoolExecutor(1, thread_name_prefix="validity") as checker:
        batch = prepare_batch(
            conn, kind, first, crs, plan, seen, report, start=0, checker=checker,
            all_or_nothing=all_or_nothing,
        )  # fmt: skip
        bounds = np.array([np.inf, np.inf, -np.inf, -np.inf])  # of what was written
        with LayerWriter(conn, kind, dataset, reader.count) as writer:
            while True:
                writer.write(batch.rows(report, dataset))
                bounds = widen(bounds, batch.geoms[batch.keep])
                if kind.after_write is not None:
                    stored_keys.extend(take(batch.keys, batch.keep))
                if progress is not None:
                    progress(step, report.read, max(reader.count or 0, report.read))
                frame = next(batches, None)
                if frame is None:
                    if progress is not None and writer.rebuilds:
                        progress("build the spatial index", 0, 1)  # the last, quiet step
                    break
                batch = prepare_batch(
                    conn, kind, frame, crs, plan, seen, report, start=report.read,
                    checker=checker, all_or_nothing=all_or_nothing,
                )  # fmt: skip
        if progress is not None and writer.rebuilds:
            progress("build the spatial index", 1, 1)
        report.inserted, report.updated = writer.inserted, writer.updated
        report.notes.extend(plan.notes())
        report.emptied = dict(plan.emptied)
        if refuse_empty:
            check_stored(report)  # rolls back: nothing of it is kept, the inventory included
        if writer.written:  # a file that stored nothing leaves the inventory as it was
            _update_catalogue(conn, kind, options, report, only_added=writer.direct)
            _record_change(conn, kind, report, bounds, writer)
        if kind.elevation_column and writer.written and terrain_loaded(conn):
            filled = sample_elevations(conn, [kind.layer]).get(kind.name, 0)
            report.notes.append(f"{filled:,} elevations taken from the terrain")
        if kind.after_write is not None and writer.written:
            kind.after_write(conn, stored_keys, report)
        if writer.written and any(f.name == "owner_unit" for f in kind.fields):
            report.notes.extend(_unknown_owners(conn, kind, report.dataset))
    return report


def _unknown_owners(conn: psycopg.Connection, kind: LayerKind, dataset: str) -> list[str]:
    """A note on the owners of the dataset's assets that are no unit's code: kept as given,
    but no responsibility rule for an owner can match them until such a unit exists."""
    rows = conn.execute(
        sql.SQL(
            "SELECT f.owner_unit, count(*) FROM {} f WHERE f.dataset = %s"
            " AND f.owner_unit IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM units u WHERE u.code = f.owner_unit)"
            " GROUP BY 1 ORDER BY 2 DESC, 1"
        ).format(sql.Identifier(kind.table)),
        (dataset,),
    ).fetchall()
    if not rows:
        return []
    shown = ", ".join(f"{owner!r} ({count:,})" for owner, count in rows[:5])
    more = f" and {len(rows) - 5:,} more" if len(rows) > 5 else ""
    return [
        f"owner_unit of {sum(c for _, c in rows):,} features names no unit's code: {shown}{more}"
        " (kept as given; import the units, or give their codes, for rules on an asset's"
        " owner to apply)"
    ]


@dataclass
class Batch:
    """One batch of features checked and mapped, with why some cannot be imported."""

    columns: dict[str, Any]
    geoms: np.ndarray  # in the storage CRS; shapely geometries or None
    from_file: pa.Array | None  # EWKB made straight from the file's WKB, where it could be
    reasons: np.ndarray  # None, or why the feature is rejected
    keys: list[str]
    repaired: dict[int, str]  # feature -> what was repaired in its geometry

    @property
    def keep(self) -> np.ndarray:
        """Where a feature is kept (it has no reason to be rejected)."""
        return is_none(self.reasons)

    def rows(self, report: ImportReport, dataset: str) -> dict[str, Any]:
        """The rows to write; rejections and repairs are added to ``report``."""
        keep = self.keep
        report.rejected.extend(
            Rejection(str(self.keys[i]), str(self.reasons[i])) for i in np.flatnonzero(~keep)
        )
        report.repaired += sum(1 for i in self.repaired if keep[i])
        rows = {name: take(values, keep) for name, values in self.columns.items()}
        rows["geom"] = geometry_column(self.geoms, self.from_file).filter(pa.array(keep))
        rows["dataset"] = pa.array([dataset], pa.string()).take(np.zeros(int(keep.sum()), int))
        return rows


def prepare_batch(
    conn: psycopg.Connection,
    kind: LayerKind,
    frame: FeatureFrame,
    crs: SourceCRS | None,
    plan: FieldPlan,
    seen: dict[str, int],
    report: ImportReport,
    *,
    start: int,
    checker: ThreadPoolExecutor,
    all_or_nothing: bool = False,
) -> Batch:
    """One batch checked and mapped: its fields, geometries, keys and the kind's own
    steps; each feature that cannot be imported gets its reason."""
    report.read += len(frame)
    # GEOS checks validity without holding the GIL: in a thread, while fields are mapped.
    validity = checker.submit(shapely.is_valid, frame.geoms)
    unstorable = unstorable_values(frame)
    field_reasons = np.full(len(frame), None, dtype=object)
    columns = plan.map(frame, field_reasons)
    reasons = np.full(len(frame), None, dtype=object)
    geoms, from_file, repaired = prepare_geometries(
        kind, frame, crs, reasons, validity.result(), unstorable
    )
    if all_or_nothing and not is_none(unstorable).all():
        refuse_whole(frame, unstorable, start)
    unset = is_none(reasons)  # a geometry's reason comes first: it is checked first
    reasons[unset] = unstorable[unset]
    unset = is_none(reasons)
    reasons[unset] = field_reasons[unset]
    keys = source_keys(kind, frame, columns, reasons, report.notes, seen, start)
    check_references(conn, kind, columns, reasons)
    if kind.prepare_batch is not None:
        kind.prepare_batch(columns, reasons, report)
    for i, why in repaired.items():
        if reasons[i] is None:
            columns["properties"][i]["_geometry_repaired"] = why
    return Batch(columns, geoms, from_file, reasons, keys, repaired)


def _record_change(
    conn: psycopg.Connection,
    kind: LayerKind,
    report: ImportReport,
    bounds: np.ndarray,
    writer: LayerWriter,
) -> None:
    """Say in the change log what the import changed: where the features written are,
    and where those it updated were. Only added (a new dataset): the layer's count and
    extent grow without a scan."""
    written = tuple(float(b) for b in bounds) if np.isfinite(bounds).all() else None
    box = changes.union(written, writer.replaced)  # type: ignore[arg-type]
    changes.record(
        conn, kind.name, "import", box=box, dataset=report.dataset,
        features=report.inserted + report.updated, added_only=writer.direct and box is not None,
        table=kind.table,
    )  # fmt: skip


def _update_catalogue(
    conn: psycopg.Connection,
    kind: LayerKind,
    options: ImportOptions,
    report: ImportReport,
    *,
    only_added: bool,
) -> None:
    """Record the import in the data inventory: the dataset's entry, and the layer's (which
    shows the latest import's terms). ``only_added``: a new dataset, all of it inserted
    (so its count is known without counting)."""
    inventory = {name: getattr(options, name) for name in catalogue.INVENTORY_FIELDS}
    record_dataset(
        conn, kind.name, report.dataset, source=report.source, source_crs=report.source_crs,
        features=report.inserted if only_added else None, **inventory,
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
