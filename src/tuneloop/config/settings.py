"""Where things live at run time. Read from environment variables (TUNELOOP_*)."""

from __future__ import annotations

import os
from pathlib import Path

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

    @classmethod
    def from_env(cls) -> "Settings":
        home = os.environ.get("TUNELOOP_HOME")
        offline = os.environ.get("TUNELOOP_OFFLINE", "").lower() in {"1", "true", "yes"}
        return cls(home=Path(home) if home else Path(".tuneloop"), offline=offline,
                   database_url=os.environ.get("TUNELOOP_DATABASE_URL") or None,
                   secret_key=os.environ.get("TUNELOOP_SECRET_KEY") or None,
                   max_upload_bytes=int(os.environ.get("TUNELOOP_MAX_UPLOAD_BYTES", 512 * 1024 * 1024)),
                   allowed_paths=[Path(p) for p in os.environ.get("TUNELOOP_ALLOWED_PATHS", "").split(os.pathsep)
                                  if p.strip()])

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


def get_settings() -> Settings:
    return Settings.from_env()
