"""``twin import LAYER FILE``: a provider's file into a layer, with its report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.common import as_json, console, out, prepare, progress_bars
from layers.coverage import describe
from layers.incidents import importer
from layers.ingest import ImportOptions, ImportReport, group_rejections, import_file
from layers.readers import check_path
from twin import db
from twin.crs import resolve_crs
from twin.errors import NothingStored, TwinError
from twin.settings import Settings

# The options of a layer's import, which the category and responsibility files do not take.
LAYER_OPTIONS = {"crs": "--crs", "source_layer": "--layer", "map": "--map",
                 "mapping": "--mapping", "set": "--set", "default": "--default",
                 "provider": "--provider", "owner": "--owner", "licence": "--licence",
                 "cadence": "--cadence"}  # fmt: skip


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    """Import a file into a layer (or the categories, or the responsibility list) and print
    what happened."""
    if importer(args.layer) is not None:
        return _import_table(settings, args)
    mapping = _pairs(args.map, "--map")
    if args.mapping:
        mapping = {**_mapping_file(args.mapping), **mapping}
    options = ImportOptions(
        dataset=args.dataset,
        crs=args.crs,
        layer=args.source_layer,
        mapping=mapping,
        values=_pairs(args.set, "--set"),
        defaults=_pairs(args.default, "--default"),
        provider=args.provider,
        owner_unit=args.owner,
        licence=args.licence,
        update_cadence=args.cadence,
    )
    # What can be checked without the data base is, first: a mistyped CRS or a missing
    # file should not start (or make) a cluster before saying so.
    if args.crs:
        resolve_crs(args.crs, "crs")
    check_path(Path(args.path))
    url = prepare(settings)
    failed = None
    try:
        with progress_bars() as progress, db.connect(url) as conn:
            report = import_file(conn, args.layer, args.path, options, progress=progress)
    except NothingStored as exc:  # the report says why: printed as any other, then exit 1
        report, failed = exc.report, str(exc)
    return _print_report(args, report, failed)


def _print_report(args: argparse.Namespace, report: ImportReport, failed: str | None) -> int:
    if args.json:
        out.print_json(as_json(report.as_dict()))
    else:
        # The report is the command's output: stdout, so it can be kept in a file.
        out.print(report.summary(), highlight=False, markup=False)
        for part in report.parts:
            for line in part.notes + group_rejections(part):
                out.print(f"  {part.layer}: {line}", highlight=False, markup=False)
        if report.coverage is not None:
            for line in describe(report.coverage):
                out.print(f"  {line}", highlight=False, markup=False)
    if failed is not None:
        console.print(f"twin: error: {failed}", highlight=False, markup=False)
        return 1
    return 3 if any(p.rejected for p in report.parts) else 0


def _import_table(settings: Settings, args: argparse.Namespace) -> int:
    """``twin import categories FILE`` or ``twin import responsibilities FILE``."""
    given = [flag for name, flag in LAYER_OPTIONS.items() if getattr(args, name, None)]
    if given:
        raise TwinError(f"{', '.join(given)} do(es) not apply to twin import {args.layer}; it "
                        "takes --dataset and --json")  # fmt: skip
    run = importer(args.layer)
    assert run is not None
    check_path(Path(args.path))
    url = prepare(settings)
    failed = None
    try:
        with db.connect(url) as conn:
            report = run(conn, Path(args.path), dataset=args.dataset)
    except NothingStored as exc:
        report, failed = exc.report, str(exc)
    return _print_report(args, report, failed)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise TwinError(f"{flag} {item!r}: write it as NAME=VALUE")
        pairs[name.strip()] = value.strip()
    return pairs


def _mapping_file(path: Path) -> dict[str, str]:
    """The --mapping file's JSON object of field names to source field names."""
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError as exc:  # the C decoder's depth limit: a message, not a traceback
        raise TwinError(f"cannot read the mapping file {path}: nested too deeply") from exc
    except (OSError, ValueError) as exc:
        raise TwinError(f"cannot read the mapping file {path}: {exc}") from exc
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise TwinError(f"{path} must be a JSON object of field names to source field names")
    return mapping
