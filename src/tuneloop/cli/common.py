"""Shared CLI pieces: consoles, progress bars, turning our errors into clear messages and exit codes."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import typer
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn)

from tuneloop.config.settings import Settings, get_settings
from tuneloop.data.problems import DataError
from tuneloop.models.registry import ModelError
from tuneloop.services import ServiceError

console = Console()
err_console = Console(stderr=True)


def settings() -> Settings:
    return get_settings()


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(func: Callable) -> Callable:
    """Print DataError / ModelError / ValueError as one clear line and exit 2 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (DataError, ModelError, ValueError, FileNotFoundError) as e:
            fail(str(e))
        except ServiceError as e:
            fail(e.message)

    return wrapper


@contextlib.contextmanager
def byte_progress(description: str, total: int, unit_rows: bool = False) -> Iterator[Callable[[int], None]]:
    """A progress bar over bytes (or rows) read; yields the function to call with each increment."""
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn() if unit_rows else DownloadColumn(),
               *( [] if unit_rows else [TransferSpeedColumn()]), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


@contextlib.contextmanager
def stage_progress(description: str) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar for work reported as (stage, step, total), e.g. model conversion.

    Shown only once the first stage is reported, so a load that needs no conversion prints nothing.
    """
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn()]
    progress = Progress(*columns, console=err_console)
    task = None

    def on_stage(stage: str, step: int, total: int) -> None:
        nonlocal task
        if task is None:
            progress.start()
            task = progress.add_task(description, total=total)
        progress.update(task, description=f"{description}: {stage}", completed=step, total=total)

    try:
        yield on_stage
    finally:
        if task is not None:
            progress.stop()


def open_sessions() -> Any:
    """A session factory on the configured database, upgraded to the newest schema."""
    from tuneloop.store.db import make_engine, sessions, upgrade

    engine = make_engine(settings().db_url)
    upgrade(engine)
    return sessions(engine)


def load_tokenizer_with_progress(model: str) -> Any:
    from tuneloop.models.loading import load_tokenizer

    with stage_progress(f"tokenizer of {model}") as on_stage:
        return load_tokenizer(model, settings(), on_stage)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
