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

    @classmethod
    def from_env(cls) -> "Settings":
        home = os.environ.get("TUNELOOP_HOME")
        offline = os.environ.get("TUNELOOP_OFFLINE", "").lower() in {"1", "true", "yes"}
        return cls(home=Path(home) if home else Path(".tuneloop"), offline=offline)

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"


def get_settings() -> Settings:
    return Settings.from_env()
