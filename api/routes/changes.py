"""The change log over HTTP: what changed where since a version, for systems that keep a
copy of a layer (or a cache of its tiles) in step without reading it all again."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api.access import Public
from api.deps import Connection, KnownParameters, Whole, catalogue_of
from twin import changes
from twin.errors import InvalidInput

router = APIRouter(tags=["changes"])


@router.get(
    "/changes",
    dependencies=[Public, KnownParameters],
    summary="Changes to the layers since a version (public)",
)
def list_changes(
    request: Request,
    conn: Connection,
    after: Annotated[Whole, Query(description="the last version the caller has; 0 for all")] = 0,
    layer: Annotated[str | None, Query(max_length=63, description="one layer only")] = None,
    limit: Annotated[
        Whole, Query(description=f"at most this many (1 to {changes.MAX_CHANGES})")
    ] = 100,
) -> dict[str, Any]:
    """Each change after ``after``, oldest first: its ``version``, ``layer``, ``operation``
    (import, edit, delete, demo, elevation, topology, scene_create, scene_drop), dataset,
    how many features, and ``bbox`` (lon/lat) of every place that changed. ``next`` is the
    version to ask after for more; ``latest`` the newest there is."""
    if not 0 <= after < 2**63:
        raise InvalidInput(f"after: a version is from 0 to {2**63 - 1} (0 for every change)")
    if not 1 <= limit <= changes.MAX_CHANGES:
        raise InvalidInput(f"limit must be from 1 to {changes.MAX_CHANGES}")
    if layer is not None:
        catalogue = catalogue_of(request, conn)
        # A dropped scene's changes may still be asked for: unknown is never in the log.
        if layer not in catalogue.layers and not changes.ever_changed(conn, layer):
            # A filter's value, not a resource: 400, naming the layers there are.
            shown = layer.replace("\x00", "")[:63]
            raise InvalidInput(f"no layer named {shown!r} (there are: "
                               f"{', '.join(catalogue.layers)})", option="layer")  # fmt: skip
    found = changes.changes_since(conn, after, layer, limit=limit)
    return {
        "changes": [asdict(change) for change in found],
        "next": found[-1].version if found else after,
        "latest": changes.latest_version(conn),
    }
