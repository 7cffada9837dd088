"""`tuneloop models ...`, `tuneloop generate` and `tuneloop chat`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.prompt import Prompt
from rich.table import Table

from tuneloop.cli.common import console, handle_errors, print_json, settings, stage_progress
from tuneloop.models.registry import DEFAULT_CHAT_MODEL

app = typer.Typer(help="Base models: the embedded defaults, local folders, GGUF files and hub ids.",
                  no_args_is_help=True)

ModelArg = Annotated[str, typer.Argument(help="Model name (see `tuneloop models list`), folder, .gguf file or hub id.")]


def _human_size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _human_count(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


@app.command("list")
@handle_errors
def list_cmd(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Name, kind, parameters, size, where each model comes from, and whether it is converted."""
    from tuneloop.models.info import list_models

    infos = list_models(settings())
    if as_json:
        print_json([i.to_dict() for i in infos])
        return
    table = Table(title="models")
    for col in ("name", "kind", "parameters", "size", "source", "converted"):
        table.add_column(col, justify="right" if col in {"parameters", "size"} else "left")
    for i in infos:
        source = i.source if not i.error else f"[red]{i.error}[/]"
        table.add_row(i.name, i.kind, _human_count(i.parameters), _human_size(i.size_bytes), source, i.converted)
    console.print(table)


@app.command("prepare")
@handle_errors
def prepare_cmd(model: ModelArg = DEFAULT_CHAT_MODEL) -> None:
    """Convert a model now (GGUF → safetensors) so its first use is fast."""
    from tuneloop.models.loading import model_dir
    from tuneloop.models.registry import resolve

    with stage_progress(f"converting {model}") as on_stage:
        folder = model_dir(resolve(model), settings(), on_stage)
    console.print(f"{model} ready in {folder}")


def load_chat_model(model: str):
    from tuneloop.models.loading import load_causal_lm

    with stage_progress(f"converting {model}") as on_stage:
        return load_causal_lm(model, settings(), on_stage=on_stage)


GenOpts = dict(
    max_tokens=typer.Option(256, "--max-tokens", help="Most tokens to generate."),
    temperature=typer.Option(0.0, help="0 = greedy (deterministic); higher = more varied."),
    top_p=typer.Option(1.0, "--top-p", help="Nucleus sampling mass (with temperature > 0)."),
    seed=typer.Option(None, help="Seed for sampling."),
)


@handle_errors
def generate_cmd(
    model: ModelArg,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The user message.")],
    system: Annotated[Optional[str], typer.Option(help="An optional system message.")] = None,
    max_tokens: int = GenOpts["max_tokens"], temperature: float = GenOpts["temperature"],
    top_p: float = GenOpts["top_p"], seed: Optional[int] = GenOpts["seed"],
) -> None:
    """Answer one prompt with the model's chat template, streaming tokens as they come."""
    from tuneloop.models.generation import GenerationOptions, stream

    lm, tokenizer = load_chat_model(model)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    options = GenerationOptions(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
    for piece, _, _ in stream(lm, tokenizer, messages, options):
        console.print(piece, end="", highlight=False, markup=False, soft_wrap=True)
    console.print()


@handle_errors
def chat_cmd(
    model: Annotated[str, typer.Argument(help="Model to chat with.")] = DEFAULT_CHAT_MODEL,
    system: Annotated[Optional[str], typer.Option(help="An optional system message.")] = None,
    max_tokens: int = GenOpts["max_tokens"], temperature: float = GenOpts["temperature"],
    top_p: float = GenOpts["top_p"], seed: Optional[int] = GenOpts["seed"],
) -> None:
    """Chat in the terminal. /reset clears the conversation, /exit (or Ctrl+D) quits."""
    from tuneloop.models.generation import GenerationOptions, stream

    lm, tokenizer = load_chat_model(model)
    options = GenerationOptions(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
    start = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    console.print(f"[dim]chatting with {model}; /reset clears, /exit quits[/]")
    while True:
        try:
            text = Prompt.ask("[bold cyan]you[/]", console=console)
        except (EOFError, KeyboardInterrupt):
            break
        if text.strip() in {"/exit", "/quit"}:
            break
        if text.strip() == "/reset":
            messages = list(start)
            console.print("[dim]conversation cleared[/]")
            continue
        if not text.strip():
            continue
        messages.append({"role": "user", "content": text})
        console.print("[bold magenta]model[/]: ", end="")
        answer = ""
        for piece, _, _ in stream(lm, tokenizer, messages, options):
            answer += piece
            console.print(piece, end="", highlight=False, markup=False, soft_wrap=True)
        console.print()
        messages.append({"role": "assistant", "content": answer})
