"""`tuneloop data ...`: validate, import, stats, split, dedup, convert and list datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from tuneloop.cli.common import (byte_progress, console, fail, handle_errors, load_tokenizer_with_progress,
                                 print_json, settings)
from tuneloop.data.dataset import Source, load_records
from tuneloop.data.dedup import find_duplicates
from tuneloop.data.formats import FORMATS
from tuneloop.data.problems import KINDS, DataError
from tuneloop.data.readers import FILE_TYPES, detect_file_type, parse_column_map, progress_total
from tuneloop.data.split import parse_ratios, split_records
from tuneloop.data.stats import compute_stats, plot_stats
from tuneloop.data.validate import Report, validate
from tuneloop.data.versions import list_imports, resolve_version, store_version
from tuneloop.data.writers import write_records
from tuneloop.models.registry import DEFAULT_CHAT_MODEL

app = typer.Typer(help="Check, import, inspect, split and deduplicate datasets.", no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(help="A .jsonl, .json, .csv, .tsv or .parquet file.")]
FormatOpt = Annotated[Optional[str], typer.Option(
    "--format", "-f", help=f"Data format, detected from the content unless given: {', '.join(FORMATS)}.")]
FileTypeOpt = Annotated[Optional[str], typer.Option(
    "--file-type", help=f"File type, from the suffix unless given: {', '.join(FILE_TYPES)}.")]
ColumnsOpt = Annotated[Optional[str], typer.Option(
    "--columns", help="Rename columns/keys: KEY=COLUMN,..., e.g. text=body,label=category.")]
LabelsOpt = Annotated[Optional[str], typer.Option(
    "--labels", help="The label set, comma-separated; labels outside it are errors.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model whose tokenizer measures token lengths.")]
GraderOpt = Annotated[Optional[Path], typer.Option(
    "--grader", help="RL prompts: a grader (JSON or YAML, OpenAI's shape) or a recipe whose grpo.rewards hold graders; "
                     "each line must have the fields its templates name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a report.")]


def _source(file: Path, fmt: str | None, file_type: str | None, columns: str | None,
            labels: str | None = None) -> Source:
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"--format '{fmt}' is not one of {', '.join(FORMATS)}")
    if file_type is not None and file_type not in FILE_TYPES:
        raise DataError(f"--file-type '{file_type}' is not one of {', '.join(FILE_TYPES)}")
    if not file.exists():
        raise DataError(f"{file}: no such file")
    label_set = {label.strip() for label in labels.split(",") if label.strip()} if labels else None
    return Source(file, fmt, file_type, parse_column_map(columns), label_set)


def _validate_with_progress(source: Source, tokenizer=None, max_length: int | None = None,
                            collect: list | None = None) -> Report:
    file_type = source.file_type or detect_file_type(source.path)
    with byte_progress(f"checking {source.path.name}", progress_total(source.path, file_type),
                       unit_rows=file_type == "parquet") as advance:
        return validate(source, tokenizer=tokenizer, max_length=max_length, on_progress=advance, collect=collect)


def print_report(report: Report, show: int = 10) -> None:
    status = "[bold green]OK[/]" if report.ok else "[bold red]FAILED[/]"
    console.print(f"{status}  {report.path}  format: [bold]{report.format or 'unknown'}[/]  "
                  f"examples: {report.examples}/{report.rows}  errors: {report.errors}  warnings: {report.warnings}",
                  highlight=False)
    if report.max_length is not None and report.longest is not None:
        console.print(f"  longest example: {report.longest} tokens (--max-length {report.max_length})")
    for code in sorted(report.counts, key=lambda c: (KINDS[c][0] != "error", c)):
        severity, title = KINDS[code]
        mark = "[red]✗ error[/]" if severity == "error" else "[yellow]! warning[/]"
        console.print(f"\n{mark}  [bold]{title}[/] ({report.counts[code]})", highlight=False)
        kept = report.problems.get(code, [])
        for problem in kept[:show]:
            console.print(f"    {problem}", highlight=False, markup=False)
        if report.counts[code] > min(show, len(kept)):
            console.print(f"    ... and {report.counts[code] - min(show, len(kept))} more", highlight=False)
    if report.counts.get("too_long"):
        over = [int(p.message.split(", ")[1].split()[0]) for p in report.problems["too_long"]]
        console.print(f"    {report.counts['too_long']} example(s) over --max-length, by up to {max(over)} tokens",
                      highlight=False)


@app.command("validate")
@handle_errors
def validate_cmd(
    file: FileArg, format: FormatOpt = None, file_type: FileTypeOpt = None, columns: ColumnsOpt = None,
    labels: LabelsOpt = None, model: ModelOpt = DEFAULT_CHAT_MODEL,
    max_length: Annotated[Optional[int], typer.Option(
        "--max-length", help="Warn about examples longer than this many tokens (measured with --model).")] = None,
    show: Annotated[int, typer.Option(help="Places shown per kind of problem.")] = 10,
    grader: GraderOpt = None, as_json: JsonOpt = False,
) -> None:
    """Check every example; report each problem with its line, grouped by kind. Exit 1 on errors."""
    source = _source(file, format, file_type, columns, labels)
    graders = _graders(grader) if grader is not None else []
    tokenizer = load_tokenizer_with_progress(model) if max_length else None
    records: list = []
    report = _validate_with_progress(source, tokenizer, max_length, collect=records if graders else None)
    if graders:
        _check_grader_fields(report, graders, records, source)
    if as_json:
        print_json(report.to_dict())
    else:
        print_report(report, show)
    raise typer.Exit(0 if report.ok else 1)


def _graders(path: Path) -> list:
    """The graders of a grader file, or of a recipe's grpo.rewards; GraderError/DataError name what is wrong."""
    import yaml

    from tuneloop.evals import graders

    if not path.exists():
        raise DataError(f"--grader {path}: no such file")
    text = path.read_text()
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.safe_load(text)  # JSON is YAML too, except JSON indented with tabs: read as JSON first
        except yaml.YAMLError as e:
            raise DataError(f"--grader {path}: not JSON or YAML ({e})") from None
    if isinstance(data, dict) and "type" in data:
        return [graders.parse(data, allow_python=True)]  # only its shape is checked: nothing runs here
    grpo = data.get("grpo") if isinstance(data, dict) else None
    rewards = grpo.get("rewards") if isinstance(grpo, dict) else None
    rewards = rewards if isinstance(rewards, list) else []
    found = [graders.parse(r["grader"], allow_python=True, param=f"grpo.rewards[{i}].grader")
             for i, r in enumerate(rewards) if isinstance(r, dict) and r.get("grader")]
    if not found:
        raise DataError(f"--grader {path}: neither a grader (an object with a type) nor a recipe with graders "
                        "in grpo.rewards")
    return found


