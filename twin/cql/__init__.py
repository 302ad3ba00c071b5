"""CQL2 filters (text and JSON) compiled to parameterised SQL.

pygeofilter's grammar parses CQL2 text (with our transformer, which checks literals as it
reads them); CQL2-JSON is read here, since it is JSON already and pygeofilter 0.4 misreads
parts of it (``between``, ``casei``). Both give pygeofilter's syntax tree, which this package
walks to write SQL: every value a literal composed by psycopg, every property name checked
against the collection's queryables, every operand's type checked before anything reaches
the data base. Anything it does not know is refused in the client's words, never passed
through and never answered with the parser's own text.

By concern: ``parsing`` (the door: ``parse``), ``cql2_text`` and ``cql2_json`` (the two
readers), ``literals`` (numbers, dates, intervals), ``checks`` (text, geometries, positions),
``operands`` (values as typed SQL), ``to_sql`` (conditions: ``compile_filter``) and
``words`` (the refusals and names they share).
"""

from __future__ import annotations

from twin.cql.operands import Column
from twin.cql.parsing import LANGS, parse
from twin.cql.to_sql import compile_filter
from twin.cql.words import MAX_DEPTH, TimeIntersects

__all__ = ["LANGS", "MAX_DEPTH", "Column", "TimeIntersects", "compile_filter", "parse"]
