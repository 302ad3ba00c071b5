"""Import a provider's features into a layer: map fields, parse values, convert the CRS,
repair or reject geometries, and upsert by source id in one transaction.

Nothing is dropped silently: a feature that cannot be used is reported with its source
id and the reason, a value that cannot be read is kept in the feature's properties and
noted, and fields the schema has no column for are kept as properties. An import that
stores no feature at all is an error (NothingStored), and changes nothing.

By concern: ``report`` (options and report), ``fields`` (the field plan), ``geometry``,
``keys``, ``storable``, ``writer`` (the staged COPY), ``pipeline`` (the batch loop) and
``files`` (format dispatch: a vector file, or an EPANET network through layers.epanet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from layers.ingest.pipeline import import_batches, import_frame
from layers.ingest.report import (
    ImportOptions,
    ImportReport,
    Progress,
    Rejection,
    check_options,
    check_stored,
    default_dataset,
    group_rejections,
)

if TYPE_CHECKING:
    from layers.ingest.files import IMPORTABLE_SUFFIXES, import_file, layer_kind

# Format dispatch stands above layers.epanet, which imports the pipeline: it is loaded when
# first asked for, so that importing layers.epanet first does not come back round to it.
_DISPATCH = ("IMPORTABLE_SUFFIXES", "import_file", "layer_kind")


def __getattr__(name: str) -> Any:
    if name in _DISPATCH:
        from layers.ingest import files

        return getattr(files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IMPORTABLE_SUFFIXES",
    "ImportOptions",
    "ImportReport",
    "Progress",
    "Rejection",
    "check_options",
    "check_stored",
    "default_dataset",
    "group_rejections",
    "import_batches",
    "import_file",
    "import_frame",
    "layer_kind",
]
