"""Format dispatch: which reader a file needs, and whether it is an EPANET network (two
layers, tied together) or a vector file read into one layer. It stands above both the
pipeline and layers.epanet, which only call down into the pipeline."""

from __future__ import annotations

from pathlib import Path

import psycopg

from layers.epanet import import_epanet
from layers.ingest.pipeline import import_batches, import_frame
from layers.ingest.report import (
    ImportOptions,
    ImportReport,
    Progress,
    check_options,
    default_dataset,
)
from layers.kinds import KINDS, LayerKind
from layers.readers import READABLE_SUFFIXES, open_features, read_features
from layers.scenes import scene_kind
from layers.values import refuse_nul
from twin import registry
from twin.errors import NotFound

EPANET_SUFFIX = ".inp"
# What an import reads from one file (an upload is one file): the formats of
# layers.readers, and EPANET's.
IMPORTABLE_SUFFIXES = frozenset({*READABLE_SUFFIXES, EPANET_SUFFIX})


def import_file(
    conn: psycopg.Connection,
    layer: str,
    path: Path | str,
    options: ImportOptions | None = None,
    *,
    progress: Progress | None = None,
) -> ImportReport:
    """Read ``path`` and import it into ``layer`` (a built-in kind or a scene).

    The dataset is, unless named, the file's name (``options.source``, or the path's);
    an import that stores no feature raises NothingStored."""
    options = options or ImportOptions()
    check_options(options)
    kind = layer_kind(conn, layer)
    dataset = options.dataset or default_dataset(options.source or Path(path).name, options.layer)
    refuse_nul("the dataset (the file's name)", dataset, option="dataset")
    if Path(path).suffix.lower() == EPANET_SUFFIX:
        return import_epanet(conn, kind, Path(path), options, dataset=dataset, progress=progress)
    if kind.whole_file:
        frame = read_features(path, layer=options.layer, name=options.source)
        return import_frame(conn, kind, frame, options, dataset=dataset, progress=progress)
    with open_features(path, layer=options.layer, name=options.source) as reader:
        return import_batches(conn, kind, reader, options, dataset=dataset, progress=progress)


def layer_kind(conn: psycopg.Connection, layer: str) -> LayerKind:
    """The import target called ``layer``: a built-in kind or a registered scene, as the
    registry resolves it."""
    try:
        described = registry.resolve(conn, layer)
    except NotFound:
        described = None
    if described is not None and described.kind == "scene":
        return scene_kind(conn, described.name)
    if described is None or described.name not in KINDS:
        names = ", ".join(KINDS)
        raise NotFound(
            f"no layer {layer!r} to import into (built-in: {names}; or a scene)"
        ) from None
    return KINDS[described.name]
