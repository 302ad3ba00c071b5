"""Incident categories and the responsibility list (责任清单) over HTTP: the categories are
public (a resident app shows them), the rules are for staff. Thin: the core checks every
value (twin.incidents), layers.incidents reads the files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, Response, UploadFile
from fastapi import status as http

from api.access import Dispatcher, Heavy, IncidentSetup, Public
from api.deps import Connection, KnownParameters, Plain
from api.routes.imports import check_form, geojson_body, save_upload
from layers.incidents import SUFFIXES, import_categories, import_responsibilities
from layers.values import refuse_nul
from twin.errors import InvalidInput
from twin.incidents import categories, responsibilities

router = APIRouter(tags=["incidents"])
Code = Annotated[str, Path(max_length=100)]
CATEGORY_FIELDS = tuple(c for c in categories.COLUMNS if c != "code")
RULE_FIELDS = responsibilities.COLUMNS
IMPORT_FIELDS = ("file", "dataset")
JSON_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def _object(document: Any, fields: tuple[str, ...], what: str) -> dict[str, Any]:
    """The body as an object of ``fields``; InvalidInput naming an unknown field."""
    if not isinstance(document, dict):
        raise InvalidInput(f"the body must be a JSON object of {what}'s fields: "
                           + ", ".join(fields))  # fmt: skip
    unknown = [str(k).replace("\x00", "")[:40] for k in document if k not in fields]
    if unknown:
        raise InvalidInput(
            f"unknown field {', '.join(repr(k) for k in unknown[:5])}; {what} takes "
            + ", ".join(fields),
            option=unknown[0],
        )
    return document


@router.get("/categories", dependencies=[Public, KnownParameters],
            summary="The incident categories, a tree (public)")  # fmt: skip
def list_categories(conn: Connection) -> dict[str, Any]:
    """Every category, depth first (a parent before its children), each with its
    ``parent_code`` and ``depth`` (0 for a root)."""
    found = categories.list_categories(conn)
    depth: dict[str, int] = {}
    listed = []
    for c in found:
        depth[c.code] = depth.get(c.parent_code or "", -1) + 1 if c.parent_code else 0
        listed.append({**c.as_dict(), "depth": depth[c.code]})
    return {"categories": listed, "count": len(listed)}


@router.get("/categories/{code}", dependencies=[Public, KnownParameters],
            summary="One incident category (public)")  # fmt: skip
def get_category(conn: Connection, code: Code) -> dict[str, Any]:
    """The category, its ancestors (nearest first) and the codes of its children; 404
    when unknown."""
    category = categories.get_category(conn, code)
    children = [c.code for c in categories.list_categories(conn) if c.parent_code == code]
    ancestors = [{"code": a.code, "name": a.name} for a in categories.ancestors(conn, code)]
    return {**category.as_dict(), "ancestors": ancestors, "children": children}


@router.put("/categories/{code}", dependencies=[KnownParameters], openapi_extra=JSON_BODY,
            summary="Create or replace an incident category (supervisors)")  # fmt: skip
def put_category(
    response: Response,
    conn: Connection,
    caller: IncidentSetup,
    code: Code,
    document: Annotated[Any, Depends(geojson_body)],
) -> dict[str, Any]:
    """201 for a new category, 200 for one replaced; 400 naming the field that cannot be
    used (a number that is not finite and above 0, an unknown parent or asset layer, a
    parent that would make a cycle)."""
    refuse_nul("the category code", code, option="code")
    values = _object(document, ("code", *CATEGORY_FIELDS), "a category")
    with conn.transaction():
        category, created = categories.put(conn, code, values)
    if created:
        response.status_code = http.HTTP_201_CREATED
    return {"caller": caller.name, **category.as_dict()}


@router.delete("/categories/{code}", status_code=http.HTTP_204_NO_CONTENT,
               dependencies=[KnownParameters],
               summary="Delete an incident category (supervisors)")  # fmt: skip
def delete_category(conn: Connection, caller: IncidentSetup, code: Code) -> None:
    """404 when unknown; 409 while responsibility rules or other categories use it."""
    categories.delete(conn, code)


@router.get("/responsibilities", dependencies=[KnownParameters],
            summary="The responsibility list (dispatchers, supervisors)")  # fmt: skip
def list_rules(
    conn: Connection,
    caller: Dispatcher,
    category: Annotated[str | None, Query(max_length=100)] = None,
    jurisdiction: Annotated[str | None, Query(max_length=100)] = None,
    unit: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=responsibilities.MAX_PAGE), Plain] = 1000,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1), Plain] = 0,
) -> dict[str, Any]:
    """Rules by category, jurisdiction and owner; ``category`` takes the rules of the
    categories under it too, ``unit`` the rules for it as the unit or the asset owner."""
    rules = responsibilities.list_rules(
        conn, category=category, jurisdiction=jurisdiction, unit=unit, limit=limit,
        offset=offset,
    )  # fmt: skip
    return {"rules": rules, "count": len(rules), "limit": limit, "offset": offset}


@router.post("/responsibilities", status_code=http.HTTP_201_CREATED,
             dependencies=[KnownParameters], openapi_extra=JSON_BODY,
             summary="Add a responsibility rule (supervisors)")  # fmt: skip
def post_rule(
    conn: Connection, caller: IncidentSetup, document: Annotated[Any, Depends(geojson_body)]
) -> dict[str, Any]:
    """400 naming a field that is wrong or a code that is not stored, 409 when a rule for
    the same category, jurisdiction and asset owner exists."""
    values = _object(document, RULE_FIELDS, "a rule")
    with conn.transaction():
        return {"caller": caller.name, **responsibilities.add_rule(conn, values)}


@router.delete("/responsibilities/{rule_id}", status_code=http.HTTP_204_NO_CONTENT,
               dependencies=[KnownParameters],
               summary="Delete a responsibility rule (supervisors)")  # fmt: skip
def delete_rule(
    conn: Connection,
    caller: IncidentSetup,
    rule_id: Annotated[int, Path(ge=1, le=2**63 - 1), Plain],
) -> None:
    """404 when there is no such rule."""
    responsibilities.delete_rule(conn, rule_id)


async def _import_form(request: Request) -> None:
    await check_form(request, IMPORT_FIELDS)


def _upload(request: Request, conn: Connection, file: UploadFile, dataset: str | None,
            run: Any) -> dict[str, Any]:  # fmt: skip
    refuse_nul("the file's name", file.filename)
    original = FilePath(file.filename or "upload")
    if original.suffix.lower() not in SUFFIXES:
        raise InvalidInput(f"file type {original.suffix or '(none)'} is not importable here; "
                           f"send one of {', '.join(SUFFIXES)}")  # fmt: skip
    limit = request.app.state.settings.imports.max_upload_mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="twin-upload-") as folder:
        target = save_upload(file, FilePath(folder), limit)
        report = run(conn, target, dataset=dataset, source=original.name)  # NothingStored: 422
    return report.as_dict()  # type: ignore[no-any-return]


@router.post("/categories/import", dependencies=[Heavy],
             summary="Import a categories file, CSV or JSON (supervisors)")  # fmt: skip
def upload_categories(
    request: Request,
    conn: Connection,
    caller: IncidentSetup,
    _form: Annotated[None, Depends(_import_form)],
    file: Annotated[UploadFile, File(description="CSV or JSON: code, name, parent_code, ...")],
    dataset: Annotated[str | None, Form(max_length=100)] = None,
) -> dict[str, Any]:
    """Upsert categories by code; 200 with the report (``rejected``: each row and why),
    422 when no row could be stored."""
    return {"caller": caller.name, **_upload(request, conn, file, dataset, import_categories)}


@router.post("/responsibilities/import", dependencies=[Heavy],
             summary="Import a responsibility list, CSV or JSON (supervisors)")  # fmt: skip
def upload_responsibilities(
    request: Request,
    conn: Connection,
    caller: IncidentSetup,
    _form: Annotated[None, Depends(_import_form)],
    file: Annotated[UploadFile, File(description="CSV or JSON: category_code, ...")],
    dataset: Annotated[str | None, Form(max_length=100)] = None,
) -> dict[str, Any]:
    """Upsert rules by category, jurisdiction and asset owner; 200 with the report, 422
    when no row could be stored."""
    return {"caller": caller.name, **_upload(request, conn, file, dataset, import_responsibilities)}
