"""``twin demo``: generate and load the demo city (replacing only the previous demo)."""

from __future__ import annotations

import argparse
import time

from cli.common import console, prepare, progress_bars
from layers.demo.generate import generate_city
from layers.demo.load import load_demo
from twin import db
from twin.settings import Settings


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Generate the demo city and load it."""
    load_demo_city(prepare(settings), size=args.size, seed=args.seed)
    return 0


def load_demo_city(url: str, *, size: str, seed: int) -> dict[str, int]:
    """Generate and load the demo city with progress bars; print what was loaded."""
    started = time.perf_counter()
    with progress_bars() as progress:
        city = generate_city(size, seed=seed, progress=progress)
        generated = time.perf_counter()
        with db.connect(url) as conn:
            counts = load_demo(conn, city, progress=progress)
    finished = time.perf_counter()
    features = sum(counts.values())
    console.print(
        f"demo city ({size}, seed {seed}) loaded: "
        + ", ".join(f"{n:,} {table}" for table, n in counts.items()),
        highlight=False,
    )
    console.print(
        f"generated in {generated - started:.1f} s, loaded in {finished - generated:.1f} s "
        f"({features / max(finished - generated, 1e-9):,.0f} features/s)",
        highlight=False,
    )
    return counts