def _check_grader_fields(report: Report, graders_: list, records: list, source: Source) -> None:
    from tuneloop.data.problems import Problem
    from tuneloop.evals import graders

    place = {"jsonl": "line", "json": "item"}.get(source.file_type or detect_file_type(source.path), "row")
    if any(not hasattr(record, "item") for _, record in records):
        raise DataError(f"--grader checks RL prompt files (format prompts); {source.path.name} is {report.format}")
    for number, problem in graders.field_problems(graders_, ((n, record.item()) for n, record in records)):
        report.add(Problem("grader_field", problem, number, f"{place} {number}"))


@app.command("import")
@handle_errors
def import_cmd(
    file: FileArg, name: Annotated[Optional[str], typer.Option(help="Dataset name (default: file stem).")] = None,
    format: FormatOpt = None, file_type: FileTypeOpt = None, columns: ColumnsOpt = None, labels: LabelsOpt = None,
    model: ModelOpt = DEFAULT_CHAT_MODEL, as_json: JsonOpt = False,
) -> None:
    """Validate and store a dataset version keyed by its content hash. Nothing is stored if it has errors."""
    source = _source(file, format, file_type, columns, labels)
    records: list = []
    report = _validate_with_progress(source, collect=records)
    if not report.ok:
        print_report(report)
        fail(f"{file}: not imported, {report.errors} error(s) above; nothing was stored", 1)
    fmt = report.format
    tokenizer = load_tokenizer_with_progress(model)
    stats = compute_stats((r for _, r in records), tokenizer).to_dict()
    stats["tokenizer"] = model
    version = store_version(settings().datasets_dir, name or file.stem, fmt, file, records, stats)
    if as_json:
        print_json({"version": version.id, "new": version.created, "path": str(version.path),
                    "examples": len(records), "format": fmt, "warnings": report.warnings})
        return
    state = "stored" if version.created else "already stored (same content)"
    console.print(f"[green]✓[/] {file.name}: {len(records)} examples ({fmt}) {state} as [bold]{version.id}[/]"
                  f" ({name or file.stem}); {report.warnings} warning(s)", highlight=False)


