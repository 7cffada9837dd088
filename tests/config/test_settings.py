"""Settings: the one reader of TUNELOOP_* variables, handed whole to the processes a server starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneloop.config.settings import Settings


def test_every_variable_is_read_and_survives_the_trip_to_a_child(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("TUNELOOP_OFFLINE", "1")
    monkeypatch.setenv("TUNELOOP_DATABASE_URL", "postgresql+psycopg://u@127.0.0.1/t")
    monkeypatch.setenv("TUNELOOP_SECRET_KEY", "s3cret")
    monkeypatch.setenv("TUNELOOP_MAX_UPLOAD_BYTES", "1000")
    monkeypatch.setenv("TUNELOOP_ALLOWED_PATHS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    monkeypatch.setenv("TUNELOOP_STALE_SECONDS", "7.5")
    settings = Settings.from_env()
    assert (settings.home, settings.offline, settings.max_upload_bytes, settings.stale_seconds) == \
        (tmp_path / "h", True, 1000, 7.5)
    assert settings.allowed_paths == [tmp_path / "a", tmp_path / "b"]
    assert Settings.from_child(settings.to_child()) == settings
    assert "s3cret" not in settings.described() and "stale_seconds=7.5" in settings.described()


@pytest.mark.parametrize("name, value", [("TUNELOOP_MAX_UPLOAD_BYTES", "lots"), ("TUNELOOP_STALE_SECONDS", "soon")])
def test_a_bad_value_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name} must be an? (integer|number), got '{value}'"):
        Settings.from_env()
    from tuneloop.cli.main import app

    result = CliRunner().invoke(app, ["data", "list"])
    assert result.exit_code == 2 and name in result.output


def test_allowed_paths_resolve_links_first(tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir(), outside.mkdir()
    (inside / "link").symlink_to(outside)
    settings = Settings(home=tmp_path, allowed_paths=[inside])
    assert settings.allows(inside / "x.jsonl") and not settings.allows(inside / "link" / "x.jsonl")
    assert not settings.allows(inside / ".." / "out") and not settings.allows(Path("~nobody-here/x"))
