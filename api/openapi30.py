"""The API document as OpenAPI 3.0, for clients that read no 3.1 (GDAL 3.6, QGIS 3.22).

FastAPI writes OpenAPI 3.1, whose schemas are JSON Schema 2020-12. OGC API Features
clients ask for `application/vnd.oai.openapi+json;version=3.0` and read it with 3.0's
rules, so `to_openapi30` rewrites what 3.1 added: `null` as a type (`nullable`), `const`,
numeric `exclusiveMinimum`/`exclusiveMaximum`, `examples` in schemas, `contentMediaType`
for uploads, `$ref` beside other keywords. It also names the items' `limit` parameter in
`components.parameters` too, where QGIS looks for the page size limits (GDAL reads them
in the items path).
"""

from __future__ import annotations

import copy
from typing import Any

OPENAPI_30 = "application/vnd.oai.openapi+json;version=3.0"
OPENAPI_31 = "application/vnd.oai.openapi+json;version=3.1"
ITEMS_PATH = "/collections/{collection_id}/items"

# Keywords of a Schema Object whose value is one schema, a list, or a map of schemas.
_ONE_SCHEMA = ("items", "not", "additionalProperties")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_MAPS = ("properties",)
# JSON Schema 2020-12 keywords OpenAPI 3.0 has no equivalent for; they only describe.
_DROPPED = ("$schema", "$id", "$comment", "$defs", "contentEncoding", "patternProperties",
            "prefixItems", "unevaluatedProperties", "dependentRequired", "propertyNames")  # fmt: skip


def wanted_version(accept: str | None) -> str:
    """The OpenAPI version an Accept header asks for: "3.1" when only 3.1 is named.

    GDAL and QGIS send `application/vnd.oai.openapi+json;version=3.0, ...,
    application/json`; a plain or absent Accept gets 3.0 too, which every OGC client reads.
    """
    for part in (accept or "").split(","):
        media, *params = (p.strip().lower() for p in part.split(";"))
        if media not in ("application/vnd.oai.openapi+json", "application/openapi+json"):
            continue
        version = next((p.split("=", 1)[1] for p in params if p.startswith("version=")), "")
        quality = next((p.split("=", 1)[1] for p in params if p.startswith("q=")), "1")
        if quality.strip() in ("0", "0.0", "0.00", "0.000"):
            continue
        if version.strip('"').startswith("3.0"):
            return "3.0"  # the first acceptable named version wins; 3.0 is what clients read
        if version.strip('"').startswith("3.1"):
            return "3.1"
    return "3.0"


