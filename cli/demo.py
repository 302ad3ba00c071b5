"""``twin demo``: generate and load the demo city (replacing only the previous demo)."""

from __future__ import annotations

import argparse
import time

from cli.common import console, prepare, progress_bars
from layers.demo.generate import generate_city
from layers.demo.history import load_history
from layers.demo.load import load_demo
from twin import db
from twin.settings import Settings


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Generate the demo city and load it."""
    load_demo_city(prepare(settings), size=args.size, seed=args.seed, history=not args.no_history)
    return 0


def load_demo_city(url: str, *, size: str, seed: int, history: bool = True) -> dict[str, int]:
    """Generate and load the demo city with progress bars, and its ~three months of
    incidents unless ``history`` is false; print what was loaded."""
    started = time.perf_counter()
    with progress_bars() as progress:
        city = generate_city(size, seed=seed, progress=progress)
        generated = time.perf_counter()
        with db.connect(url) as conn:
            counts = load_demo(conn, city, progress=progress)
            loaded = time.perf_counter()
            if history:
                replayed = load_history(conn, city, seed=seed, progress=progress)
                counts["incidents"] = replayed["incidents"]
    finished = time.perf_counter()
    features = sum(n for table, n in counts.items() if table != "incidents")
    console.print(
        f"demo city ({size}, seed {seed}) loaded: "
        + ", ".join(f"{n:,} {table}" for table, n in counts.items()),
        highlight=False,
    )
    console.print(
        f"generated in {generated - started:.1f} s, loaded in {loaded - generated:.1f} s "
        f"({features / max(loaded - generated, 1e-9):,.0f} features/s)"
        + (f", its history of incidents in {finished - loaded:.1f} s" if history else ""),
        highlight=False,
    )
    return counts
