"""`tuneloop serve`, `tuneloop worker` and `tuneloop keys`."""

from __future__ import annotations

import multiprocessing
import os
from typing import Annotated

import typer
from rich.table import Table

from tuneloop.cli.common import console, err_console, fail, handle_errors, open_sessions, settings

keys_app = typer.Typer(help="API keys: every request needs `Authorization: Bearer <key>`.", no_args_is_help=True)


def _sessions():
    return open_sessions()


@handle_errors
def serve_cmd(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Training workers to start beside the API (0: none; "
                                              "start them with `tuneloop worker`).")] = 1,
) -> None:
    """Serve the OpenAI-compatible API (files, fine-tuning jobs, models, chat completions) and the review UI."""
    import uvicorn

    from tuneloop.api.app import create_app
    from tuneloop.services.job_kinds import kinds
    from tuneloop.store import repo
    from tuneloop.worker.lifeline import run_worker

    with _sessions()() as session:
        if not repo.list_keys(session):
            _, secret = repo.create_key(session, name="first key")
            session.commit()
            console.print(f"[bold]API key (shown once, stored hashed):[/] {secret}\n"
                          "clients send it as `Authorization: Bearer <key>`; more with `tuneloop keys create`",
                          highlight=False)
    config = settings()
    children = [multiprocessing.get_context("spawn").Process(
        target=run_worker, args=(os.getpid(), config.to_child(), None, kinds())) for _ in range(workers)]
    for child in children:
        child.start()
    err_console.print(f"tuneloop API on http://{host}:{port}/v1 ({workers} worker(s)); review UI on "
                      f"http://{host}:{port}/ (users: `tuneloop users create`); database {config.db_url}")
    try:
        uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.join(15)


@handle_errors
def worker_cmd(
    worker_id: Annotated[str | None, typer.Option("--id", help="A name for this worker (default host-pid).")] = None,
) -> None:
    """Run a worker: claim queued jobs of every kind from the database (training, re-predicting) and run them."""
    from tuneloop.services.job_kinds import kinds
    from tuneloop.worker.runner import Worker

    config = settings()
    err_console.print(f"worker waiting for jobs in {config.db_url}")
    Worker(config, worker_id, kinds()).run()


@keys_app.command("create")
@handle_errors
def keys_create(name: Annotated[str, typer.Option(help="What the key is for.")] = "key") -> None:
    """Create a key and print it once (only its hash is stored)."""
    from tuneloop.store import repo

    with _sessions()() as session:
        key, secret = repo.create_key(session, name=name)
        session.commit()
        console.print(f"{secret}\n[dim]{key.id} ({name}); shown once[/]", highlight=False)


@keys_app.command("list")
@handle_errors
def keys_list() -> None:
    """List keys (prefix, name, created, revoked)."""
    import time

    from tuneloop.store import repo

    table = Table("id", "prefix", "name", "created", "revoked")
    with _sessions()() as session:
        for key in repo.list_keys(session):
            table.add_row(key.id, key.prefix + "…", key.name, time.strftime("%Y-%m-%d %H:%M", time.localtime(key.created_at)),
                          time.strftime("%Y-%m-%d %H:%M", time.localtime(key.revoked_at)) if key.revoked_at else "")
    console.print(table)


@keys_app.command("revoke")
@handle_errors
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id from `tuneloop keys list`.")]) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    from tuneloop.store import repo

    with _sessions()() as session:
        if not repo.revoke_key(session, key_id=key_id):
            fail(f"no active key with id '{key_id}' (see `tuneloop keys list`)")
        session.commit()
    console.print(f"revoked {key_id}")