def _records_for(target: str, fmt: str | None, file_type: str | None, columns: str | None):
    """Records of a file, or of a stored dataset version (by id or name)."""
    path = Path(target)
    if path.exists():
        return load_records(_source(path, fmt, file_type, columns))
    version = resolve_version(settings().datasets_dir, target)
    return version.meta["format"], version.records()


@app.command("stats")
@handle_errors
def stats_cmd(
    target: Annotated[str, typer.Argument(help="A data file, or an imported dataset's version id or name.")],
    format: FormatOpt = None, file_type: FileTypeOpt = None, columns: ColumnsOpt = None,
    model: ModelOpt = DEFAULT_CHAT_MODEL,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG with the length histogram and label bars.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Counts, token lengths (min/p50/p95/max), turns per conversation and label balance."""
    fmt, records = _records_for(target, format, file_type, columns)
    tokenizer = load_tokenizer_with_progress(model)
    stats = compute_stats((r for _, r in records), tokenizer)
    data = {"format": fmt, "tokenizer": model, **stats.to_dict()}
    if plot:
        plot_stats(stats, plot, title=f"{Path(target).name} ({fmt})")
        data["plot"] = str(plot)
    if as_json:
        print_json(data)
        return
    table = Table(title=f"{target} ({fmt}, {stats.examples} examples)", show_header=True)
    for col in ("", "min", "p50", "p95", "max", "mean"):
        table.add_column(col, justify="right" if col else "left")
    for label, key in (("tokens", "tokens"), ("messages", "messages_per_example"),
                       ("assistant turns", "assistant_turns")):
        d = data[key]
        if d:
            table.add_row(label, *(f"{d[k]:g}" for k in ("min", "p50", "p95", "max", "mean")))
    console.print(table)
    if stats.labels:
        labels = Table(title="labels", show_header=True)
        labels.add_column("label")
        labels.add_column("examples", justify="right")
        labels.add_column("share", justify="right")
        total = sum(stats.labels.values())
        for label, n in stats.labels.most_common():
            labels.add_row(label, str(n), f"{n / total:.1%}")
        console.print(labels)
    if plot:
        console.print(f"plot written to {plot}")


@app.command("dedup")
@handle_errors
def dedup_cmd(
    file: FileArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the kept examples (same format).")],
    report: Annotated[Optional[Path], typer.Option(help="JSON report of what was dropped and why.")] = None,
    threshold: Annotated[float, typer.Option(help="Near-duplicate similarity (Jaccard of 5-grams), 0-1.")] = 0.85,
    exact_only: Annotated[bool, typer.Option("--exact-only", help="Only drop exact (normalised) duplicates.")] = False,
    format: FormatOpt = None, file_type: FileTypeOpt = None, columns: ColumnsOpt = None,
) -> None:
    """Drop exact duplicates (after normalisation) and near-duplicates (MinHash/LSH)."""
    fmt, records = load_records(_source(file, format, file_type, columns))
    drops = find_duplicates(records, threshold=threshold, near=not exact_only)
    kept = [r for r, d in zip(records, drops) if d is None]
    dropped = [d for d in drops if d is not None]
    write_records(kept, out, fmt)
    report_path = report or out.with_name(out.stem + ".dedup-report.json")
    report_path.write_text(json.dumps({"source": str(file), "kept": len(kept), "dropped": len(dropped),
                                       "threshold": threshold, "drops": [d.to_dict() for d in dropped]}, indent=1))
    exact = sum(d.reason == "exact" for d in dropped)
    console.print(f"kept {len(kept)} of {len(records)}; dropped {exact} exact and {len(dropped) - exact} near "
                  f"duplicate(s) → {out}; report: {report_path}", highlight=False)
    for d in dropped[:10]:
        note = f" [{d.note}]" if d.note else ""
        console.print(f"    line {d.line}: {d.reason} duplicate of line {d.duplicate_of} "
                      f"(similarity {d.similarity:.2f}){note}", highlight=False, markup=False)


@app.command("split")
@handle_errors
def split_cmd(
    file: FileArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for train/validation/test files.")],
    ratios: Annotated[str, typer.Option(help="train,validation,test (or train,test) shares.")] = "0.8,0.1,0.1",
    seed: Annotated[int, typer.Option(help="Seed for the shuffle.")] = 0,
    threshold: Annotated[float, typer.Option(help="Near-duplicates above this similarity stay together.")] = 0.85,
    stratify: Annotated[bool, typer.Option(help="Keep each label's share equal across splits.")] = True,
    format: FormatOpt = None, file_type: FileTypeOpt = None, columns: ColumnsOpt = None,
) -> None:
    """Split into train/validation/test: seeded, stratified by label, no example on two sides."""
    shares = parse_ratios(ratios)
    fmt, records = load_records(_source(file, format, file_type, columns))
    splits = split_records(records, shares, seed=seed, threshold=threshold, stratify=stratify)
    suffix = file.suffix if file.suffix in {".jsonl", ".csv", ".tsv", ".parquet", ".json"} else ".jsonl"
    table = Table(title=f"{file.name} → {out}/")
    table.add_column("split")
    table.add_column("examples", justify="right")
    table.add_column("labels")
    for name, rows in splits.items():
        write_records(rows, out / f"{name}{suffix}", fmt)
        counts = compute_stats(r for _, r in rows).labels
        table.add_row(name, str(len(rows)), ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    console.print(table)


@app.command("convert")
@handle_errors
def convert_cmd(
    file: FileArg,
    to: Annotated[str, typer.Option("--to", help=f"Target format: {', '.join(FORMATS)}.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file; its suffix sets the file type.")],
    format: FormatOpt = None, file_type: FileTypeOpt = None, columns: ColumnsOpt = None,
) -> None:
    """Convert between formats and file types through the internal record model."""
    if to not in FORMATS:
        raise DataError(f"--to '{to}' is not one of {', '.join(FORMATS)}")
    fmt, records = load_records(_source(file, format, file_type, columns))
    n = write_records(records, out, to)
    console.print(f"wrote {n} examples as {to} → {out}", highlight=False)


@app.command("list")
@handle_errors
def list_cmd(as_json: JsonOpt = False) -> None:
    """Imported dataset versions, newest last."""
    imports = list_imports(settings().datasets_dir)
    if as_json:
        print_json(imports)
        return
    table = Table(title=f"datasets in {settings().datasets_dir}")
    for col in ("name", "version", "source", "imported at", "new"):
        table.add_column(col)
    for entry in imports:
        table.add_row(entry["name"], entry["version"], entry["source"], entry["at"], "yes" if entry["new"] else "no")
    console.print(table)
