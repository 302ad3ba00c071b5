"""The direction of imports (README, Architecture) is a contract `make test` checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("twin", "layers", "tiles", "api", "cli")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the project's contracts on a copy of its packages in ``tree``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},  # the copy, before the editable install
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy(tree: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__")
        )


def test_the_packages_keep_their_contracts(tmp_path: Path):
    _copy(tmp_path)
    result = _lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_core_importing_what_stands_above_it_is_refused(tmp_path: Path):
    _copy(tmp_path)
    health = tmp_path / "twin" / "health.py"
    # Hidden inside a function, as the old CLI did: still an import of the core's.
    health.write_text(
        health.read_text(encoding="utf-8") + "\n\ndef _app():\n    from api import app\n"
    )
    (tmp_path / "layers" / "coverage.py").write_text(
        (ROOT / "layers" / "coverage.py").read_text(encoding="utf-8") + "\nimport cli.main\n"
    )
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the core (twin) imports nothing above it and no web framework BROKEN" in result.stdout
    assert "twin.health -> api" in result.stdout
    assert "layers and tiles import neither the API nor the CLI BROKEN" in result.stdout
    assert "layers.coverage -> cli.main" in result.stdout
    # Through layers, the API now imports the CLI too: indirect imports count.
    assert "the API does not import the CLI BROKEN" in result.stdout


def test_the_migrations_import_nothing_above_the_core():
    """Alembic's scripts are no package, so lint-imports does not see them: read them."""
    import ast

    forbidden = {*PACKAGES[1:], "fastapi", "starlette", "uvicorn"}
    found = []
    for script in (ROOT / "twin" / "migrations").rglob("*.py"):
        for node in ast.walk(ast.parse(script.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{script.name}: {n}" for n in names if n.split(".")[0] in forbidden]
    assert found == []
    assert any((ROOT / "twin" / "migrations").rglob("0004_*.py"))  # the scan reads them
