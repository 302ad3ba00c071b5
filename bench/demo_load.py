"""Benchmark: generate the demo city and load it into PostGIS; prints features per second.

    .venv/bin/python bench/demo_load.py [--size small|default|large] [--seed 1]

Uses its own embedded cluster in .twin/bench (or TWIN_DATABASE_URL when set), so the
demo you are working with is not replaced. Record figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

from layers.demo.generate import generate_city
from layers.demo.load import load_demo
from twin import db
from twin.settings import DatabaseSettings, Settings


def main() -> None:
    """Run the benchmark once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "default", "large"), default="default")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    settings = Settings()
    if not settings.database.database_url:
        settings = Settings(database=DatabaseSettings(data_dir=Path(".twin/bench")))
    url = db.prepare(settings)

    started = time.perf_counter()
    city = generate_city(args.size, seed=args.seed)
    generated = time.perf_counter()
    with db.connect(url) as conn:
        counts = load_demo(conn, city)
    loaded = time.perf_counter()

    features = sum(counts.values())
    gen_s, load_s = generated - started, loaded - generated
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"size {args.size}, seed {args.seed}: {features:,} features")
    for table, n in counts.items():
        print(f"  {table:<14} {n:>10,}")
    print(f"generate: {gen_s:8.1f} s  {features / gen_s:>12,.0f} features/s")
    print(f"load:     {load_s:8.1f} s  {features / load_s:>12,.0f} features/s (COPY + indexes)")
    print(f"total:    {gen_s + load_s:8.1f} s  {features / (gen_s + load_s):>12,.0f} features/s")
    print(f"peak memory of this process: {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
