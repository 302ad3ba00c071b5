"""Small helpers shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from twin.settings import Settings


def make_data_dir(prefix: str) -> Path:
    """A folder the PostgreSQL server user can reach when the tests run as root."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def settings_for(data_dir: Path, **overrides: object) -> Settings:
    """Settings that ignore the developer's environment and .env file."""
    values: dict[str, object] = {"data_dir": data_dir, "database_url": None, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def run_twin(
    *args: str, env: dict[str, str] | None = None, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``twin`` command in a child process, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "twin.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=make_data_dir("twin-cwd-"),  # no .env file of the developer's
        user=user,
        timeout=600,
        check=False,
    )
