"""API keys over HTTP (admins): list them, make one (its key shown in this answer only),
revoke one. Thin: twin.keys checks every value and keeps only the keys' hashes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi import status as http

from api.access import Admin, KeyCache
from api.deps import Connection, KnownParameters
from api.routes.imports import geojson_body
from api.routes.incidents import JSON_BODY, _object
from twin import keys
from twin.schema import KEY_ROLES

router = APIRouter(tags=["keys"])
KEY_FIELDS = ("name", "role", "jurisdiction", "unit")


@router.get(
    "/keys", dependencies=[KnownParameters], summary="Every API key, without the keys (admins)"
)
def list_keys(conn: Connection, caller: Admin) -> dict[str, Any]:
    """Each key's name, role, scope, first characters, when made and when revoked."""
    found = keys.list_keys(conn)
    return {"keys": found, "count": len(found), "roles": list(KEY_ROLES)}


@router.post("/keys", status_code=http.HTTP_201_CREATED, openapi_extra=JSON_BODY,
             dependencies=[KnownParameters], summary="Make an API key (admins)")  # fmt: skip
def post_key(
    conn: Connection, caller: Admin, document: Annotated[Any, Depends(geojson_body)]
) -> dict[str, Any]:
    """``{name, role, jurisdiction?, unit?}``: 201 with the key, shown this once (only its
    hash is kept); 400 naming what is wrong, 409 when the name is taken."""
    values = _object(document, KEY_FIELDS, "a key")
    row, key = keys.create(conn, values.get("name"), values.get("role"),
                           jurisdiction=values.get("jurisdiction"), unit=values.get("unit"))  # fmt: skip
    return {**row, "key": key}


@router.delete("/keys/{name}", status_code=http.HTTP_204_NO_CONTENT,
               dependencies=[KnownParameters], summary="Revoke an API key (admins)")  # fmt: skip
def delete_key(
    request: Request, conn: Connection, caller: Admin, name: Annotated[str, Path(max_length=100)]
) -> Response:
    """The key stops working at once here, and within seconds in the other processes;
    404 for an unknown or already revoked name."""
    keys.revoke(conn, name)
    cache: KeyCache = request.app.state.key_cache
    cache.clear()
    return Response(status_code=http.HTTP_204_NO_CONTENT)
