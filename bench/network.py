"""Benchmark: the water network's topology build, then valve isolation and traces over HTTP
(p50/p99 after warm-up) on the large demo city (some 200,000 water pipes).

    .venv/bin/python bench/network.py [--requests 500] [--size large] [--network water]

Uses the benchmark cluster in .twin/bench (or TWIN_DATABASE_URL); loads the demo city of
the given size there first if it has none. Serves the API with `twin serve` in a child
process on a free port. Target (issue 13): isolation <= 50 ms p50. Record figures in
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import resource
import time

import numpy as np
from city import demo_city
from timing import figures, serving

from twin import db
from twin.network import topology

KEY = "bench-network-key"


def _rss_mb() -> float:
    """This process's resident memory now, in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    """Run the benchmark once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--size", choices=("small", "default", "large"), default="large")
    parser.add_argument("--network", default="water")
    args = parser.parse_args()

    url, env = demo_city(args.size)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    with db.connect(url) as conn:
        before = _rss_mb()
        kept = topology.topology(conn, args.network, 0.2)  # as the API keeps it
        held_mb = _rss_mb() - before
        del kept
        builds = []
        for _ in range(3):
            started = time.perf_counter()
            t = topology.build(conn, args.network, 0.2)
            builds.append(time.perf_counter() - started)
        pipes = t.pipe_id[t.pipe_own_piece >= 0]
    print(
        f"data: {args.network}: {len(t.pipe_id):,} pipes, {len(t.node_id):,} nodes, "
        f"{int((t.vertex_valve >= 0).sum()):,} valves, {t.segments:,} valve segments"
    )
    print(f"topology build (read from PostGIS and built), best of 3: {min(builds):.2f} s "
          f"(each: {', '.join(f'{b:.2f}' for b in builds)}); held in memory: {held_mb:,.0f} MB")  # fmt: skip

    rng = np.random.default_rng(7)
    chosen = rng.choice(pipes, size=args.requests, replace=True).tolist()
    with serving({**env, "TWIN_API_KEYS": json.dumps({KEY: "bench"})}) as port:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

        def post(path: str, body: dict) -> float:
            started = time.perf_counter()
            client.request("POST", path, json.dumps(body),
                           {"Content-Type": "application/json", "X-API-Key": KEY})  # fmt: skip
            answer = client.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{path}: HTTP {answer.status}")
            return time.perf_counter() - started

        first = post(f"/network/{args.network}/isolate", {"pipe": {"id": chosen[0]}})
        print(f"first isolation over HTTP (the server builds the topology): {first:.2f} s")
        for name, path, body in (
            ("isolate", "isolate", lambda p, q: {"pipe": {"id": p}}),
            ("trace downstream (limit 100)", "trace",
             lambda p, q: {"trace": "downstream", "from": {"pipe": {"id": p}}, "limit": 100}),
            ("trace upstream (limit 100)", "trace",
             lambda p, q: {"trace": "upstream", "from": {"pipe": {"id": p}}, "limit": 100}),
            ("trace path", "trace",
             lambda p, q: {"trace": "path", "from": {"pipe": {"id": p}}, "to": {"pipe": {"id": q}},
                           "limit": 100}),
        ):  # fmt: skip
            pairs = list(zip(chosen, chosen[1:] + chosen[:1], strict=True))
            count = len(pairs) if name != "trace path" else min(len(pairs), 100)
            for p, q in pairs[:20]:  # warm-up
                post(f"/network/{args.network}/{path}", body(p, q))
            started = time.perf_counter()
            times = [post(f"/network/{args.network}/{path}", body(p, q)) for p, q in pairs[:count]]
            print(figures(f"{name}, HTTP, 1 connection", times, time.perf_counter() - started))


if __name__ == "__main__":
    main()
