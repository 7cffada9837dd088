"""What an eval run reads, checked when the run is created (services/evals.py) and read again by its job
(services/eval_runs.py): the `{item, sample}` rows of its source (inline or an uploaded file), the items against the
eval's schema (in a time- and memory-limited child), the answers given with them, and a completions source's model,
input messages (a template over the item, or an item field) and sampling params. Each problem is a 400 naming its
field."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.evals import graders, sandbox
from tuneloop.evals.templates import GraderError, check_template, template_item_fields, template_names
from tuneloop.services import ServiceError
from tuneloop.services import jobs as job_service
from tuneloop.services.files import require_file
from tuneloop.services.models import api_model_ref
from tuneloop.store.blobs import content_path

MAX_ITEMS = 10_000
MAX_MESSAGES = 64
SCHEMA_SECONDS = 20.0
"""Checking a run's items against the schema runs in a child with this wall-clock limit (and 1 GiB of memory): a
schema's `pattern` or nested `anyOf` can take exponential time, and no request may hang the server."""
DEFAULT_MAX_TOKENS = 256


def item_properties(item_schema: dict[str, Any]) -> set[str] | None:
    """The item fields the schema names, or None when it leaves them open (no `properties`)."""
    properties = item_schema.get("properties")
    return set(properties) if isinstance(properties, dict) else None


def check_fields(templates: list[tuple[str, str]], properties: set[str] | None) -> None:
    """Each `{{ item.x }}` names a field the item schema defines (when it lists its properties)."""
    if properties is None:
        return
    for source, where in templates:
        missing = sorted(template_item_fields(source) - properties)
        if missing:
            raise ServiceError(400, f"{where}: names item.{missing[0]}, which the item_schema does not define "
                                    f"(its properties: {', '.join(sorted(properties)) or 'none'})", where,
                               "invalid_template")


def _file_rows(session: Session, settings: Settings, file_id: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(file_id, str) or not file_id:
        raise ServiceError(400, f"{where}.id: the id of an uploaded file", f"{where}.id")
    file = require_file(session, file_id, f"{where}.id")
    rows = []
    with content_path(settings, file).open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                raise ServiceError(400, f"{where}.id: file '{file_id}' line {number} is not JSON", f"{where}.id",
                                   "invalid_file") from None
            if not _row_fits(row):
                raise ServiceError(400, f"{where}.id: file '{file_id}' line {number}: each line is an object "
                                        '{"item": {...}} with an optional "sample" object', f"{where}.id",
                                   "invalid_file")
            rows.append(row)
            if len(rows) > MAX_ITEMS:
                break
    return rows


def _row_fits(row: Any) -> bool:
    """{item: {...}, sample?: {..., usage?: {...}}}: nothing else."""
    if not isinstance(row, dict) or not isinstance(row.get("item"), dict) or set(row) - {"item", "sample"}:
        return False
    sample = row.get("sample", {})
    return isinstance(sample, dict) and isinstance(sample.get("usage", {}), dict)


def source_rows(session: Session, settings: Settings, source: Any, where: str) -> list[dict[str, Any]]:
    """The `{item, sample?}` rows of a run's source: given inline (`file_content`) or in an uploaded file."""
    if not isinstance(source, dict):
        raise ServiceError(400, f"{where}: a source {{type: file_content, content}} or {{type: file_id, id}}", where)
    kind = source.get("type")
    if kind == "file_id":
        rows = _file_rows(session, settings, source.get("id"), where)
        param = f"{where}.id"
    elif kind == "file_content":
        rows = source.get("content")
        param = f"{where}.content"
        if not isinstance(rows, list):
            raise ServiceError(400, f"{param}: a list of {{item, sample}} objects", param)
        for i, row in enumerate(rows):
            if not _row_fits(row):
                raise ServiceError(400, f"{param}[{i}]: each row is {{\"item\": {{...}}}} with an optional \"sample\" "
                                        "object (its usage, if any, an object too)", f"{param}[{i}]")
    elif kind in ("stored_completions", "responses"):
        raise ServiceError(400, f"{where}.type: '{kind}' sources read OpenAI's stored logs; give the items as "
                                "file_content or file_id", f"{where}.type")
    else:
        raise ServiceError(400, f"{where}.type: must be file_content or file_id, got {job_service.shown_value(kind)}",
                           f"{where}.type")
    if not rows:
        raise ServiceError(400, f"{param}: no items to evaluate", param)
    if len(rows) > MAX_ITEMS:
        raise ServiceError(400, f"{param}: more than {MAX_ITEMS} items; split them over several runs", param)
    return rows


_VALIDATE = r"""
import json
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
data = json.loads(sys.stdin.read())
try:
    validator = Draft202012Validator(data["schema"])
    for index, item in enumerate(data["items"]):
        error = best_match(validator.iter_errors(item))
        if error is not None:
            print(json.dumps({"index": index, "path": list(error.absolute_path), "message": error.message[:300]}))
            break
    else:
        print(json.dumps({"index": None}))
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {str(e)[:300]}"}))
"""


def check_items(schema: dict[str, Any], items: list[dict[str, Any]], param: str) -> None:
    """Every item against the eval's schema, in a child process with a time and memory limit; a 400 naming the first
    item and field that do not match."""
    try:
        found = sandbox.run(_VALIDATE, {"schema": schema, "items": items}, SCHEMA_SECONDS, 1024)
    except sandbox.Failed as e:
        raise ServiceError(400, f"{param}: checking the items against the eval's item_schema did not finish "
                                f"({e.kind}); simplify the schema's patterns or nesting", param) from None
    if found.get("error"):
        raise ServiceError(400, f"{param}: the eval's item_schema cannot check items: {found['error']}", param)
    if found.get("index") is not None:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in found["path"])
        where = f"{param}[{found['index']}].item{path}"
        raise ServiceError(400, f"{where}: does not match the eval's item_schema: {found['message']}", where,
                           "invalid_item")


