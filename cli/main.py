"""``main()``: the command line built from the command groups, settings read, errors a
person can act on turned into one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

import psycopg
from pydantic import ValidationError
from pydantic_settings import SettingsError

from cli import datasets, db, demo, imports, layers, scenes, serve, terrain
from cli.common import console
from twin.errors import TwinError
from twin.settings import Settings

# In the order ``twin --help`` lists them.
GROUPS = (db, demo, imports, scenes, terrain, datasets, layers, serve)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``twin`` console command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        settings = Settings()
        return int(args.run(settings, args) or 0)
    except ValidationError as exc:
        problems = "; ".join(
            f"TWIN_{'_'.join(str(p) for p in e['loc']).upper()}={str(e.get('input'))[:40]!r}: "
            + e["msg"].replace("Input should be", "must be").split(", unable")[0]
            for e in exc.errors()
        )
        console.print(f"twin: error: bad setting: {problems}", highlight=False, markup=False)
    except SettingsError as exc:
        # e.g. TWIN_API_KEYS that is not JSON: pydantic-settings names the field.
        field = re.search(r'field "(\w+)"', str(exc))
        said = (
            f"TWIN_{field[1].upper()} is not JSON of the form it takes"
            + (' ({"key": "caller"})' if field[1] == "api_keys" else "")
            if field
            else str(exc)
        )
        console.print(f"twin: error: bad setting: {said}", highlight=False, markup=False)
    except TwinError as exc:
        console.print(f"twin: error: {exc}", highlight=False, markup=False)
    except psycopg.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        console.print(f"twin: data base error: {message}", highlight=False, markup=False)
    except KeyboardInterrupt:
        console.print("twin: interrupted")
        return 130
    return 1


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``twin db|demo|import|scene|terrain|datasets|layers|serve|up``."""
    parser = argparse.ArgumentParser(
        prog="twin",
        description="The one map (一张图): a spatial digital twin of the city on PostGIS.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(commands)
    return parser
