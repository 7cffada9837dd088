"""Where things live at run time. Read from environment variables (TUNELOOP_*)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class Settings(BaseModel):
    """Run-time locations. Every field can be set with an environment variable."""

    home: Path = Field(default_factory=lambda: Path(".tuneloop"))
    """The home folder (TUNELOOP_HOME): converted models, dataset versions, runs, the database."""

    offline: bool = False
    """Never try the Hugging Face Hub (TUNELOOP_OFFLINE=1); hub ids then need a local cache."""

    database_url: str | None = None
    """TUNELOOP_DATABASE_URL: a SQLAlchemy URL (postgresql+psycopg://...); default SQLite in the home folder."""

    max_upload_bytes: int = 512 * 1024 * 1024
    """TUNELOOP_MAX_UPLOAD_BYTES: the largest file the API accepts."""

    secret_key: str | None = None
    """TUNELOOP_SECRET_KEY: signs the review UI's session cookies. Default: a random key kept in
    <home>/secret_key (set it when several servers share one database, so a login works on each)."""

    allowed_paths: list[Path] = Field(default_factory=list)
    """TUNELOOP_ALLOWED_PATHS: server folders (separated by ':') whose files and models API clients may name
    by path, e.g. a shared data folder. None by default: over the API, data is an upload, an uploaded file id or
    a dataset version, and a model is a registry name, a fine-tuned id or a run of this server. The CLI always
    takes paths."""

    stale_seconds: float = Field(30.0, gt=0)
    """TUNELOOP_STALE_SECONDS: a running job whose worker has not beaten its heartbeat for this long is queued
    again (and resumes from its newest checkpoint on another worker)."""

    allow_python_graders: bool = False
    """TUNELOOP_ALLOW_PYTHON_GRADERS=1: run `python` graders (grade(sample, item) from a request or a recipe). Off by
    default: they run in a separate process with time and memory limits, but that is not a security sandbox, so
    turn them on only where everyone who may submit a grader is trusted."""

    python_grader_seconds: float = Field(10.0, gt=0)
    """TUNELOOP_PYTHON_GRADER_SECONDS: wall-clock and CPU limit for one batch of Python grades."""

    python_grader_memory_mb: int = Field(512, ge=64)
    """TUNELOOP_PYTHON_GRADER_MEMORY_MB: address-space limit of a Python grader's process."""

    judge_base_url: str | None = None
    """TUNELOOP_JUDGE_BASE_URL: an OpenAI-compatible endpoint (https://host/v1) for `score_model` and `label_model`
    graders whose model this server does not serve; with TUNELOOP_JUDGE_API_KEY."""

    judge_api_key: str | None = None

    @classmethod
    def from_env(cls) -> "Settings":
        """The one reader of TUNELOOP_* variables. Workers and training children get the object it makes,
        whole (`to_child`, `from_child`), so a setting given to `tuneloop serve` reaches them all."""
        env = os.environ
        home = env.get("TUNELOOP_HOME")
        return cls(home=Path(home) if home else Path(".tuneloop"),
                   offline=env.get("TUNELOOP_OFFLINE", "").lower() in {"1", "true", "yes"},
                   database_url=env.get("TUNELOOP_DATABASE_URL") or None,
                   secret_key=env.get("TUNELOOP_SECRET_KEY") or None,
                   max_upload_bytes=_number(env, "TUNELOOP_MAX_UPLOAD_BYTES", int, 512 * 1024 * 1024),
                   allowed_paths=[Path(p) for p in env.get("TUNELOOP_ALLOWED_PATHS", "").split(os.pathsep)
                                  if p.strip()],
                   stale_seconds=_number(env, "TUNELOOP_STALE_SECONDS", float, 30.0),
                   allow_python_graders=env.get("TUNELOOP_ALLOW_PYTHON_GRADERS", "").lower() in {"1", "true", "yes"},
                   python_grader_seconds=_number(env, "TUNELOOP_PYTHON_GRADER_SECONDS", float, 10.0),
                   python_grader_memory_mb=_number(env, "TUNELOOP_PYTHON_GRADER_MEMORY_MB", int, 512),
                   judge_base_url=env.get("TUNELOOP_JUDGE_BASE_URL") or None,
                   judge_api_key=env.get("TUNELOOP_JUDGE_API_KEY") or None)

    def to_child(self) -> dict:
        """What a spawned process receives: plain data (the child imports little before it can act)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_child(cls, data: dict) -> "Settings":
        return cls.model_validate(data)

    def described(self) -> str:
        """One line for logs, without the secret."""
        shown = self.model_dump(mode="json", exclude={"secret_key", "judge_api_key"})
        return (" ".join(f"{k}={v}" for k, v in shown.items()) + (" secret_key=(set)" if self.secret_key else "")
                + (" judge_api_key=(set)" if self.judge_api_key else ""))

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def files_dir(self) -> Path:
        return self.home / "files"

    def allows(self, path: Path | str) -> bool:
        """Whether a server path lies inside one of the allowed folders (symbolic links resolved first)."""
        try:
            real = Path(path).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            return False
        return any(real.is_relative_to(Path(folder).expanduser().resolve()) for folder in self.allowed_paths)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'tuneloop.db').resolve()}"


    def session_secret(self) -> str:
        """The key that signs session cookies: TUNELOOP_SECRET_KEY, or one made once and kept (mode 600)."""
        if self.secret_key:
            return self.secret_key
        path = self.home / "secret_key"
        if not path.exists():
            import secrets
            import tempfile

            self.home.mkdir(parents=True, exist_ok=True)
            fd, draft = tempfile.mkstemp(dir=self.home, prefix=".secret_key-")  # mode 600
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
            try:
                os.link(draft, path)  # atomic: of several processes starting at once, one key wins
            except FileExistsError:
                pass
            finally:
                os.unlink(draft)
        return path.read_text().strip()


def _number(env: Any, name: str, kind: type, default: float) -> Any:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return kind(raw)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {noun}, got {raw!r}") from None


def get_settings() -> Settings:
    return Settings.from_env()
