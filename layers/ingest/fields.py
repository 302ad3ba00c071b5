"""The field plan: which of a file's fields fill which of the layer's, decided once from
the first batch; each batch's values parsed into the schema's units; what could not be
read kept in properties and counted for the report."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from layers.ingest.reasons import reject, reject_one
from layers.ingest.report import ImportOptions
from layers.ingest.storable import json_safe, python_values, value_at
from layers.kinds import LayerKind
from layers.readers import Column, FeatureFrame, is_none
from layers.values import BLANK_WORDS, as_given, is_blank, parse_text
from twin.errors import InvalidInput

_BLANK_WORDS = pa.array(sorted(BLANK_WORDS), pa.string())


def _normal(name: str) -> str:
    """A field name as synonyms are matched: lower case, no spaces, dashes or underscores."""
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


class FieldPlan:
    """Which source fields fill which schema fields, decided once from the first batch,
    and what could not be read, counted over every batch."""

    def __init__(self, kind: LayerKind, frame: FeatureFrame, options: ImportOptions) -> None:
        self.kind = kind
        known = {f.name for f in kind.fields}
        for option in ("mapping", "values", "defaults"):
            for target in getattr(options, option):
                if target not in known:
                    raise InvalidInput(
                        f"{kind.name} has no field {target!r} (its fields: "
                        f"{', '.join(sorted(known))})",
                        option=option,
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
                        f"have (it has: {', '.join(frame.fields) or 'no fields'})",
                        option="mapping",
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
                raise InvalidInput(
                    f"the value {text!r} given to every feature's {name}: {exc}", option="values"
                ) from exc
        for name, text in options.defaults.items():
            try:
                self.fallback[name] = kind.field(name).parse(text)
            except ValueError as exc:
                raise InvalidInput(
                    f"the default {text!r} given for {name}: {exc}", option="defaults"
                ) from exc
        # The dataset's owner (--owner) is the owner of each of its assets that names none.
        if options.owner_unit and "owner_unit" in known and "owner_unit" not in options.values:
            self.fallback.setdefault("owner_unit", parse_text(options.owner_unit))
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
            name: [json_safe(v) for v in python_values(frame.fields[name])] for name in self.kept
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
                        words.setdefault(str(value_at(raw, int(i))).strip(), None)
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
                        properties[i][kept] = json_safe(as_given(value_at(raw, int(i))))
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
                    reject_one(reasons, i, f"{f.name} {unread_why[i]}")
                hint = (
                    f"map a field of the file to {f.name}, give a default {f.name} for the "
                    "gaps, or one value for all"
                )
                reject(reasons, missing, f"no {f.name} ({hint})")
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
