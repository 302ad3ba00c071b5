"""What the commands share: the consoles, progress bars, ``--json`` output and ``prepare``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import make_url

from twin import db
from twin.settings import Settings

# Messages and progress for people on stderr; a command's output (reports, JSON) on stdout.
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def prepare(settings: Settings) -> str:
    """``db.prepare`` with a spinner: making a cluster the first time takes a few seconds."""
    database = settings.database
    where = (
        "the data base" if database.database_url else f"the embedded PostGIS in {database.data_dir}"
    )
    cluster = None if database.database_url else db.embedded_cluster(settings)
    if cluster is not None and not cluster.state_file.exists() and not cluster.foreign_files():
        # Said out loud: a command run from another folder would otherwise quietly work
        # on a new, empty map.
        console.print(
            f"no embedded PostGIS in {database.data_dir.resolve()} yet: making a new, empty one "
            "(set TWIN_DATA_DIR to use another)",
            highlight=False,
        )
    with console.status(f"starting {where}, migrating the schema…"):
        return db.prepare(settings)


# In a log, a line this often for a step still running: minutes without a line (the demo's
# history of incidents) looked like a command that hung.
LOG_EVERY_S = 15.0


@contextlib.contextmanager
def progress_bars() -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(step, done, total)`` callback drawing one rich bar per step; in a log
    or a pipe, a line now and then for a step that runs long (see ``progress_lines``)."""
    if not console.is_terminal:
        yield progress_lines()
        return
    bars = Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, int] = {}

    def progress(step: str, done: int, total: int) -> None:
        if step not in tasks:
            tasks[step] = bars.add_task(step, total=total)
        bars.update(tasks[step], completed=done, total=total)

    with bars:
        yield progress


def progress_lines() -> Callable[[str, int, int], None]:
    """``progress(step, done, total)`` for a log: quiet for a quick step (the command's
    summary says what it did), a line every ``LOG_EVERY_S`` for one still running, and a
    last one when that step is done, with the time it took, as its bar would show."""
    started: dict[str, float] = {}
    last_line: dict[str, float] = {}
    said_done: dict[str, bool] = {}

    def progress(step: str, done: int, total: int) -> None:
        now = time.monotonic()
        start = started.setdefault(step, now)
        finished = done >= total
        due = now - last_line.get(step, start) >= LOG_EVERY_S
        closing = finished and step in last_line and not said_done[step]
        if not (due or closing):
            return
        last_line[step], said_done[step] = now, finished
        took = timedelta(seconds=round(now - start))
        console.print(f"{step}: {done:,}/{total:,} ({took})", highlight=False, markup=False)

    return progress


def as_json(value: object) -> str:
    """JSON for ``--json``: times in ISO 8601 as the HTTP API writes them, text as it is."""

    def plain(item: object) -> str:
        return item.isoformat() if isinstance(item, date | datetime) else str(item)

    return json.dumps(value, default=plain, ensure_ascii=False)


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)


# What ``add_subparsers`` returns, to which each command group adds its commands.
Commands = argparse._SubParsersAction  # argparse has no public name for it
