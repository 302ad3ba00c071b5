"""What a person says about an import (ImportOptions) and what the import did
(ImportReport): the rule that an import storing nothing is an error lives here too."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from layers.datasets import refuse_control
from layers.values import refuse_nul
from twin.errors import NothingStored

Progress = Callable[[str, int, int], None]
# The options a person gives, in words (each door names them its own way: see
# InvalidInput.option); those that enter the inventory refuse control characters too.
OPTION_WORDS = {
    "dataset": "the dataset", "crs": "the CRS", "layer": "the layer",
    "source": "the file's name", "provider": "the provider", "owner_unit": "the owner",
    "licence": "the licence", "update_cadence": "the update cadence",
}  # fmt: skip
INVENTORY_OPTIONS = ("dataset", "provider", "owner_unit", "licence", "update_cadence")


@dataclass
class ImportOptions:
    """What the person importing says about the file."""

    dataset: str | None = None  # re-imports of one source use the same dataset name
    crs: str | None = None  # overrides (or supplies) the file's CRS
    layer: str | None = None  # the layer inside a multi-layer file
    source: str | None = None  # the file's name in messages and the inventory (an upload's)
    mapping: dict[str, str] = field(default_factory=dict)  # schema field -> source field
    values: dict[str, str] = field(default_factory=dict)  # schema field -> value for all
    defaults: dict[str, str] = field(default_factory=dict)  # schema field -> value where missing
    provider: str | None = None
    owner_unit: str | None = None
    licence: str | None = None
    update_cadence: str | None = None


@dataclass
class Rejection:
    """A feature that was not imported, and why."""

    source_id: str
    reason: str


@dataclass
class ImportReport:
    """What an import did: the summary a person reads at the end."""

    layer: str
    dataset: str
    source: str
    source_crs: str | None = None
    read: int = 0
    inserted: int = 0
    updated: int = 0
    repaired: int = 0
    estimated_heights: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # schema field -> values emptied because they were placeholders (无, N/A, -, null …)
    emptied: dict[str, int] = field(default_factory=dict)
    coverage: dict[str, Any] | None = None
    related: list[ImportReport] = field(default_factory=list)  # e.g. the nodes of a network

    @property
    def parts(self) -> tuple[ImportReport, ...]:
        """This report and those of the layers imported with it (a network's nodes)."""
        return (self, *self.related)

    @property
    def stored(self) -> int:
        """Features inserted or updated, over every part."""
        return sum(p.inserted + p.updated for p in self.parts)

    def summary(self) -> str:
        """One line per layer: read, inserted, updated, repaired, rejected."""
        return "\n".join([self._line(), *(r._line() for r in self.related)])

    def _line(self) -> str:
        return (
            f"{self.layer} from {self.source} (dataset {self.dataset}): read {self.read:,}, "
            f"inserted {self.inserted:,}, "
            f"updated {self.updated:,}, repaired {self.repaired:,}, "
            f"rejected {len(self.rejected):,}"
            + (f", heights estimated {self.estimated_heights:,}" if self.estimated_heights else "")
            + (f" (CRS {self.source_crs})" if self.source_crs else "")
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON answers."""
        return asdict(self)


def default_dataset(file_name: str, layer: str | None) -> str:
    """The dataset a file's features belong to when none is named: the file's name, and the
    layer read from it (two layers of one GeoPackage are two datasets, not one)."""
    stem = Path(file_name).stem
    return f"{stem}:{layer}" if layer else stem


def check_options(options: ImportOptions) -> None:
    """InvalidInput for an option the data base cannot store (a NUL character), or an
    inventory name holding a control character, naming it: before any feature is read."""
    for name, words in OPTION_WORDS.items():  # refuse_control refuses NUL too
        refuse = refuse_control if name in INVENTORY_OPTIONS else refuse_nul
        refuse(words, getattr(options, name), option=None if name == "source" else name)
    for name in ("mapping", "values", "defaults"):
        for target, value in getattr(options, name).items():
            refuse_nul(f"a field name in the {name}", target, option=name)
            refuse_nul(f"{target}= in the {name}", value, option=name)


def check_stored(report: ImportReport) -> None:
    """NothingStored (and so a roll back) for an import that stored no feature at all:
    the file held none, or none could be stored (the first reasons are named)."""
    if report.stored > 0:
        return
    parts = report.parts
    read = sum(p.read for p in parts)
    if not read:
        message = f"nothing imported into {report.layer}: {report.source} holds no features"
    else:
        reasons = "; ".join(line for p in parts for line in group_rejections(p, limit=3))
        message = (
            f"nothing imported into {report.layer}: none of {read:,} features could be stored"
            f" ({reasons})"
        )
    raise NothingStored(message, report)


def group_rejections(report: ImportReport, limit: int = 20) -> list[str]:
    """Rejections as lines for a person: each reason with its first source ids."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for r in report.rejected:
        by_reason[r.reason].append(r.source_id)
    lines = []
    for reason, ids in sorted(by_reason.items(), key=lambda item: -len(item[1]))[:limit]:
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5:,} more" if len(ids) > 5 else "")
        lines.append(f"{len(ids):,} rejected: {reason}: {shown}")
    return lines
