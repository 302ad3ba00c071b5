"""Loading data into layers over HTTP: file uploads, GeoJSON, and scene registration.

Engineers and admins only. The core does the work (layers.ingest, layers.scenes); this module turns HTTP
into calls of it and keeps a long import from being cut by the per-request time limit.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Annotated, Any

import psycopg
from fastapi import (
    APIRouter,
    Depends,
    File,
    Form,
    Path,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.datastructures import UploadFile as FormFile

from api.access import Editor, Heavy
from api.deps import Connection, KnownParameters, WritesLayers
from api.errors import MAX_BODY_MB, TooLarge
from layers.datasets import delete_dataset, refuse_control
from layers.ingest import (
    IMPORTABLE_SUFFIXES,
    ImportOptions,
    check_options,
    import_file,
    import_frame,
    layer_kind,
)
from layers.readers import frame_from_geojson
from layers.scenes import NAME_PATTERN, create_scene, drop_scene
from layers.values import json_float, refuse_nul
from twin import catalogue
from twin.crs import axes, resolve_crs
from twin.errors import InvalidInput

router = APIRouter(tags=["imports"])
LayerName = Annotated[str, Path(max_length=63, pattern=r"^[a-z][a-z0-9_]*$")]
# The upload's form fields: the file and the CLI's options (see upload below).
UPLOAD_FIELDS = ("file", "dataset", "crs", "layer", "mapping", "values", "defaults",
                 "provider", "owner_unit", "licence", "update_cadence")  # fmt: skip
MAPPING_EXAMPLE = '{"height_m": "GAODU"}'
# Python's JSON reader's complaints, in plain words.
JSON_REASONS = {
    "Expecting property name enclosed in double quotes": "a field name must be in double quotes",
    "Expecting value": "a value is missing or is not JSON (text goes in double quotes)",
    "Expecting ',' delimiter": "a comma is missing",
    "Expecting ':' delimiter": "a colon is missing after a field name",
    "Unterminated string starting at": "a text is not closed with a double quote",
    "Extra data": "there is more after the end",
    "Invalid control character at": "a text holds a control character (a tab or line break?)",
    "Invalid \\escape": "a backslash starts no valid escape",
}


def _long_statements(conn: psycopg.Connection, request: Request) -> None:
    """Imports may run longer than a query: for this transaction, the import time limit
    (TWIN_IMPORT_TIME_LIMIT_S) in place of the per-statement one."""
    limit = request.app.state.settings.imports.import_time_limit_s
    conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{limit}s",))


def _json_object(text: str | None, name: str) -> dict[str, str]:
    """A form field's JSON object of field names to values (text, numbers, true/false),
    as the CLI's --map/--set/--default pairs are read; InvalidInput naming the form field
    (and the entry) for anything else."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except RecursionError as exc:  # the C decoder gives up on deep nesting: not a 500
        raise InvalidInput(
            f"{name}: nested too deeply to read; give a JSON object of field names to values,"
            ' e.g. {"height_m": "H"}'
        ) from exc
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{name} is not JSON: {_json_reason(exc)}; give a JSON object such as "
            + MAPPING_EXAMPLE
        ) from exc
    if not isinstance(value, dict):
        raise InvalidInput(
            f'{name} must be a JSON object of field names to values, e.g. {{"height_m": "H"}}'
        )
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool) or item is None:
            what = {list: "a list", dict: "an object"}.get(type(item), "null")
            raise InvalidInput(
                f"{name}: the value of {key[:60]!r} must be text or a number, not {what}"
            )
    # Numbers and true/false are read as the CLI reads them from text.
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _json_reason(exc: json.JSONDecodeError) -> str:
    """Where and what is wrong in JSON text, in words, not the parser's."""
    where = (
        f"at character {exc.pos + 1:,}"
        if exc.lineno == 1
        else f"on line {exc.lineno:,}, column {exc.colno:,}"
    )
    reason = next(
        (w for m, w in JSON_REASONS.items() if exc.msg.startswith(m)), "it cannot be read"
    )
    return f"{where}, {reason}"


async def upload_form(request: Request) -> None:
    """Refuses what the upload would otherwise take silently or answer in FastAPI's words:
    a body that is no multipart form, a form field it does not take or one given twice
    (the last would win), a file field that holds no file, and any query parameter."""
    await check_form(request, UPLOAD_FIELDS)


