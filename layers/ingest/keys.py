"""The key each feature is matched on when a dataset is imported again (its source id,
or the kind's own key), duplicates in a file rejected; and the names features give of
others (a unit's jurisdiction), which must exist."""

from __future__ import annotations

from itertools import compress
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from layers.ingest.reasons import reject_one
from layers.kinds import LayerKind
from layers.readers import FeatureFrame, is_none

NO_SOURCE_ID = (
    "no source id field found: features are matched by their row in the file, so a "
    "re-import of a reordered file updates the wrong features; map the file's id field to "
    "source_id"
)


def source_keys(
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
            reject_one(
                reasons, i, f"duplicate {key_field} {key!r} (first at feature {seen[key] + 1})"
            )
        else:
            seen[key] = start + i
    return keys


def check_references(
    conn: psycopg.Connection, kind: LayerKind, columns: dict[str, Any], reasons: np.ndarray
) -> None:
    """The features the kind's references name must exist, in the batch or the data base
    (a kind whose features name others of the same file is read whole: one batch)."""
    for ref in kind.references:
        wanted = columns[ref.field]
        own = {str(c) for c in columns[ref.in_file] if c is not None} if ref.in_file else set()
        asked = sorted({str(c) for c in wanted if c is not None} - own)
        existing: set[Any] = set()
        if asked:
            # Table and column are the registry's, never input.
            target = kind.referred(ref)
            query = sql.SQL("SELECT {column} FROM {table} WHERE {column} = ANY(%s)").format(
                column=sql.Identifier(target.id_column), table=sql.Identifier(target.table)
            )
            existing = {r[0] for r in conn.execute(query, (asked,))}
        for i, code in enumerate(wanted):
            if code is not None and code not in own and code not in existing:
                reject_one(reasons, i, ref.message.format(code))
