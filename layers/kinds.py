"""Each layer kind as an import target: its table, geometry family and fields, and the
steps of its own an import takes (a building's height from its floors, a jurisdiction's
coverage, the names a feature gives of others that must exist).

A field says how to parse a value into the schema's unit and which source names mean it
without a mapping (OSM tags, common GIS names, Chinese names). The words themselves, the
synonyms of each field and the vocabularies of the schema's categories, are data:
``layers/data/synonyms.json`` and ``layers/data/vocabularies.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import psycopg

from layers import coverage
from layers.readers import is_none
from layers.values import (
    open_vocabulary,
    parse_bool,
    parse_depth_m,
    parse_diameter_mm,
    parse_elevation_m,
    parse_floors,
    parse_height_m,
    parse_number,
    parse_text,
    parse_year,
    vocabulary,
)
from twin import registry, schema

if TYPE_CHECKING:
    from layers.ingest.report import ImportReport


def _data(name: str) -> dict[str, Any]:
    """One of the package's data files, parsed."""
    text = resources.files("layers").joinpath("data", name).read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


_VOCABULARIES = {name: entry["values"] for name, entry in _data("vocabularies.json").items()}
_SYNONYMS = _data("synonyms.json")


def _words(name: str) -> dict[str, tuple[str, ...]]:
    """A vocabulary: the schema's word -> the words providers use for it."""
    return {word: tuple(synonyms) for word, synonyms in _VOCABULARIES[name].items()}


BUILDING_USES = _words("building_uses")
NETWORKS = _words("networks")
NODE_KINDS = _words("node_kinds")
PUBLIC_SPACE_KINDS = _words("public_space_kinds")
STATUS = _words("status")
UNIT_KINDS = _words("unit_kinds")
LEVELS = _words("levels")
FLOW = _words("flow")
VALVE_STATES = _words("valve_states")
SENSOR_KINDS = _words("sensor_kinds")  # an open list: a kind not here is kept as given
UNKNOWN_USES = frozenset(_VOCABULARIES["unknown_uses"])
UNITLESS_SENSOR_KINDS = frozenset(_VOCABULARIES["unitless_sensor_kinds"])
SENSOR_UNITS: dict[str, str] = {
    **_VOCABULARIES["sensor_units"], **dict.fromkeys(UNITLESS_SENSOR_KINDS, "")
}  # fmt: skip
STOREY_HEIGHT_M: dict[str, float] = {
    use: float(m) for use, m in _VOCABULARIES["storey_height_m"].items() if use != "default"
}
DEFAULT_STOREY_HEIGHT_M = float(_VOCABULARIES["storey_height_m"]["default"])

# Kinds must stay in step with the schema's allowed words (and the data files with both).
assert set(NETWORKS) == set(schema.PIPE_NETWORKS)
assert set(NODE_KINDS) == set(schema.PIPE_NODE_KINDS)
assert set(PUBLIC_SPACE_KINDS) == set(schema.PUBLIC_SPACE_KINDS)
assert set(LEVELS) == set(schema.JURISDICTION_LEVELS)
assert set(UNIT_KINDS) == set(schema.UNIT_KINDS)
assert set(STOREY_HEIGHT_M) == set(BUILDING_USES)
assert set(SENSOR_UNITS) == set(SENSOR_KINDS)

_BUILDING_USE = vocabulary(BUILDING_USES)


def _building_use(value: Any) -> str | None:
    """A building's use in the schema's words; OSM's building=yes (or roof, ruins …) says
    there is a building, not what it is used for: no use, and nothing to report."""
    if str(value).strip().lower() in UNKNOWN_USES:
        return None
    return _BUILDING_USE(value)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Field:
    """A schema field an import can fill."""

    name: str
    parse: Callable[[Any], Any]
    synonyms: tuple[str, ...] = ()
    required: bool = False


@dataclass(frozen=True)
class Reference:
    """A field that names a feature of another layer (the registry says which, and by
    which column), which must exist: in the data base, or (``in_file``, a field of the
    same kind) in the same file."""

    field: str
    message: str  # why a feature is rejected; {!r} is the name it gives
    in_file: str | None = None