async def check_form(request: Request, fields: tuple[str, ...]) -> None:
    """``upload_form`` for an upload taking ``fields`` (the first: its file)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput(
            "send the upload as a multipart form (Content-Type: multipart/form-data) whose "
            "field file holds the file, e.g. curl -F file=@survey.geojson"
        )
    form = await request.form()  # read already, to fill the parameters: not read again
    names = [name for name, _ in form.multi_items()]
    takes = f"the upload takes {', '.join(fields)}"
    unknown = [n for n in dict.fromkeys(names) if n not in fields]
    if unknown:
        shown = ", ".join(repr(n[:40]) for n in unknown[:5])
        raise InvalidInput(f"unknown form field {shown}; {takes}")
    twice = [n for n in dict.fromkeys(names) if names.count(n) > 1]
    if twice:
        raise InvalidInput(f"form field {twice[0]!r} is given more than once; give it once")
    if "file" in form and not isinstance(form["file"], FormFile):
        raise InvalidInput(
            "form field file holds text, not a file: send the file as a file part, e.g. "
            "curl -F file=@survey.geojson"
        )
    if request.query_params:
        first = next(iter(request.query_params))
        raise InvalidInput(
            f"unknown query parameter {first[:40]!r}; the upload takes none: give its "
            f"options as form fields ({', '.join(fields[1:])})"
        )


@router.post(
    "/layers/{name}/import",
    dependencies=[Heavy, WritesLayers],
    summary="Import a file into a layer (engineers, admins)",
)
def upload(
    request: Request,
    conn: Connection,
    caller: Editor,
    name: LayerName,
    _form: Annotated[None, Depends(upload_form)],
    file: Annotated[
        UploadFile,
        File(description="GeoJSON, GeoPackage, zipped Shapefile, CSV, FlatGeobuf, EPANET .inp ..."),
    ],
    dataset: Annotated[str | None, Form(max_length=100)] = None,
    crs: Annotated[str | None, Form(max_length=200)] = None,
    layer: Annotated[str | None, Form(max_length=200)] = None,
    mapping: Annotated[str | None, Form(description='JSON {"field": "source field"}')] = None,
    values: Annotated[
        str | None, Form(description='JSON {"field": "value for all"} (CLI --set)')
    ] = None,
    defaults: Annotated[
        str | None, Form(description='JSON {"field": "value where missing"} (CLI --default)')
    ] = None,
    provider: Annotated[str | None, Form(max_length=200)] = None,
    owner_unit: Annotated[str | None, Form(max_length=200)] = None,
    licence: Annotated[str | None, Form(max_length=200)] = None,
    update_cadence: Annotated[str | None, Form(max_length=100)] = None,
) -> dict[str, Any]:
    """Import the uploaded file; answers the report (read, inserted, updated, rejected…).

    200 when at least one feature was stored (the report's ``rejected`` lists any others);
    422 problem+json, with the first rejections and why, when none could be stored."""
    refuse_nul("the file's name", file.filename)
    original = FilePath(file.filename or "upload")
    suffix = original.suffix.lower()
    if suffix not in IMPORTABLE_SUFFIXES:
        raise InvalidInput(
            f"file type {suffix or '(none)'} is not importable; send one of "
            + ", ".join(sorted(IMPORTABLE_SUFFIXES))
        )
    limit = request.app.state.settings.imports.max_upload_mb * 1024 * 1024
    options = ImportOptions(
        dataset=dataset,  # by default the client's file's name (its source), as the CLI's
        crs=crs,
        layer=layer,
        source=original.name,  # messages and the inventory name the client's file
        mapping=_json_object(mapping, "mapping"),
        values=_json_object(values, "values"),
        defaults=_json_object(defaults, "defaults"),
        provider=provider,
        owner_unit=owner_unit,
        licence=licence,
        update_cadence=update_cadence,
    )
    check_options(options)  # before the file is copied
    with tempfile.TemporaryDirectory(prefix="twin-upload-") as folder:
        target = save_upload(file, FilePath(folder), limit)
        with conn.transaction():
            _long_statements(conn, request)
            report = import_file(conn, name, target, options)  # NothingStored: 422
    return {"caller": caller.name, **report.as_dict()}


def save_upload(file: UploadFile, folder: FilePath, limit: int) -> FilePath:
    """The uploaded file copied into ``folder`` (ours), under the client's name reduced to
    safe characters; TooLarge past ``limit`` bytes."""
    original = FilePath(file.filename or "upload")
    safe = re.sub(r"[^\w.-]", "_", original.stem)[:100] or "upload"
    target = folder / f"{safe}{original.suffix.lower()}"
    with target.open("wb") as out:
        copied = 0
        while chunk := file.file.read(1024 * 1024):
            copied += len(chunk)
            if copied > limit:
                raise TooLarge(
                    f"the file is larger than {limit // 1024 // 1024:,} MB, the most an "
                    "upload may be (TWIN_MAX_UPLOAD_MB); import it with twin import"
                )
            out.write(chunk)
    return target


async def geojson_body(request: Request) -> Any:
    """The request body as JSON, read within MAX_BODY_MB; a clear 400 for a body that is
    not JSON or nests too deep for a parser, 413 for one that is too large.

    NaN and Infinity tokens (which Python's JSON reader takes) are read as such: the import
    then refuses the coordinates that hold them, naming each."""
    return await json_body(request, MAX_BODY_MB * 1024 * 1024, _too_large)


async def json_body(request: Request, limit: int, too_large: Callable[[], TooLarge]) -> Any:
    """The request body as JSON, read within ``limit`` bytes (``too_large()`` raised past
    it, before more is read); a clear 400 for a body that is not JSON or nests too deep."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large()
    return parse_json(body)


def parse_json(body: bytes | bytearray | str, what: str = "the request body") -> Any:
    """``body`` read as JSON; a clear 400 naming ``what`` for text that is not JSON (where,
    and what is wrong) or nests too deep."""
    try:
        # A number beyond a double (1e400) keeps its text, to be kept as given.
        return json.loads(body, parse_float=json_float)
    except RecursionError as exc:
        raise InvalidInput(f"{what} nests lists or objects too deep to read") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} is not JSON: byte {exc.start + 1:,} is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not JSON: {_json_reason(exc)}") from exc


def _too_large() -> TooLarge:
    return TooLarge(
        f"the request body is larger than {MAX_BODY_MB} MB: send fewer features per request "
        "or upload a file (POST /layers/{layer}/import)"
    )


GEOJSON_BODY = {
    "requestBody": {
        "required": True,
        "description": "A GeoJSON FeatureCollection (or one Feature)",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


@router.post(
    "/layers/{name}/features",
    summary="Add or update features from GeoJSON (engineers, admins)",
    openapi_extra=GEOJSON_BODY,
    dependencies=[KnownParameters, WritesLayers],
)
def post_features(
    request: Request,
    conn: Connection,
    caller: Editor,
    name: LayerName,
    document: Annotated[Any, Depends(geojson_body)],
    dataset: Annotated[str, Query(max_length=200)] = "api",
    crs: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Upsert GeoJSON features by their ``id`` (or a mapped source id field).

    200 with the report when at least one feature was stored; 422 when none could be.
    A body with a feature the data base must never hold (a coordinate that is no number
    or off the globe, a NUL character in a value) is refused whole with 400, naming each
    such feature (its index in ``features`` and its id) and the coordinate or field, and
    nothing of it is stored."""
    refuse_control("dataset", dataset)
    refuse_nul("crs", crs)
    frame = frame_from_geojson(document, axes=axes(resolve_crs(crs, "crs")) if crs else axes(None))
    with conn.transaction():
        _long_statements(conn, request)
        kind = layer_kind(conn, name)
        report = import_frame(
            conn, kind, frame, ImportOptions(crs=crs), dataset=dataset, all_or_nothing=True
        )  # NothingStored: 422
    return {"caller": caller.name, **report.as_dict()}


class SceneRequest(BaseModel):
    """A scene layer a street registers."""

    # Unknown fields are refused (below, naming those there are); the name is checked by
    # create_scene, which says in words what a name may be (pydantic would say a pattern).
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        max_length=200,
        examples=["ebike_theft"],
        json_schema_extra={"pattern": NAME_PATTERN.pattern},
    )
    geometry_type: str = Field(examples=["Point"])
    properties: dict[str, str] = Field(default_factory=dict, examples=[{"count": "integer"}])
    title: str | None = Field(default=None, max_length=200)
    owner_unit: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=2000)

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [str(k)[:40] for k in data if k not in cls.model_fields]
            if unknown:
                raise ValueError(
                    f"unknown field {', '.join(repr(k) for k in unknown[:5])}; a scene takes "
                    + ", ".join(cls.model_fields)
                )
        return data


@router.post(
    "/scenes",
    status_code=status.HTTP_201_CREATED,
    summary="Register a scene layer (engineers, admins)",
    dependencies=[WritesLayers],
)
def post_scene(conn: Connection, caller: Editor, scene: SceneRequest) -> dict[str, Any]:
    """The new layer appears in the catalogue at once; load features with the import routes."""
    return create_scene(
        conn,
        scene.name,
        geometry_type=scene.geometry_type,
        properties=scene.properties,
        title=scene.title,
        owner_unit=scene.owner_unit,
        description=scene.description,
    )


@router.delete(
    "/scenes/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a scene layer (engineers, admins)",
    dependencies=[WritesLayers],
)
def delete_scene(conn: Connection, caller: Editor, name: LayerName) -> Response:
    """Drop the scene's features and its catalogue entry."""
    catalogue.get_layer(conn, name)  # 404 when there is no such layer
    drop_scene(conn, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)  # no body, so no content type


@router.delete(
    # :path, so that a dataset whose name holds a / (sent as %2F) is one name, not two segments
    "/layers/{name}/datasets/{dataset:path}",
    summary="Delete one dataset of a layer (engineers, admins)",
    dependencies=[WritesLayers],
)
def delete_layer_dataset(
    request: Request,
    conn: Connection,
    caller: Editor,
    name: LayerName,
    dataset: Annotated[str, Path(max_length=200)],
) -> dict[str, Any]:
    """Delete every feature of the dataset; the catalogue's count and extent follow. 404 for
    an unknown layer or dataset (naming the datasets there are), 409 when other features
    depend on these."""
    with conn.transaction():
        _long_statements(conn, request)
        deleted = delete_dataset(conn, name, dataset)
    return {"caller": caller.name, "layer": name, "dataset": dataset, "deleted": deleted}
