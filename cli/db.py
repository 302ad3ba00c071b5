"""``twin db start|stop|status|url|migrate``: the data base, embedded by default."""

from __future__ import annotations

import argparse

from cli.common import as_json, console, out, prepare, safe_url
from twin import db
from twin.errors import TwinError
from twin.settings import Settings


def cmd_db_start(settings: Settings, args: argparse.Namespace) -> int:
    """Start the embedded cluster, or check the configured server."""
    url = prepare(settings)
    where = (
        "configured server"
        if settings.database.database_url
        else f"embedded cluster in {settings.database.data_dir}"
    )
    console.print(f"data base ready ({where}): {safe_url(url)}", highlight=False)
    return 0


def cmd_db_stop(settings: Settings, args: argparse.Namespace) -> int:
    """Stop the embedded cluster."""
    if settings.database.database_url:
        raise TwinError("TWIN_DATABASE_URL is set: that server is not ours to stop")
    stopped = db.embedded_cluster(settings).stop()
    console.print("stopped" if stopped else "not running")
    return 0


def cmd_db_status(settings: Settings, args: argparse.Namespace) -> int:
    """Report where the data base is and whether it is up; exit 1 when it is not."""
    if settings.database.database_url:
        url = db.libpq_url(settings.database.database_url)
        db.check_reachable(url)
        report: dict[str, object] = {"kind": "configured", "url": safe_url(url), "running": True}
        report["schema_revision"] = db.schema_revision(url)
    else:
        report = {"kind": "embedded", **db.embedded_cluster(settings).status()}
    report["schema_head"] = db.head_revision()
    out.print_json(as_json(report))
    return 0 if report.get("running") else 1


def cmd_db_url(settings: Settings, args: argparse.Namespace) -> int:
    """Print the libpq URL (for psql, ogr2ogr, QGIS)."""
    out.print(db.database_url(settings), highlight=False, soft_wrap=True)
    return 0


def cmd_db_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Apply migrations."""
    url = prepare(settings)
    console.print(f"schema at revision {db.schema_revision(url)}")
    return 0
