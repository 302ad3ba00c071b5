"""Settings per concern, read from the flat ``TWIN_`` variables the README documents."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cli import main
from twin.settings import ENV_PREFIX, Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def _documented() -> set[str]:
    """The variables of the README's configuration table."""
    table = README.read_text(encoding="utf-8").split("## Configuration", 1)[1].split("\n#", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `TWIN_")]
    return {name for row in rows for name in re.findall(r"`(TWIN_\w+)`", row.split(" | ")[0])}


def test_every_documented_variable_is_a_setting_and_every_setting_is_documented():
    read = {
        f"{ENV_PREFIX}{name}".upper()
        for concern in Settings.model_fields.values()
        for name in concern.annotation.model_fields  # type: ignore[union-attr]
    }
    assert _documented() == read


def test_the_flat_variables_reach_their_concerns_from_the_environment_and_dot_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "TWIN_DATABASE_URL=postgresql://twin@db/twin\nTWIN_PORT=8080\nTWIN_MAX_UPLOAD_MB=7\n"
    )
    monkeypatch.setenv("TWIN_PORT", "9090")  # the environment over the .env file
    monkeypatch.setenv("TWIN_API_KEYS", '{"k": "城运中心"}')
    monkeypatch.setenv("TWIN_IMPORT_TIME_LIMIT_S", "60")
    monkeypatch.setenv("TWIN_STATEMENT_TIMEOUT_MS", "7000")
    settings = Settings()
    assert settings.database.database_url == "postgresql://twin@db/twin"
    assert settings.database.statement_timeout_ms == 7000
    assert settings.api.port == 9090 and settings.api.api_keys == {"k": "城运中心"}
    assert settings.imports.max_upload_mb == 7 and settings.imports.import_time_limit_s == 60


def test_bad_settings_of_several_concerns_are_named_together(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TWIN_PG_PORT", "0")
    monkeypatch.setenv("TWIN_HEAVY_CONCURRENCY", "many")
    monkeypatch.setenv("TWIN_IMPORT_TIME_LIMIT_S", "-5")
    assert main(["db", "status"]) == 1
    err = capsys.readouterr().err
    assert "bad setting" in err and "Traceback" not in err
    assert "TWIN_PG_PORT='0': must be greater than or equal to 1" in err
    assert "TWIN_HEAVY_CONCURRENCY='many': must be a valid integer" in err
    assert "TWIN_IMPORT_TIME_LIMIT_S='-5'" in err