def to_openapi30(document: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.0.3 rendering of FastAPI's 3.1 ``document`` (which is left unchanged)."""
    doc = copy.deepcopy(document)
    doc["openapi"] = "3.0.3"
    for key in ("webhooks", "jsonSchemaDialect"):
        doc.pop(key, None)
    info = doc.get("info", {})
    info.pop("summary", None)
    info.get("license", {}).pop("identifier", None)

    components = doc.setdefault("components", {})
    for name, schema in components.get("schemas", {}).items():
        components["schemas"][name] = _schema(schema)
    for parameter in components.get("parameters", {}).values():
        _parameter(parameter)
    for path_item in doc.get("paths", {}).values():
        for parameter in path_item.get("parameters", []):
            _parameter(parameter)
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                _parameter(parameter)
            body = operation.get("requestBody", {})
            _content(body.get("content", {}))
            for response in operation.get("responses", {}).values():
                _content(response.get("content", {}))
                for header in response.get("headers", {}).values():
                    if "schema" in header:
                        header["schema"] = _schema(header["schema"])
    _name_the_limit(doc)
    return doc


def _parameter(parameter: dict[str, Any]) -> None:
    if "schema" in parameter:
        parameter["schema"] = _schema(parameter["schema"])
    if parameter.get("in") == "query":
        # 3.0's defaults, written out: QGIS reads a query parameter only with both.
        parameter.setdefault("style", "form")
        parameter.setdefault("explode", parameter.get("schema", {}).get("type") != "array")


def _content(content: dict[str, Any]) -> None:
    for media in content.values():
        if "schema" in media:
            media["schema"] = _schema(media["schema"])


def _schema(schema: Any) -> Any:
    """One Schema Object, and those inside it, in 3.0's terms."""
    if not isinstance(schema, dict):
        return schema  # `additionalProperties: true` and the like
    out = {k: v for k, v in schema.items() if k not in _DROPPED}
    for key in _ONE_SCHEMA:
        if key in out:
            out[key] = _schema(out[key])
    for key in _SCHEMA_LISTS:
        if key in out:
            out[key] = [_schema(s) for s in out[key]]
    for key in _SCHEMA_MAPS:
        if key in out:
            out[key] = {name: _schema(s) for name, s in out[key].items()}

    if isinstance(out.get("type"), list):  # ["string", "null"]
        types = [t for t in out["type"] if t != "null"]
        if len(types) < len(out["type"]):
            out["nullable"] = True
        if len(types) == 1:
            out["type"] = types[0]
        else:
            del out["type"]
            if types:
                out["anyOf"] = [{"type": t} for t in types]
    if out.get("type") == "null":
        del out["type"]
        out["nullable"] = True
        out["enum"] = [None]
    for key in ("anyOf", "oneOf"):
        if key in out:
            out = _drop_null_alternative(out, key)
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[inclusive] = value
            out[bound] = True
    if "examples" in out:
        examples = out.pop("examples")
        if isinstance(examples, list) and examples:
            out.setdefault("example", examples[0])
    if "contentMediaType" in out:  # an uploaded file
        out.pop("contentMediaType")
        out["type"] = "string"
        out["format"] = "binary"
    if "$ref" in out and len(out) > 1:  # 3.0 ignores what stands beside a $ref
        out["allOf"] = [{"$ref": out.pop("$ref")}, *out.get("allOf", [])]
    return out


def _drop_null_alternative(schema: dict[str, Any], key: str) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` is X with `nullable: true` in 3.0."""
    alternatives = schema[key]
    others = [
        s for s in alternatives if s != {"type": "null"} and s != {"enum": [None], "nullable": True}
    ]
    if len(others) == len(alternatives):
        return schema
    out = {k: v for k, v in schema.items() if k != key}
    out["nullable"] = True
    if len(others) == 1 and "$ref" not in others[0]:
        inner = others[0]
        for name, value in inner.items():
            out.setdefault(name, value)  # the outer title and description stay
    elif len(others) == 1:
        out["allOf"] = [others[0], *out.get("allOf", [])]
    elif others:
        out[key] = others
    return out


def _name_the_limit(doc: dict[str, Any]) -> None:
    """Copy the items' `limit` parameter to `components.parameters.limit`.

    QGIS takes the page size from `components/parameters/limit/schema` (`default` and
    `maximum`); GDAL reads the items path's own `limit` parameter, which stays as it is.
    """
    operation = doc.get("paths", {}).get(ITEMS_PATH, {}).get("get", {})
    for parameter in operation.get("parameters", []):
        if parameter.get("name") == "limit" and parameter.get("in") == "query":
            doc["components"].setdefault("parameters", {})["limit"] = copy.deepcopy(parameter)
            return


# What the items' filter-lang takes. GDAL 3.6 sends a filter to the server only when this
# enum names "cql-text" (the draft's name; twin.cql reads it as cql2-text).
FILTER_LANGS = ["cql2-text", "cql2-json", "cql-text"]


def with_collections(doc: dict[str, Any], collections: dict[str, dict[str, str]]) -> dict[str, Any]:
    """``doc`` (3.0) with a path of its own for each collection's items.

    ``collections`` maps a collection's name to its queryables (name -> JSON type). GDAL
    reads the parameters of `/collections/NAME/items` only: with `filter-lang` naming
    cql-text and a parameter per property, it sends `-where` filters to the server instead
    of reading every page to filter them itself. Each property parameter is an equality
    filter (`?height_m=30`), as the items route takes it.
    """
    generic = doc.get("paths", {}).get(ITEMS_PATH, {}).get("get")
    if generic is None:
        return doc
    out = dict(doc)
    out["paths"] = dict(doc["paths"])
    for name, queryables in sorted(collections.items()):
        operation = copy.deepcopy(generic)
        operation["operationId"] = f"{generic.get('operationId', 'items')}_{name}"
        operation["summary"] = f"{name}: features (public)"
        parameters = [p for p in operation.get("parameters", []) if p.get("in") != "path"]
        for parameter in parameters:
            if parameter.get("name") == "filter-lang":
                parameter["schema"] = {**parameter.get("schema", {}), "enum": FILTER_LANGS}
        taken = {p.get("name") for p in parameters}
        for prop, kind in queryables.items():
            if kind not in ("string", "number", "integer", "boolean") or prop in taken:
                continue
            parameters.append({
                "name": prop, "in": "query", "required": False,
                "style": "form", "explode": False,
                "description": f"features whose {prop} equals this",
                "schema": {"type": kind},
            })  # fmt: skip
        operation["parameters"] = parameters
        out["paths"][f"/collections/{name}/items"] = {"get": operation}
    return out


def document(app: Any, version: str) -> dict[str, Any]:
    """The app's API document in OpenAPI ``version`` ("3.0" or "3.1"), converted once."""
    source = app.openapi()
    if version == "3.1":
        return source
    cached = getattr(app.state, "openapi30", None)
    if cached is None or cached[0] is not source:
        cached = (source, to_openapi30(source))
        app.state.openapi30 = cached
    return cached[1]
