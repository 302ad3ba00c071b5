"""Benchmark: sustained intake (validate, attach, fusion check, dispatch, store, change
log) of incidents over HTTP, beside the same core calls in process.

    .venv/bin/python bench/intake.py [--reports 2000] [--size large] [--categories 360]
        [--client wrk|python] [--connections 8,32] [--seconds 15]

Uses the benchmark cluster in .twin/bench (or TWIN_DATABASE_URL); loads the demo city of
the given size there first if it has none. The demo's 144 categories are grown to
``--categories`` as a real city's list is, by sub-categories under its leaves (same layers,
radius and hours as their parent, dataset "bench"; the rules of the parent cover them).
Reports go to random points in the districts with categories drawn from the leaves, every
channel. Serves the API with `twin serve` in a child process on a free port
(``TWIN_WORKERS`` processes, 2 unless set). Over HTTP the load comes from wrk (a C load
generator, `apt-get install wrk`; `make bench-intake` installs it) running
bench/intake_wrk.lua for ``--seconds`` at each number of ``--connections``, or, with
``--client python`` (or without wrk), from Python threads posting ``--reports`` reports.

Besides the rate, each run prints the CPU it cost a report, which stays meaningful on a
shared machine: the CPU seconds (from /proc) of the API processes, of the PostgreSQL
cluster's processes and of the load client during the run, divided by the reports; and
the rate that CPU allows on 2 idle cores (2000 ms / CPU ms a report). The incidents it
makes are deleted afterwards. Record figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx
import numpy as np
from city import demo_city
from timing import figures, free_port

from twin import db
from twin.incidents import categories, intake
from twin.schema import INCIDENT_CHANNELS

KEY = "bench-key"


def _clean(url: str) -> None:
    with db.connect(url) as conn:
        # One statement: it waits for any intake still in flight (whose rows go too), the
        # incidents first, as an intake takes them, so the two never wait for each other.
        # A network burst refers to its incident (migration 0013): it goes with them.
        conn.execute("TRUNCATE incidents, incident_events, incident_photos, network_bursts")
        conn.execute("DELETE FROM layer_changes WHERE layer = 'incidents'")
        conn.execute("DELETE FROM layer_catalogue_deltas WHERE layer = 'incidents'")
        conn.execute("UPDATE layer_catalogue SET feature_count = 0, extent = NULL"
                     " WHERE name = 'incidents'")  # fmt: skip
        conn.commit()


def _grow_categories(url: str, wanted: int) -> None:
    """Sub-categories under the demo's leaves until there are ``wanted`` categories."""
    with db.connect(url) as conn:
        stored = categories.list_categories(conn)
        missing = wanted - len(stored)
        if missing <= 0:
            return
        parents = {c.parent_code for c in stored}
        leaves = [c for c in stored if c.code not in parents]
        rows = []
        for n in range(missing):
            leaf = leaves[n % len(leaves)]
            rows.append({**leaf.as_dict(), "code": f"{leaf.code}-{n // len(leaves) + 1}",
                         "name": f"{leaf.name}（{n // len(leaves) + 1}）",
                         "parent_code": leaf.code})  # fmt: skip
        for row in rows:
            row.pop("dataset")
        categories.store(conn, rows, dataset="bench").raise_first()
        conn.commit()


TICKS = os.sysconf("SC_CLK_TCK")
WRK_SCRIPT = Path(__file__).with_name("intake_wrk.lua")


def _tree_cpu(root: int | None) -> float:
    """CPU seconds used so far by process ``root`` and every process under it, those
    already gone included (a process's reaped children count in its own figures)."""
    if root is None:
        return 0.0
    parents: dict[int, int] = {}
    used: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        used[int(entry)] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in used and pid not in tree:
            tree.add(pid)
            todo.extend(p for p, parent in parents.items() if parent == pid)
    return sum(used[p] for p in tree) / TICKS


