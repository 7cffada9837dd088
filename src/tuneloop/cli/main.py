"""The `tuneloop` command."""

from __future__ import annotations

import warnings

import typer

from tuneloop import __version__
from tuneloop.cli import arena, compare, data, jobs, models, quickstart, review, search, serve, train

# Deprecation notices from libraries are for their callers' developers, not for our users' terminals.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")

app = typer.Typer(
    help="tuneloop: turn a general language model into a specialised one, with people in the loop.",
    no_args_is_help=True, pretty_exceptions_show_locals=False,
)
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
app.command("generate")(models.generate_cmd)
app.command("chat")(models.chat_cmd)
app.command("train")(train.train_cmd)
app.command("eval")(train.eval_cmd)
app.command("export")(train.export_cmd)
app.command("compare")(compare.compare_cmd)
app.command("search")(search.search_cmd)
app.command("quickstart")(quickstart.quickstart_cmd)
app.command("serve")(serve.serve_cmd)
app.command("worker")(serve.worker_cmd)
app.add_typer(serve.keys_app, name="keys")
app.add_typer(jobs.app, name="jobs")
app.add_typer(arena.app, name="arena")
app.add_typer(review.app, name="review")
app.add_typer(review.users_app, name="users")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tuneloop {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Set TUNELOOP_HOME to choose where models, datasets and runs are kept (default ./.tuneloop)."""