# The steps of a kind's own, which the import calls at their moment.
# Before the features of a batch are written: (columns, reasons, report); may fill values
# (marking what it did) and reject features, by setting their reason.
BatchStep = Callable[[dict[str, Any], np.ndarray, "ImportReport"], None]
# Once the features are written: (conn, the keys of the features stored, report).
AfterWrite = Callable[[psycopg.Connection, list[str], "ImportReport"], None]


@dataclass(frozen=True)
class LayerKind:
    """How features of one layer are imported: its fields and its own steps. What the
    layer is (table, geometry family, natural key, elevation, references) is the
    registry's description, ``layer``."""

    layer: registry.Layer
    fields: tuple[Field, ...]
    geometry_optional: bool = False
    fields_in_properties: bool = False  # scenes keep their declared fields in properties
    defaults: dict[str, Any] = field(default_factory=dict)
    # field -> (another field, its value -> this field's value), where the file has none
    defaults_from: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    noun: str = ""  # one feature, as messages call it ("a building footprint")
    # Features that name others in the same file (parents): read whole, in one batch, so
    # those names can be checked against the file and the data base before writing.
    whole_file: bool = False
    references: tuple[Reference, ...] = ()
    prepare_batch: BatchStep | None = None
    after_write: AfterWrite | None = None

    def __post_init__(self) -> None:
        if not self.noun:
            object.__setattr__(self, "noun", f"a feature of {self.name}")
        for ref in self.references:
            assert ref.field in self.layer.references, f"{self.name}.{ref.field}: not a reference"

    @property
    def name(self) -> str:
        """The layer's name, e.g. ``buildings``."""
        return self.layer.name

    @property
    def table(self) -> str:
        """The table the features go to."""
        return self.layer.table

    @property
    def family(self) -> str:
        """``polygon``, ``line`` or ``point``: what geometry the table holds."""
        return self.layer.family

    @property
    def key(self) -> tuple[str, ...]:
        """What a re-import matches features on."""
        return self.layer.key

    @property
    def elevation_column(self) -> str | None:
        """The column taken from the terrain where the file has none."""
        return self.layer.elevation.column if self.layer.elevation else None

    def referred(self, ref: Reference) -> registry.Layer:
        """The layer a reference names features of (by that layer's id column)."""
        return registry.BUILTIN[self.layer.references[ref.field]]

    def field(self, name: str) -> Field:
        """The field of that name; KeyError when the kind has none."""
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(name)


def estimate_heights(columns: dict[str, Any], reasons: np.ndarray, report: ImportReport) -> None:
    """Heights from floors where a building has none, marked as estimated, and counted."""
    heights = np.asarray(columns["height_m"], dtype=object)
    floors = np.asarray(columns["floors"], dtype=object)
    need = is_none(heights) & ~is_none(floors) & is_none(reasons)
    need[need] &= floors[need] != 0
    uses = columns.get("use")
    if need.any():
        use = pd.Series(np.asarray(uses, dtype=object)[need] if uses is not None else None,
                        index=np.arange(int(need.sum())), dtype=object)  # fmt: skip
        per_floor = use.map(STOREY_HEIGHT_M).fillna(DEFAULT_STOREY_HEIGHT_M).to_numpy(float)
        # Levels as given (3.5 for a half storey), not the whole floors they count as.
        levels = np.array([getattr(f, "exact", f) for f in floors[need]], dtype=float)
        estimated = np.round(levels * per_floor, 1)
        heights[need] = estimated.tolist()
    columns["height_m"] = heights
    columns["height_estimated"] = need
    report.estimated_heights += int(need.sum())


def check_coverage(conn: psycopg.Connection, codes: list[str], report: ImportReport) -> None:
    """The coverage of the jurisdictions stored: gaps, overlaps, children outside parents."""
    report.coverage = coverage.check(conn, codes)


def _fields(kind: str, *specs: Field | tuple[Any, ...]) -> tuple[Field, ...]:
    """A kind's fields: shared ones as they are, the others as (name, parse[, required])
    with their synonyms from the data file, which must name exactly these fields."""
    words = _SYNONYMS[kind]
    made = tuple(
        spec
        if isinstance(spec, Field)
        else Field(spec[0], spec[1], tuple(words[spec[0]]), *spec[2:])
        for spec in specs
    )
    own = {spec[0] for spec in specs if not isinstance(spec, Field)}
    assert own == set(words), f"{kind}: synonyms.json names {sorted(set(words) ^ own)}"
    return made