def _postmaster(url: str) -> int | None:
    """The pid of the cluster's postmaster when it runs on this machine."""
    with db.connect(url) as conn:
        folder = conn.execute("SELECT current_setting('data_directory')").fetchone()[0]
    try:
        return int(Path(folder, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class Cpu:
    """The CPU seconds of the API, the data base and the load client over a run."""

    api = data_base = client = 0.0

    def per_report(self, reports: int) -> str:
        """The figures line: CPU ms a report by part, and the rate that allows on 2
        idle cores."""
        parts = {"API": self.api, "PostgreSQL": self.data_base, "client": self.client}
        total = sum(parts.values()) * 1000 / max(reports, 1)
        shown = ", ".join(f"{k} {v * 1000 / max(reports, 1):.2f}" for k, v in parts.items())
        return (f"{'':<34} CPU a report {total:5.2f} ms ({shown}); on 2 idle cores "
                f"≈ {2000 / total if total else 0:,.0f} incidents/s")  # fmt: skip


@contextmanager
def _cpu(api: int | None, postmaster: int | None, client: Callable[[], float]) -> Iterator[Cpu]:
    cpu = Cpu()
    before = (_tree_cpu(api), _tree_cpu(postmaster), client())
    yield cpu
    after = (_tree_cpu(api), _tree_cpu(postmaster), client())
    cpu.api, cpu.data_base, cpu.client = (b - a for a, b in zip(before, after, strict=True))


def _own_cpu() -> float:
    return time.process_time()


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _settled(url: str) -> None:
    """Wait until no more reports are being stored."""
    counts: list[int] = []
    while len(counts) < 2 or counts[-1] != counts[-2]:
        time.sleep(0.3)
        with db.connect(url) as conn:
            counts.append(int(conn.execute("SELECT count(*) FROM incidents").fetchone()[0]))


def _stored(url: str) -> int:
    """The reports stored; and printed, how many a transaction took on average (one change
    of the incidents layer a transaction)."""
    with db.connect(url) as conn:
        stored, changes = conn.execute(
            "SELECT (SELECT count(*) FROM incidents), (SELECT count(*) FROM layer_changes"
            " WHERE layer = 'incidents' AND operation = 'intake')"
        ).fetchone()
    print(f"{'':<34} {stored:,} reports stored, {stored / max(changes, 1):.1f} a transaction")
    return int(stored)


def main() -> None:
    """Run the benchmark once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--size", choices=("small", "default", "large"), default="large")
    parser.add_argument("--categories", type=int, default=360)
    parser.add_argument("--client", choices=("wrk", "python"),
                        default="wrk" if shutil.which("wrk") else "python")  # fmt: skip
    parser.add_argument("--connections", default="8,32",
                        help="comma list: the HTTP runs' numbers of connections")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=15, help="each wrk run's length")
    parser.add_argument("--batch", type=int, default=16, help="in process: reports a take")
    parser.add_argument("--http-only", action="store_true", help="skip the in-process runs")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]

    url, env = demo_city(args.size)
    _grow_categories(url, args.categories)
    postmaster = _postmaster(url)
    with db.connect(url) as conn:
        west, south, east, north = conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM"
            " (SELECT ST_Extent(geom) e FROM jurisdictions WHERE level = 'district') x"
        ).fetchone()
        buildings = conn.execute("SELECT count(*) FROM buildings").fetchone()[0]
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM incident_categories),"
            " (SELECT count(*) FROM responsibility_rules), (SELECT count(*) FROM jurisdictions)"
        ).fetchone()
        codes = [r[0] for r in conn.execute(
            "SELECT c.code FROM incident_categories c WHERE NOT EXISTS (SELECT 1 FROM"
            " incident_categories k WHERE k.parent_code = c.code) ORDER BY c.code"
        )]  # fmt: skip
    _clean(url)

    rng = np.random.default_rng(11)
    points = rng.uniform((west, south), (east, north), (args.reports, 2)).tolist()
    chosen = rng.integers(0, len(codes), args.reports).tolist()
    channels = rng.integers(0, len(INCIDENT_CHANNELS), args.reports).tolist()
    bodies = [
        {"category": codes[c], "channel": INCIDENT_CHANNELS[k],
         "location": {"lon": p[0], "lat": p[1]}, "description": "bench report",
         "reporter": {"name": "测试", "phone": "13800000000"}}
        for p, c, k in zip(points, chosen, channels, strict=True)
    ]  # fmt: skip
    load = os.getloadavg()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        f", load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} before"
    )
    print(f"data: {buildings:,} buildings, {counts[2]:,} jurisdictions, {counts[0]} categories "
          f"({len(codes)} leaves), {counts[1]:,} rules; {args.reports:,} reports at random "
          "points in the districts")  # fmt: skip

    def values(body: dict) -> dict:
        return {"category_code": body["category"], "channel": body["channel"],
                "lon": body["location"]["lon"], "lat": body["location"]["lat"],
                "description": body["description"], "reporter": body["reporter"]}  # fmt: skip

    with db.connect(url, autocommit=True) as conn:
        times = []
        with _cpu(None, postmaster, _own_cpu) as cpu:
            started = time.perf_counter()
            for body in [] if args.http_only else bodies:
                t = time.perf_counter()
                intake.report(conn, **values(body))
                times.append(time.perf_counter() - t)
            wall = time.perf_counter() - started
        if times:
            print(figures("intake.report, in process", times, wall, "incidents"))
            print(cpu.per_report(len(bodies)))
        _clean(url)
    if hasattr(intake, "take") and not args.http_only:  # (older code has no take)
        _take_in_batches(url, bodies, values, args.batch, postmaster)
    _clean(url)

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--port", str(port)],
        env={"TWIN_WORKERS": "2", **env, "TWIN_POOL_MAX_SIZE": "16",
             "TWIN_API_KEYS": json.dumps({KEY: "bench"})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("twin serve did not answer /health")
        print(f"HTTP: {env.get('TWIN_WORKERS', os.environ.get('TWIN_WORKERS', '2'))} API "
              f"process(es), load from {args.client}")  # fmt: skip
        for n in connections:
            if args.client == "wrk":
                _wrk(url, port, n, args.seconds, server.pid, postmaster, codes,
                     (west, south, east, north))  # fmt: skip
            else:
                _python_client(url, port, n, bodies, server.pid, postmaster)
            _clean(url)
    finally:
        server.terminate()
        server.wait(timeout=30)
        _clean(url)


def _take_in_batches(url: str, bodies: list[dict], values: Callable[[dict], dict], batch: int,
                     postmaster: int | None) -> None:  # fmt: skip
    """``intake.take`` in process, ``batch`` reports at a time; print the figures."""
    with db.connect(url, autocommit=True) as conn:
        times = []
        with _cpu(None, postmaster, _own_cpu) as cpu:
            started = time.perf_counter()
            for first in range(0, len(bodies), batch):
                t = time.perf_counter()
                taken = intake.take(conn, [intake.check(**values(b))
                                           for b in bodies[first : first + batch]])  # fmt: skip
                assert not any(isinstance(one, Exception) for one in taken), taken
                times.append(time.perf_counter() - t)
            wall = time.perf_counter() - started
        per = [t / batch for t in times for _ in range(batch)][: len(bodies)]
        print(figures(f"intake.take, {batch} a batch, in process", per, wall, "incidents"))
        print(cpu.per_report(len(bodies)))


def _python_client(url: str, port: int, connections: int, bodies: list[dict], api: int,
                   postmaster: int | None) -> None:  # fmt: skip
    """POST the bodies from ``connections`` Python threads; print the figures."""
    encoded = [json.dumps(b).encode() for b in bodies]
    local = threading.local()

    def one(i: int, local: threading.local = local) -> float:
        if not hasattr(local, "client"):
            local.client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        t = time.perf_counter()
        local.client.request("POST", "/incidents", encoded[i], headers={
            "X-API-Key": KEY, "Content-Type": "application/json"})  # fmt: skip
        answer = local.client.getresponse()
        text = answer.read()
        if answer.status != 201:
            raise RuntimeError(f"POST /incidents: HTTP {answer.status} {text[:200]!r}")
        return time.perf_counter() - t

    with ThreadPoolExecutor(max_workers=connections) as pool:
        list(pool.map(one, range(min(100, len(bodies)))))  # warm the pool and plans
    _clean(url)
    with _cpu(api, postmaster, _own_cpu) as cpu:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=connections) as pool:
            times = list(pool.map(one, range(len(bodies))))
        wall = time.perf_counter() - started
    print(figures(f"POST /incidents, {connections} connection(s)", times, wall, "incidents"))
    print(cpu.per_report(_stored(url)))


def _wrk(url: str, port: int, connections: int, seconds: float, api: int,
         postmaster: int | None, codes: list[str], box: tuple[float, ...]) -> None:  # fmt: skip
    """wrk posting varied reports for ``seconds`` on ``connections``; print the figures."""
    lua = lambda values: "{" + ", ".join(json.dumps(v) for v in values) + "}"  # noqa: E731
    prelude = (f"KEY = {json.dumps(KEY)}\nWEST, SOUTH, EAST, NORTH = {', '.join(map(repr, box))}"
               f"\nCODES = {lua(codes)}\nCHANNELS = {lua(INCIDENT_CHANNELS)}\n")  # fmt: skip
    threads = min(2, connections)
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(prelude + WRK_SCRIPT.read_text())
        script.flush()
        command = ["wrk", "-t", str(threads), "-c", str(connections), "-s", script.name,
                   f"http://127.0.0.1:{port}"]  # fmt: skip
        warm = subprocess.run([*command, "-d", "2s"], capture_output=True, text=True)
        if warm.returncode != 0:
            raise RuntimeError(f"wrk: {warm.stderr or warm.stdout}")
        _clean(url)
        with _cpu(api, postmaster, _children_cpu) as cpu:
            done = subprocess.run([*command, "-d", f"{seconds:g}s", "--timeout", "30s"],
                                  check=True, capture_output=True, text=True)  # fmt: skip
            _settled(url)  # the reports in flight when wrk stopped are taken still
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRK "))
    found = json.loads(line[4:])
    rate = found["requests"] / found["seconds"]
    print(f"{f'POST /incidents, {connections} conn. (wrk)':<34} p50 {found['p50_ms']:6.2f} ms  "
          f"p99 {found['p99_ms']:6.2f} ms  {rate:7.0f} incidents/s")  # fmt: skip
    if found["failed"] or found["socket_errors"]:
        print(f"{'':<34} NOT 201: {found['failed']}, socket errors {found['socket_errors']}; "
              f"first: {found['first_failure']}")  # fmt: skip
    print(cpu.per_report(_stored(url)))


if __name__ == "__main__":
    main()
