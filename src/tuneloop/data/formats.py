"""Data formats: detect one from the content, parse objects into records, write records back out.

Each format parses an object into a record plus the problems found, naming the field and place,
and writes any record it can represent back to an object.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from tuneloop.data.problems import DataError, Problem
from tuneloop.data.records import (
    ROLES,
    ChatRecord,
    CompletionRecord,
    InstructionRecord,
    LabelledRecord,
    Message,
    PreferenceRecord,
    PromptRecord,
    Record,
    Span,
    SpanRecord,
    UnpairedRecord,
)

FORMATS = ("chat", "prompts", "completion", "instruction", "preference", "prompt_chosen", "unpaired", "labelled", "spans")
FORMAT_HELP = {
    "chat": 'OpenAI chat: {"messages": [{"role": ..., "content": ...}, ...]}',
    "prompts": 'RL prompts: {"messages": [..., {"role": "user", ...}], ...fields graders read}',
    "completion": '{"prompt": ..., "completion": ...}',
    "instruction": 'alpaca: {"instruction": ..., "input": ..., "output": ...}',
    "preference": 'OpenAI preference: {"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}',
    "prompt_chosen": '{"prompt": ..., "chosen": ..., "rejected": ...}',
    "unpaired": 'KTO: {"prompt": ..., "completion": ..., "label": true|false} (desirable or not)',
    "labelled": '{"text": ..., "label": ...} or {"text": ..., "labels": [...]}',
    "spans": '{"text": ..., "spans": [{"start": 0, "end": 5, "label": ...}, ...]} (character offsets)',
}
_CHAT_KEYS = {"messages", "tools", "parallel_tool_calls", "functions", "metadata", "id"}
_MESSAGE_KEYS = {"role", "content", "weight", "name", "tool_calls", "tool_call_id", "function_call"}


class ConversionError(DataError):
    """A record cannot be written in the asked-for format."""


def detect_format(obj: Any) -> str | None:
    """Name the format one object looks like, from its keys; None when none fits."""
    if not isinstance(obj, dict):
        return None
    keys = set(obj)
    if "messages" in keys:
        messages = obj["messages"]
        last = messages[-1] if isinstance(messages, list) and messages else None
        answered = isinstance(messages, list) and any(isinstance(m, dict) and m.get("role") == "assistant"
                                                      for m in messages)
        return "prompts" if isinstance(last, dict) and last.get("role") == "user" and not answered else "chat"
    if "preferred_output" in keys or "non_preferred_output" in keys:
        return "preference"
    if "chosen" in keys or "rejected" in keys:
        return "prompt_chosen"
    if "completion" in keys and isinstance(obj.get("label"), bool):
        return "unpaired"
    if "completion" in keys:
        return "completion"
    if "instruction" in keys or "output" in keys:
        return "instruction"
    if "text" in keys and "spans" in keys:
        return "spans"
    if "text" in keys and ("label" in keys or "labels" in keys):
        return "labelled"
    return None


def detect_dataset_format(objects: Iterable[Any]) -> str | None:
    """The format most of these objects look like."""
    votes = Counter(fmt for fmt in map(detect_format, objects) if fmt)
    if votes.get("prompts") and votes.get("chat"):  # RL prompts only when no conversation is answered
        return "chat"
    return votes.most_common(1)[0][0] if votes else None


class _Checker:
    """Collects the problems of one object, each with its place and field."""

    def __init__(self, number: int, where: str):
        self.number, self.where, self.problems = number, where, []

    def add(self, code: str, message: str, field: str | None = None) -> None:
        self.problems.append(Problem(code, message, self.number, self.where, field))

    def require(self, obj: dict, key: str, kind: type | tuple, type_name: str, path: str = "") -> Any:
        field = f"{path}{key}"
        if key not in obj:
            self.add("missing_field", f"missing field '{field}'", field)
            return None
        value = obj[key]
        if not isinstance(value, kind) or isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            self.add("wrong_type", f"field '{field}' must be {type_name}, got {_type_name(value)}", field)
            return None
        return value

    def unknown_keys(self, obj: dict, allowed: set[str], path: str = "") -> dict:
        extra = {k: v for k, v in obj.items() if k not in allowed}
        for key in extra:
            self.add("unknown_key", f"unknown key '{path}{key}' (kept, but not used for training)", f"{path}{key}")
        return extra


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _messages(c: _Checker, value: Any, path: str) -> list[Message] | None:
    if not isinstance(value, list):
        c.add("wrong_type", f"field '{path}' must be a list of messages, got {_type_name(value)}", path)
        return None
    if not value:
        c.add("empty_content", f"field '{path}' is an empty list", path)
        return None
    out: list[Message] = []
    for i, raw in enumerate(value):
        here = f"{path}[{i}]"
        if not isinstance(raw, dict):
            c.add("wrong_type", f"{here} must be an object with 'role' and 'content', got {_type_name(raw)}", here)
            continue
        role = c.require(raw, "role", str, "a string", f"{here}.")
        if role is not None and role not in ROLES:
            c.add("unknown_role", f"{here}.role '{role}' is not one of {', '.join(ROLES)}", f"{here}.role")
            role = None
        has_tool_calls = bool(raw.get("tool_calls") or raw.get("function_call"))
        content = raw.get("content")
        if content is None and has_tool_calls:
            content = ""
        elif "content" not in raw:
            c.add("missing_field", f"missing field '{here}.content'", f"{here}.content")
        elif not isinstance(content, str):
            c.add("wrong_type", f"field '{here}.content' must be a string, got {_type_name(content)}", f"{here}.content")
            content = None
        elif not content.strip() and not has_tool_calls:
            c.add("empty_content", f"{here} ({role or 'message'}) has empty content", f"{here}.content")
        weight = raw.get("weight")
        if weight is not None and (weight not in (0, 1) or isinstance(weight, bool)):
            c.add("wrong_type", f"{here}.weight must be 0 or 1, got {weight!r}", f"{here}.weight")
            weight = None
        for key in raw:
            if key not in _MESSAGE_KEYS:
                c.add("unknown_key", f"unknown key '{here}.{key}' in a message", f"{here}.{key}")
        if role is not None and content is not None:
            fields = {k: v for k, v in raw.items() if k not in {"role", "content", "weight"}}
            out.append(Message(role=role, content=content, weight=weight, **fields))
    return out if len(out) == len(value) else None


def _text_or_messages(c: _Checker, value: Any, field: str, role: str) -> tuple[list[Message] | None, bool]:
    """prompt/chosen/rejected may be plain strings or lists of messages."""
    if isinstance(value, str):
        if not value.strip():
            c.add("empty_content", f"field '{field}' is empty", field)
        return [Message(role=role, content=value)], True
    return _messages(c, value, field), False


def _parse_chat(c: _Checker, obj: dict) -> Record | None:
    extra = c.unknown_keys(obj, _CHAT_KEYS)
    messages = _messages(c, obj.get("messages"), "messages") if "messages" in obj else None
    if "messages" not in obj:
        c.add("missing_field", "missing field 'messages'", "messages")
    if messages is None:
        return None
    learnable = [m for m in messages if m.role == "assistant" and m.weight != 0]
    if not learnable:
        why = "every assistant message has weight 0" if any(m.role == "assistant" for m in messages) else "no assistant message"
        c.add("no_assistant", f"nothing to learn from: {why}", "messages")
        return None
    known = {k: obj[k] for k in _CHAT_KEYS - {"messages"} if k in obj}
    return ChatRecord(messages=messages, extra={**known, **extra})


def _parse_prompts(c: _Checker, obj: dict) -> Record | None:
    """Other keys are the fields graders read: kept, with no warning."""
    if "messages" not in obj:
        c.add("missing_field", "missing field 'messages'", "messages")
        return None
    messages = _messages(c, obj["messages"], "messages")
    if messages is None:
        return None
    if not messages or messages[-1].role != "user":
        c.add("wrong_type", "an RL prompt ends with the user's message (the model answers it)", "messages")
        return None
    return PromptRecord(messages=messages, extra={k: v for k, v in obj.items() if k != "messages"})


def _parse_completion(c: _Checker, obj: dict) -> Record | None:
    extra = c.unknown_keys(obj, {"prompt", "completion"})
    prompt = c.require(obj, "prompt", str, "a string")
    completion = c.require(obj, "completion", str, "a string")
    if completion is not None and not completion.strip():
        c.add("empty_content", "field 'completion' is empty: nothing to learn from", "completion")
        return None
    if prompt is None or completion is None:
        return None
    return CompletionRecord(prompt=prompt, completion=completion, extra=extra)


def _parse_instruction(c: _Checker, obj: dict) -> Record | None:
    extra = c.unknown_keys(obj, {"instruction", "input", "output", "system"})
    instruction = c.require(obj, "instruction", str, "a string")
    output = c.require(obj, "output", str, "a string")
    inp = obj.get("input", "")
    if inp is None:
        inp = ""
    if not isinstance(inp, str):
        c.add("wrong_type", f"field 'input' must be a string, got {_type_name(inp)}", "input")
        return None
    for name, value in (("instruction", instruction), ("output", output)):
        if value is not None and not value.strip():
            c.add("empty_content", f"field '{name}' is empty", name)
            return None
    if instruction is None or output is None:
        return None
    if "system" in obj:
        extra["system"] = obj["system"]
    return InstructionRecord(instruction=instruction, input=inp, output=output, extra=extra)


def _check_pair(c: _Checker, chosen: list[Message] | None, rejected: list[Message] | None,
                names: tuple[str, str]) -> bool:
    if chosen is None or rejected is None:
        return False
    if [(m.role, m.content.strip()) for m in chosen] == [(m.role, m.content.strip()) for m in rejected]:
        c.add("identical_preference", f"'{names[0]}' and '{names[1]}' are the same answer: nothing to prefer", names[0])
        return False
    return True


def _parse_preference(c: _Checker, obj: dict) -> Record | None:
    extra = c.unknown_keys(obj, {"input", "preferred_output", "non_preferred_output"})
    inp = c.require(obj, "input", dict, 'an object like {"messages": [...]}')
    prompt = None
    if inp is not None:
        if "messages" not in inp:
            c.add("missing_field", "missing field 'input.messages'", "input.messages")
        else:
            prompt = _messages(c, inp["messages"], "input.messages")
    chosen = rejected = None
    if "preferred_output" not in obj:
        c.add("missing_field", "missing field 'preferred_output'", "preferred_output")
    else:
        chosen = _messages(c, obj["preferred_output"], "preferred_output")
    if "non_preferred_output" not in obj:
        c.add("missing_field", "missing field 'non_preferred_output'", "non_preferred_output")
    else:
        rejected = _messages(c, obj["non_preferred_output"], "non_preferred_output")
    if not _check_pair(c, chosen, rejected, ("preferred_output", "non_preferred_output")) or prompt is None:
        return None
    input_extra = {k: v for k, v in inp.items() if k != "messages"}
    return PreferenceRecord(messages=prompt, chosen=chosen, rejected=rejected,
                            extra={**extra, **({"input": input_extra} if input_extra else {})})


def _parse_prompt_chosen(c: _Checker, obj: dict) -> Record | None:
    extra = c.unknown_keys(obj, {"prompt", "chosen", "rejected"})
    parsed: dict[str, tuple[list[Message] | None, bool]] = {}
    for key, role in (("prompt", "user"), ("chosen", "assistant"), ("rejected", "assistant")):
        if key not in obj:
            c.add("missing_field", f"missing field '{key}'", key)
            parsed[key] = (None, False)
        else:
            parsed[key] = _text_or_messages(c, obj[key], key, role)
    if not _check_pair(c, parsed["chosen"][0], parsed["rejected"][0], ("chosen", "rejected")):
        return None
    if parsed["prompt"][0] is None:
        return None
    return PreferenceRecord(messages=parsed["prompt"][0], chosen=parsed["chosen"][0], rejected=parsed["rejected"][0],
                            text_form=parsed["prompt"][1] and parsed["chosen"][1], extra=extra)


def _parse_unpaired(c: _Checker, obj: dict) -> Record | None:
    extra = c.unknown_keys(obj, {"prompt", "completion", "label"})
    parsed: dict[str, tuple[list[Message] | None, bool]] = {}
    for key, role in (("prompt", "user"), ("completion", "assistant")):
        if key not in obj:
            c.add("missing_field", f"missing field '{key}'", key)
            parsed[key] = (None, False)
        else:
            parsed[key] = _text_or_messages(c, obj[key], key, role)
    label = obj.get("label")
    if "label" not in obj:
        c.add("missing_field", "missing field 'label' (true for a desirable answer, false for an undesirable one)",
              "label")
    elif not isinstance(label, bool):
        c.add("bad_label", f"field 'label' must be true or false, got {json.dumps(label)[:40]}", "label")
    completion = parsed["completion"][0]
    if completion is not None and not any(m.role == "assistant" for m in completion):
        c.add("no_assistant", "field 'completion' has no assistant message", "completion")
        return None
    if parsed["prompt"][0] is None or completion is None or not isinstance(label, bool):
        return None
    return UnpairedRecord(messages=parsed["prompt"][0], completion=completion, label=label,
                          text_form=parsed["prompt"][1] and parsed["completion"][1], extra=extra)


def _parse_labelled(c: _Checker, obj: dict, label_set: set[str] | None) -> Record | None:
    extra = c.unknown_keys(obj, {"text", "label", "labels"})
    text = c.require(obj, "text", str, "a string")
    if text is not None and not text.strip():
        c.add("empty_content", "field 'text' is empty", "text")
        return None
    key = "labels" if "labels" in obj else "label"
    if key not in obj:
        c.add("missing_field", "missing field 'label' (or 'labels' for multi-label)", "label")
        return None
    value = obj[key]
    multi = isinstance(value, list)
    values = value if multi else [value]
    labels: list[str] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            c.add("wrong_type", f"field '{key}' must be a string{' or a list of strings' if key == 'labels' else ''}, "
                  f"got {_type_name(v)}", key)
            return None
        labels.append(str(v))
    if not labels or any(not label.strip() for label in labels):
        c.add("empty_content", f"field '{key}' is empty", key)
        return None
    if label_set is not None:
        unknown = [label for label in labels if label not in label_set]
        if unknown:
            c.add("unknown_label", f"label '{unknown[0]}' is not in the label set ({', '.join(sorted(label_set))})", key)
            return None
    if text is None:
        return None
    return LabelledRecord(text=text, labels=labels, multi_label=multi, extra=extra)


def _parse_spans(c: _Checker, obj: dict, label_set: set[str] | None) -> Record | None:
    extra = c.unknown_keys(obj, {"text", "spans"})
    text = c.require(obj, "text", str, "a string")
    raw = c.require(obj, "spans", list, "a list of spans")
    if text is None or raw is None:
        return None
    spans: list[Span] = []
    for i, item in enumerate(raw):
        here = f"spans[{i}]"
        if not isinstance(item, dict):
            c.add("wrong_type", f"{here} must be an object with 'start', 'end' and 'label', got {_type_name(item)}", here)
            continue
        start = c.require(item, "start", int, "a whole number", f"{here}.")
        end = c.require(item, "end", int, "a whole number", f"{here}.")
        label = c.require(item, "label", str, "a string", f"{here}.")
        for key in item:
            if key not in {"start", "end", "label"}:
                c.add("unknown_key", f"unknown key '{here}.{key}' in a span", f"{here}.{key}")
        if start is None or end is None or label is None:
            continue
        if not 0 <= start < end <= len(text):
            c.add("bad_span", f"{here} runs from {start} to {end}, outside the text (0 to {len(text)} characters)"
                  if start < end else f"{here} is empty or reversed: start {start}, end {end}", here)
            continue
        if not label.strip():
            c.add("empty_content", f"field '{here}.label' is empty", f"{here}.label")
            continue
        if label_set is not None and label not in label_set:
            c.add("unknown_label", f"{here}.label '{label}' is not in the label set ({', '.join(sorted(label_set))})",
                  f"{here}.label")
            continue
        if text[start].isspace() or text[end - 1].isspace():
            c.add("span_whitespace", f"{here} ({text[start:end]!r}) starts or ends with whitespace", here)
        spans.append(Span(start=start, end=end, label=label))
    if len(spans) != len(raw):
        return None
    order = sorted(range(len(spans)), key=lambda i: (spans[i].start, spans[i].end))
    for a, b in zip(order, order[1:]):
        if spans[b].start < spans[a].end:
            c.add("overlapping_spans", f"spans[{a}] ({spans[a].start}-{spans[a].end}) and spans[{b}] "
                  f"({spans[b].start}-{spans[b].end}) overlap; a text's spans may not overlap (BIO tags cannot "
                  "hold them)", f"spans[{b}]")
            return None
    if not text.strip():
        c.add("empty_content", "field 'text' is empty", "text")
        return None
    return SpanRecord(text=text, spans=[spans[i] for i in order], extra=extra)


def parse_object(obj: Any, fmt: str, number: int, where: str,
                 label_set: set[str] | None = None) -> tuple[Record | None, list[Problem]]:
    """Parse one object as `fmt`. Returns the record (None when it has errors) and every problem found."""
    c = _Checker(number, where)
    if not isinstance(obj, dict):
        c.add("not_object", f"expected a JSON object ({FORMAT_HELP[fmt]}), got {_type_name(obj)}")
        return None, c.problems
    parser = {"chat": _parse_chat, "prompts": _parse_prompts, "completion": _parse_completion, "instruction": _parse_instruction,
              "preference": _parse_preference, "prompt_chosen": _parse_prompt_chosen,
              "unpaired": _parse_unpaired}.get(fmt)
    if fmt == "labelled":
        record = _parse_labelled(c, obj, label_set)
    elif fmt == "spans":
        record = _parse_spans(c, obj, label_set)
    else:
        record = parser(c, obj)
    if any(p.severity == "error" for p in c.problems):
        record = None
    return record, c.problems


# ---------------------------------------------------------------- writing records out

def _dump_messages(messages: list[Message]) -> list[dict]:
    return [m.model_dump(exclude_none=True) for m in messages]


def _single_turn(record: Record, fmt: str) -> tuple[str, str]:
    """(prompt, answer) of a record with one user message and one assistant answer."""
    if isinstance(record, CompletionRecord):
        return record.prompt, record.completion
    if isinstance(record, InstructionRecord):
        return record.to_messages()[0].content, record.output
    messages = record.to_messages()
    if len(messages) != 2 or messages[0].role != "user" or messages[1].role != "assistant":
        raise ConversionError(f"a {record.kind} record with {len(messages)} messages cannot be written as '{fmt}', "
                              "which holds one prompt and one answer")
    return messages[0].content, messages[1].content


def dump_record(record: Record, fmt: str) -> dict[str, Any]:
    """Write `record` as an object of format `fmt`; ConversionError when that format cannot hold it."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if fmt == "prompts":
        if not isinstance(record, PromptRecord):
            raise ConversionError(f"a {record.kind} record is not an RL prompt; it cannot be written as 'prompts'")
        return {"messages": _dump_messages(record.messages), **record.extra}
    if fmt == "chat":
        extra = record.extra if isinstance(record, (ChatRecord, PromptRecord)) else {}
        return {"messages": _dump_messages(record.to_messages()), **extra}
    if fmt in {"preference", "prompt_chosen"}:
        if not isinstance(record, PreferenceRecord):
            raise ConversionError(f"a {record.kind} record has no preferred/rejected pair; it cannot be written as '{fmt}'")
        if fmt == "preference":
            extra = {k: v for k, v in record.extra.items() if k != "input"}
            return {"input": {"messages": _dump_messages(record.messages), **record.extra.get("input", {})},
                    "preferred_output": _dump_messages(record.chosen),
                    "non_preferred_output": _dump_messages(record.rejected), **extra}
        if record.text_form and len(record.messages) == 1 and len(record.chosen) == len(record.rejected) == 1:
            return {"prompt": record.messages[0].content, "chosen": record.chosen[0].content,
                    "rejected": record.rejected[0].content, **record.extra}
        return {"prompt": _dump_messages(record.messages), "chosen": _dump_messages(record.chosen),
                "rejected": _dump_messages(record.rejected), **record.extra}
    if fmt == "unpaired":
        if not isinstance(record, UnpairedRecord):
            raise ConversionError(f"a {record.kind} record has no desirable/undesirable label; it cannot be written "
                                  "as 'unpaired'")
        if record.text_form and len(record.messages) == 1 and len(record.completion) == 1:
            return {"prompt": record.messages[0].content, "completion": record.completion[0].content,
                    "label": record.label, **record.extra}
        return {"prompt": _dump_messages(record.messages), "completion": _dump_messages(record.completion),
                "label": record.label, **record.extra}
    if fmt == "labelled":
        if not isinstance(record, LabelledRecord):
            raise ConversionError(f"a {record.kind} record has no label; it cannot be written as 'labelled'")
        label = {"labels": record.labels} if record.multi_label else {"label": record.labels[0]}
        return {"text": record.text, **label, **record.extra}
    if fmt == "spans":
        if not isinstance(record, SpanRecord):
            raise ConversionError(f"a {record.kind} record has no spans; it cannot be written as 'spans'")
        return {"text": record.text, "spans": [s.model_dump() for s in record.spans], **record.extra}
    if fmt == "instruction" and isinstance(record, InstructionRecord):
        out = {"instruction": record.instruction, "input": record.input, "output": record.output}
        return {**out, **record.extra}
    prompt, answer = _single_turn(record, fmt)
    if fmt == "completion":
        extra = record.extra if isinstance(record, CompletionRecord) else {}
        return {"prompt": prompt, "completion": answer, **extra}
    return {"instruction": prompt, "input": "", "output": answer}