SOURCE_ID = Field("source_id", parse_text, tuple(_SYNONYMS["shared"]["source_id"]))
NAME = Field("name", parse_text, tuple(_SYNONYMS["shared"]["name"]))
# The unit that owns an asset (a unit's code): a rule for that owner answers for it.
OWNER = Field("owner_unit", parse_text, tuple(_SYNONYMS["shared"]["owner_unit"]))
REQUIRED = True

KINDS: dict[str, LayerKind] = {
    "buildings": LayerKind(
        registry.BUILTIN["buildings"],
        _fields("buildings", SOURCE_ID, ("name", parse_text), ("address", parse_text),
                ("use", _building_use), ("height_m", parse_height_m), ("floors", parse_floors),
                ("base_elevation_m", parse_elevation_m), OWNER),
        noun="a building footprint",
        prepare_batch=estimate_heights,
    ),
    "public_spaces": LayerKind(
        registry.BUILTIN["public_spaces"],
        _fields("public_spaces", SOURCE_ID, NAME,
                ("kind", vocabulary(PUBLIC_SPACE_KINDS), REQUIRED), OWNER),
        noun="a public space",
    ),
    "pipes": LayerKind(
        registry.BUILTIN["pipes"],
        _fields("pipes", SOURCE_ID, ("network", vocabulary(NETWORKS), REQUIRED),
                ("diameter_mm", parse_diameter_mm), ("material", parse_text),
                ("depth_m", parse_depth_m), ("invert_start_m", parse_elevation_m),
                ("invert_end_m", parse_elevation_m), ("install_year", parse_year),
                ("status", vocabulary(STATUS)), ("flow_direction", vocabulary(FLOW)), OWNER),
        defaults={"status": "in_service", "flow_direction": "unknown"},
        noun="a pipe",
    ),
    "pipe_nodes": LayerKind(
        registry.BUILTIN["pipe_nodes"],
        _fields("pipe_nodes", SOURCE_ID, ("network", vocabulary(NETWORKS), REQUIRED),
                ("kind", vocabulary(NODE_KINDS), REQUIRED), ("state", vocabulary(VALVE_STATES)),
                ("operable", parse_bool), ("depth_m", parse_depth_m),
                ("ground_elevation_m", parse_elevation_m), OWNER),
        defaults={"operable": True},
        noun="a pipe node",
    ),
    "sensors": LayerKind(
        registry.BUILTIN["sensors"],
        _fields("sensors", ("device_id", parse_text, REQUIRED),
                ("kind", open_vocabulary(SENSOR_KINDS), REQUIRED),
                ("unit_of_measure", parse_text, REQUIRED), ("threshold_low", parse_number),
                ("threshold_high", parse_number), ("elevation_m", parse_elevation_m),
                ("online", parse_bool), OWNER),
        defaults={"online": True},
        defaults_from={"unit_of_measure": ("kind", SENSOR_UNITS)},
        noun="a sensor",
    ),
    "jurisdictions": LayerKind(
        registry.BUILTIN["jurisdictions"],
        _fields("jurisdictions", ("code", parse_text, REQUIRED), ("name", parse_text, REQUIRED),
                ("level", vocabulary(LEVELS), REQUIRED), ("parent_code", parse_text)),
        noun="a jurisdiction",
        whole_file=True,
        references=(
            Reference("parent_code", in_file="code",
                      message="parent jurisdiction {!r} is neither in the file nor in the data base"),
        ),
        after_write=check_coverage,
    ),
    "units": LayerKind(
        registry.BUILTIN["units"],
        _fields("units", ("code", parse_text, REQUIRED), ("name", parse_text, REQUIRED),
                ("kind", vocabulary(UNIT_KINDS), REQUIRED),
                ("jurisdiction_code", parse_text, REQUIRED), ("phone", parse_text)),
        geometry_optional=True,
        noun="a unit",
        whole_file=True,
        references=(
            Reference("jurisdiction_code",
                      message="jurisdiction {!r} is not in the data base (import jurisdictions first)"),
        ),
    ),
}  # fmt: skip
