"""What every benchmark here needs besides its city: the server it starts (on a free port),
and its figures printed one way (p50, p99, rate)."""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    """A local TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def figures(name: str, seconds: list[float], wall: float, unit: str = "req") -> str:
    """One line: ``name``, the p50 and p99 of ``seconds`` in ms, and how many per second
    of ``wall`` time."""
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{name:<34} p50 {statistics.median(ms):6.2f} ms  p99 {p99:6.2f} ms  "
        f"{len(ms) / wall:7.0f} {unit}/s"
    )


@contextmanager
def serving(env: dict[str, str], *arguments: str) -> Iterator[int]:
    """``twin serve`` in a child process on a free port, with ``env``: its port once
    /health answers (RuntimeError if it never does), stopped on the way out."""
    import httpx2 as httpx

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--port", str(port), *arguments],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("twin serve did not answer /health")
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)