def given_output(sample: dict[str, Any]) -> str | None:
    """The answer text of a sample given with a jsonl item: `output_text`, or the first choice's message."""
    if isinstance(sample.get("output_text"), str):
        return sample["output_text"]
    try:
        content = sample["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def reads_sample(grader: Any) -> bool:
    if isinstance(grader, graders.Python):
        return True
    return any("sample" in template_names(source) for source, _ in graders.templates(grader))


def message_text(message: Any, where: str) -> tuple[str, str]:
    """(role, content template) of one input message: text content only."""
    if not isinstance(message, dict):
        raise ServiceError(400, f"{where}: a message {{role, content}}", where)
    unknown = sorted(set(message) - {"role", "content", "type"})
    if unknown:
        raise ServiceError(400, f"{where}.{unknown[0]}: not a field of a message (role, content, type)",
                           f"{where}.{unknown[0]}")
    role = message.get("role")
    if role not in ("system", "developer", "user", "assistant"):
        raise ServiceError(400, f"{where}.role: one of system, developer, user, assistant; got "
                                f"{job_service.shown_value(role)}", f"{where}.role")
    content = message.get("content")
    parts = content if isinstance(content, list) else [content]
    texts = []
    for j, part in enumerate(parts):
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") in ("input_text", "output_text") and \
                isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            at = f"{where}.content" + (f"[{j}]" if isinstance(content, list) else "")
            kind = part.get("type") if isinstance(part, dict) else None
            raise ServiceError(400, f"{at}: text only (a string, or {{type: input_text, text}})"
                                    + (f"; tuneloop's models read no {kind}" if kind else ""), at)
    return ("system" if role == "developer" else role), "".join(texts)


def reference_messages(item: dict[str, Any], reference: str) -> Any:
    """What `item.a.b` names in an item (KeyError when it lacks it)."""
    value: Any = item
    for part in reference.split(".")[1:]:
        if not isinstance(value, dict) or part not in value:
            raise KeyError(part)
        value = value[part]
    return value


def _check_messages(messages: Any, where: str) -> None:
    if not isinstance(messages, list) or not messages or len(messages) > MAX_MESSAGES:
        raise ServiceError(400, f"{where}: a list of 1 to {MAX_MESSAGES} messages {{role, content}}", where)
    for j, message in enumerate(messages):
        message_text(message, f"{where}[{j}]")


def check_completions(session: Session, settings: Settings, source: dict[str, Any], rows: list[dict[str, Any]],
                       properties: set[str] | None, content_param: str) -> dict[str, Any]:
    """The completions data source with its defaults: a model tuneloop serves, input messages that render for
    every item, and sampling params it can honour. Returns what the job needs (`ref`, the model to load)."""
    where = "data_source"
    unknown = sorted(set(source) - {"type", "model", "input_messages", "sampling_params", "source"})
    if unknown:
        raise ServiceError(400, f"{where}.{unknown[0]}: not a field of a completions data source (type, model, "
                                "input_messages, sampling_params, source)", f"{where}.{unknown[0]}")
    model = source.get("model")
    if not isinstance(model, str) or not model:
        raise ServiceError(400, f"{where}.model: the model that answers: a base, a fine-tuned model, a checkpoint or "
                                "a run (GET /v1/models)", f"{where}.model")
    try:
        ref = api_model_ref(session, settings, model)
    except ServiceError as e:
        raise ServiceError(400, f"{where}.model: {e.message}", f"{where}.model", "model_not_found") from None
    spec = source.get("input_messages")
    at = f"{where}.input_messages"
    if not isinstance(spec, dict) or spec.get("type") not in ("template", "item_reference"):
        raise ServiceError(400, f"{at}: {{type: template, template: [messages]}} or {{type: item_reference, "
                                "item_reference: 'item.<field>'}}", f"{at}.type" if isinstance(spec, dict) else at)
    if spec["type"] == "template":
        if set(spec) - {"type", "template"}:
            raise ServiceError(400, f"{at}: a template takes type and template", at)
        template = spec.get("template")
        _check_messages(template, f"{at}.template")
        sources = []
        for j, message in enumerate(template):
            _, text = message_text(message, f"{at}.template[{j}]")
            try:
                check_template(text, f"{at}.template[{j}].content")
            except GraderError as e:
                raise ServiceError(400, e.message, e.param, "invalid_template") from None
            if "sample" in template_names(text):
                raise ServiceError(400, f"{at}.template[{j}].content: the model's input can use item.<field>; "
                                        "sample is the answer it gives", f"{at}.template[{j}].content",
                                   "invalid_template")
            sources.append((text, f"{at}.template[{j}].content"))
        check_fields(sources, properties)
        needed = {f for text, _ in sources for f in template_item_fields(text)}
        for i, row in enumerate(rows):
            missing = sorted(needed - set(row["item"]))
            if missing:
                raise ServiceError(400, f"{content_param}[{i}].item: lacks {missing[0]}, which the input_messages "
                                        "template names", f"{content_param}[{i}].item", "invalid_item")
    else:
        reference = spec.get("item_reference")
        if set(spec) - {"type", "item_reference"} or not isinstance(reference, str) or \
                not reference.startswith("item.") or len(reference) < 6:
            raise ServiceError(400, f"{at}.item_reference: 'item.<field>', the item field that holds each item's "
                                    "messages", f"{at}.item_reference")
        for i, row in enumerate(rows):
            try:
                messages = reference_messages(row["item"], reference)
            except KeyError:
                raise ServiceError(400, f"{content_param}[{i}].item: lacks {reference.removeprefix('item.')}, which "
                                        f"{at}.item_reference names", f"{content_param}[{i}].item",
                                   "invalid_item") from None
            _check_messages(messages, f"{content_param}[{i}].{reference}")
    sampling = source.get("sampling_params") or {}
    at = f"{where}.sampling_params"
    if not isinstance(sampling, dict):
        raise ServiceError(400, f"{at}: an object", at)
    unknown = sorted(set(sampling) - {"max_completion_tokens", "temperature", "top_p", "seed", "reasoning_effort"})
    if unknown:
        raise ServiceError(400, f"{at}.{unknown[0]}: not supported (tuneloop samples plain text with "
                                "max_completion_tokens, temperature, top_p and seed; reasoning_effort is accepted "
                                "and has no effect)", f"{at}.{unknown[0]}")
    checks = {"max_completion_tokens": (int, 1, 4096, DEFAULT_MAX_TOKENS), "temperature": (float, 0, 2, 0.0),
              "top_p": (float, 0, 1, 1.0), "seed": (int, 0, job_service.SEED_MAX, 42)}
    params = {}
    for name, (kind, low, high, default) in checks.items():
        value = sampling.get(name)
        if value is None:
            params[name] = default
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            (kind is float or isinstance(value, int))
        if not number or not (low <= value <= high) or (name == "top_p" and value == 0):
            raise ServiceError(400, f"{at}.{name}: {'an integer' if kind is int else 'a number'} from {low} to "
                                    f"{high}{' (above 0)' if name == 'top_p' else ''}, got {job_service.shown_value(value)}",
                               f"{at}.{name}")
        params[name] = value
    return {"ref": ref, "model": model, "sampling_params": params}
