"""What every benchmark here needs besides its city: a free port for the server it starts,
and its figures printed one way (p50, p99, rate)."""

from __future__ import annotations

import socket
import statistics


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
