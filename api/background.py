"""Work the server does on its own while it runs: the SLA sweep (督办) every
``TWIN_SWEEP_INTERVAL_S`` seconds. Every API process runs one; the sweep itself lets one
run at a time (twin.incidents.loop.sweep), so several processes never mark twice."""

from __future__ import annotations

import logging
import threading

from psycopg_pool import ConnectionPool

from twin.incidents import loop

logger = logging.getLogger("twin.api")


class Sweeper:
    """A thread that runs the SLA sweep every ``interval_s`` seconds until stopped."""

    def __init__(self, pool: ConnectionPool, interval_s: float) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sla-sweep", daemon=True)
        self.runs = 0  # sweeps done, for /health and the tests

    def start(self) -> None:
        """Start sweeping (nothing when the interval is 0)."""
        if self.interval_s > 0:
            self.thread.start()

    def stop(self) -> None:
        """Stop after the sweep under way, if any."""
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                with self.pool.connection() as conn:
                    done = loop.sweep(conn)
                self.runs += 1
                if done:
                    logger.info("SLA sweep: %d incident(s) newly supervised", len(done))
            except Exception:  # a data base away for a while: try again next time
                logger.exception("SLA sweep failed; it runs again in %s s", self.interval_s)
