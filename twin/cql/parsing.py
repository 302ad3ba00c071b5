"""The one door to parsing a filter: its language checked, then read as CQL2 text or JSON."""

from __future__ import annotations

from typing import Any

from twin.cql.cql2_json import parse_json
from twin.cql.cql2_text import parse_text
from twin.cql.words import MAX_DEPTH, refuse
from twin.errors import InvalidInput

LANGS = ("cql2-text", "cql2-json")


def parse(text: str, lang: str = "cql2-text") -> Any:
    """The filter's syntax tree; InvalidInput naming the problem when it does not parse."""
    if lang == "cql-text":  # the draft's name, which GDAL 3.6 sends; its filters are CQL2 text
        lang = "cql2-text"
    if lang not in LANGS:
        raise InvalidInput(f"filter-lang {lang[:40]!r}: use cql2-text or cql2-json")
    if not text.strip():
        refuse("it is empty; leave filter out to select everything")
    try:
        return parse_json(text) if lang == "cql2-json" else parse_text(text)
    except RecursionError:
        refuse(f"nested more than {MAX_DEPTH} levels deep")
