"""The benchmarks' own data base: a cluster of its own (or TWIN_DATABASE_URL) holding the
demo city, loaded once and reused by later runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from twin import db
from twin.settings import DatabaseSettings, Settings


def demo_city(size: str, folder: str = ".twin/bench") -> tuple[str, dict[str, str]]:
    """The URL of a data base with the demo city of ``size`` (loaded when it has none, or
    one from before incident categories came), and the environment for child processes
    (``twin serve``) to reach the same data base."""
    settings = Settings()
    env = dict(os.environ)
    if not settings.database.database_url:
        settings = Settings(database=DatabaseSettings(data_dir=Path(folder)))
        env["TWIN_DATA_DIR"] = str(Path(folder).absolute())
    url = db.prepare(settings)
    with db.connect(url) as conn:
        buildings, categories = conn.execute(
            "SELECT (SELECT count(*) FROM buildings WHERE dataset = 'demo'),"
            " (SELECT count(*) FROM incident_categories)"
        ).fetchone()
    if buildings == 0 or categories == 0:
        subprocess.run([sys.executable, "-m", "cli", "demo", "--size", size], env=env, check=True)
    return url, env
